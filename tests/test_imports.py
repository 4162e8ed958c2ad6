"""What the core loads: the pilot path needs neither CouchDB-Python nor
PyYAML, and picas.errors works without CouchDB-Python. Each check runs in a
fresh interpreter, where sys.modules shows what an import really loaded."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import couchdb.http
import pytest

from picas import errors


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_pilot_path_loads_neither_couchdb_python_nor_pyyaml():
    loaded = run("""
        import sys
        import picas, picas.cli, picas.cli.pilot_cmd, picas.pilot, picas.claim, picas.errors
        from picas.cli import main
        sys.argv = ["picas", "pilot", "--help"]
        try:
            main()
        except SystemExit:
            pass
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("couchdb", "yaml")
                     or m in ("picas._couchdb", "picas.clients", "picas.documents")))
        """)
    assert loaded.splitlines()[-1] == "[]"


def test_errors_work_where_couchdb_python_is_missing():
    out = run("""
        import sys
        sys.modules["couchdb"] = None  # as if not installed: importing it fails
        from picas import errors
        import picas.pilot
        try:
            raise errors.DatabaseExists("there already")
        except errors.Conflict as exc:
            print(type(exc).__name__, [c.__module__ for c in type(exc).__mro__])
        """)
    assert out.startswith("DatabaseExists") and "couchdb.http" not in out


@pytest.mark.parametrize(("ours", "theirs"), [
    (errors.Conflict, couchdb.http.ResourceConflict),
    (errors.DatabaseExists, couchdb.http.PreconditionFailed),
    (errors.DocumentNotFound, couchdb.http.ResourceNotFound),
    (errors.AccountLocked, couchdb.http.Unauthorized),
    (errors.ServerError, couchdb.http.ServerError),
])
def test_upstreams_except_clauses_catch_ours_once_the_upstream_api_is_loaded(ours, theirs):
    import picas.clients  # noqa: F401 -- what an upstream script imports
    caught = None
    try:  # a real except clause: it ignores __subclasscheck__, unlike isinstance
        raise ours("from picas")
    except theirs as exc:
        caught = exc
    assert isinstance(caught, ours) and isinstance(caught, errors.PicasError)
