"""Every public name of upstream PiCaS 1.1 imports from picas, with its meaning."""
from __future__ import annotations

import importlib
import logging
import subprocess
import sys

import pytest

from picas import executers, srm, srmclient
from picas.couchdblogger import CouchDBLogger
from picas.generators import TokenGenerator

#: Upstream 1.1's modules and their public names.
UPSTREAM = {
    "picas": ["VERSION", "CouchDB", "Document", "EndlessViewIterator", "Job",
              "PrioritizedViewIterator", "RunActor", "Task", "TaskViewIterator", "User",
              "ViewIterator"],
    "picas.actors": ["AbstractRunActor", "RunActor"],
    "picas.clients": ["CouchDB"],
    "picas.couchdblogger": ["CouchDBLogger", "default_log_formatter"],
    "picas.crypto": ["CRYPTO_KEY_PATH", "generate_and_save_key", "read_key",
                     "encrypt_password", "decrypt_password"],
    "picas.documents": ["Document", "User", "Task", "Job"],
    "picas.executers": ["execute", "execute_old"],
    "picas.generators": ["TokenGenerator"],
    "picas.iterators": ["ViewIterator", "TaskViewIterator", "PrioritizedViewIterator",
                        "EndlessViewIterator"],
    "picas.jobid": ["add_job_id", "remove_job_id"],
    "picas.metadata": ["project", "package", "description", "project_no_spaces", "version",
                       "authors", "authors_string", "emails", "license", "copyright", "url"],
    "picas.modifiers": ["TokenModifier", "BasicTokenModifier", "NestedTokenModifier"],
    "picas.picas_config": ["PICAS_CONFIG_SCHEMA", "PicasConfigSchemaError", "PicasConfig",
                           "decrypt_password"],
    "picas.picaslogger": ["picaslogger", "formatter"],
    "picas.srm": ["download", "upload", "download_many", "upload_many", "Downloader",
                  "SRMClient"],
    "picas.srmclient": ["download", "Downloader"],
    "picas.util": ["time_elapsed", "merge_dicts", "seconds", "Timer"],
    "picas.apps.picas_cli": ["parse_args", "initialize_picas_configuration",
                             "change_picas_password", "dump_picas_config", "main"],
}


@pytest.mark.parametrize("module", sorted(UPSTREAM))
def test_upstream_names_import(module):
    loaded = importlib.import_module(module)
    missing = [name for name in UPSTREAM[module] if not hasattr(loaded, name)]
    assert missing == []


def test_importing_the_upstream_modules_prints_nothing_and_configures_no_logging():
    check = ("import logging, sys\n"
             "root = logging.getLogger()\n"
             "before = (list(root.handlers), root.level)\n"
             f"for name in {sorted(UPSTREAM)!r}: __import__(name)\n"
             "from picas.picaslogger import picaslogger\n"
             "assert picaslogger.name == 'PiCaS' and picaslogger.handlers == []\n"
             "assert (list(root.handlers), root.level) == before\n"
             "assert 'cryptography' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")


def test_picaslogger_messages_show_once_the_script_configures_logging():
    script = ("import logging; logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
              "from picas.picaslogger import picaslogger\n"
              "picaslogger.info('hello from PiCaS')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stderr == "hello from PiCaS\n"


def test_token_generator_gives_a_fresh_todo_token_each_time():
    first = TokenGenerator.get_empty_token()
    assert first == {"type": "token", "lock": 0, "done": 0, "hostname": "", "scrub_count": 0}
    first["lock"] = 1
    assert TokenGenerator().get_empty_token()["lock"] == 0


def test_metadata_version_is_the_packages():
    import picas
    import picas.metadata
    assert picas.metadata.version == picas.__version__ == picas.VERSION


def test_couchdb_logger_writes_each_record_as_a_log_document(couch, db):
    scheme, rest = couch.url.split("://", 1)
    handler = CouchDBLogger(f"{scheme}://{couch.username}:{couch.password}@{rest}", db.name)
    # On the root logger, at DEBUG: urllib3 logs while each record is written.
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        logging.getLogger("picas.test").warning("one %s", "record")
        logging.getLogger("picas.test").warning("one %s", "record")  # same second: two docs
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    logs = [row["doc"] for row in db.all_docs(include_docs=True)["rows"]
            if row["doc"].get("type") == "log"]
    assert len(logs) == 2
    for doc in logs:
        assert doc["msg"] == "one record" and doc["lvl"] == logging.WARNING
        assert doc["host"] and doc["func"] and doc["trance_nr"] == handler.trace_nr
        assert doc["_id"].startswith(f"{doc['host']}:{int(doc['created'])}:")


def test_couchdb_logger_connects_on_the_first_record_and_reports_failures(capsys):
    handler = CouchDBLogger("http://127.0.0.1:1", "nowhere")  # nothing listens there
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "lost", None, None)
    handler.emit(record)
    assert "cannot reach CouchDB" in capsys.readouterr().err


def test_srm_says_which_tool_is_missing(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    client = srm.SRMClient(logging.getLogger("SRM"))
    for call in (lambda: client.download("/pnfs/a"), lambda: client.remote_exists("/pnfs/a"),
                 lambda: client.upload(__file__, "/pnfs/dir"), lambda: client.remove("/pnfs/a")):
        with pytest.raises(EnvironmentError, match=r"srm\w+ is not installed .*dCache's SRM tools"):
            call()
    with pytest.raises(EnvironmentError, match="download failed of: /pnfs/a, /pnfs/b"):
        srmclient.download({"a": "/pnfs/a", "b": "/pnfs/b"}, threads=2)
    with pytest.raises(NotImplementedError):
        srm.upload_many(["x"])


def test_srm_client_runs_the_tools_it_finds(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    for tool in ("srmls", "srmcp", "srmrm"):
        script = tmp_path / tool
        script.write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {calls}\necho /pnfs/dir/a.txt\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    client = srm.SRMClient(logging.getLogger("SRM"), host="srm://example.org/")
    assert client.remote_exists("/pnfs/dir/a.txt")
    assert client.download("/pnfs/dir/a.txt", str(tmp_path)) == str(tmp_path / "a.txt")
    assert client.remove("/pnfs/dir/a.txt") is True
    srm.download_many(["/pnfs/dir/a.txt", "/pnfs/dir/b.txt"], poolsize=2)
    lines = calls.read_text().splitlines()
    assert lines[0] == "srmls srm://example.org//pnfs/dir/a.txt"
    assert lines[1] == (f"srmcp -2 -server_mode=passive srm://example.org//pnfs/dir/a.txt "
                        f"file:///{tmp_path}/a.txt")
    assert lines[2] == "srmrm srm://example.org//pnfs/dir/a.txt"
    assert len(lines) == 5


def test_execute_old_gives_the_exit_code():
    assert executers.execute_old("exit 3") == 3
    assert executers.execute_old("true") == 0
