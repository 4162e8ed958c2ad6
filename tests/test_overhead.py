"""What every pilot job pays for: its imports at start, and every request."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from picas.database import Database
from picas.transport import Transport


def test_a_pilot_loads_neither_other_commands_nor_what_it_does_not_use(tmp_path):
    code = f"""if True:
        import json, sys
        import click
        from picas import config
        from picas.cli import cli
        command = cli.get_command(click.Context(cli), "pilot")
        config.load({str(tmp_path / "none.yml")!r}, url="http://127.0.0.1:1", database="db")
        unused = ("pkg_resources", "yaml", "couchdb", "picas.actors", "picas.clients")
        loaded = sorted(m for m in sys.modules if m.startswith("picas.cli.") or m in unused)
        import importlib.metadata
        from picas import _couchdb  # what the upstream-style API loads
        import couchdb
        print(json.dumps({{"name": command.name, "loaded": loaded,
                          "couchdb": couchdb.__version__,
                          "installed": importlib.metadata.version("CouchDB")}}))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["name"] == "pilot"
    assert seen["loaded"] == ["picas.cli.common", "picas.cli.pilot_cmd"]
    # CouchDB-Python, loaded by the upstream-style API, still knows its
    # version without pkg_resources
    assert seen["couchdb"] == seen["installed"] != "?"


def test_pkg_resources_can_still_be_imported_after_picas():
    code = "import picas, pkg_resources; print(pkg_resources.__name__)"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == "pkg_resources", out.stderr


def test_answers_are_asked_for_uncompressed():
    # requests asks for gzip by default, and pouchdb-server then compresses
    # every answer over 1 KB: a 400-row changes window took 16 ms instead
    # of 12.5. CouchDB does not compress at all, so asking costs nothing there.
    seen: dict[str, str] = {}

    class Recorder(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.update(self.headers)
            body = b'{"db_name": "tokens", "doc_count": 0}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        info = Database(Transport(f"http://127.0.0.1:{server.server_port}"), "tokens").info()
    finally:
        server.shutdown()
        server.server_close()
    assert info["db_name"] == "tokens"
    assert seen["Accept-Encoding"] == "identity"
