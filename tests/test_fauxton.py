"""Fauxton, the server's web UI, shows the Monitor views with their tokens.

A real headless Chromium (Debian's package) opens Fauxton's page for
``Monitor/todo``. Fauxton keeps its login in a cookie session, and a
command line cannot hand a browser a cookie, so the browser first loads a
small page from the server itself that logs in a throwaway member of the
test database (``POST /_session``) and then goes to the view. No password
reaches Chromium's argv. The screenshot is kept in tests/artifacts/.
"""
from __future__ import annotations

import html
import os
import re
import shutil
import signal
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from conftest import ARTIFACTS, unique_name
from support import missing

from picas.cli import cli
from picas.database import Database

pytestmark = pytest.mark.chromium

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--window-size=1400,900",
         "--virtual-time-budget=20000"]

LOGIN_PAGE = """<!DOCTYPE html>
<html><body><p id="state">logging in</p><script>
fetch("/_session", {{method: "POST", credentials: "same-origin",
  headers: {{"Content-Type": "application/json"}},
  body: JSON.stringify({{name: {name}, password: {password}}})}})
  .then(function (answer) {{
    if (answer.ok) {{ location.replace({target}); }}
    else {{ document.getElementById("state").textContent = "login failed: " + answer.status; }}
  }});
</script></body></html>
"""


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        missing("chromium (Debian's package)")
    return path


def browse(binary: str, url: str, tmp_path: Path, *extra: str) -> str:
    """Run Chromium once, in a fresh profile; return what it prints (the DOM)."""
    profile = tmp_path / f"chromium-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        out, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("chromium did not finish within 120 s")
    return out.decode("utf-8", "replace")


def visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", dom)).split())


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def member(couch, db):
    """A throwaway user who may read the test database."""
    name, password = f"fauxton_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    transport = couch.transport()
    doc_id = f"org.couchdb.user:{name}"
    transport.request("PUT", ["_users", doc_id], json={
        "name": name, "password": password, "roles": [], "type": "user"})
    db.set_security({"admins": {"names": [], "roles": []},
                     "members": {"names": [name], "roles": []}})
    yield name, password
    rev = transport.request("GET", ["_users", doc_id])["_rev"]
    transport.request("DELETE", ["_users", doc_id], params={"rev": rev})


@pytest.fixture
def login_page(couch, db, member):
    """A public page on the server that logs ``member`` in and opens Monitor/todo."""
    pages = Database(couch.transport(), unique_name("picas_test_login"))
    pages.create()
    pages.set_security({"admins": {"names": [], "roles": []},
                        "members": {"names": [], "roles": []}})
    name, password = member
    target = f"/_utils/#database/{db.name}/_design/Monitor/_view/todo"
    page = LOGIN_PAGE.format(name=_js(name), password=_js(password), target=_js(target))
    rev = pages.put({"_id": "login"})
    pages.put_attachment("login", rev, "login.html", page.encode(), "text/html")
    url = f"{couch.url}/{pages.name}/login/login.html"
    csp = requests.get(url, auth=(couch.username, couch.password), timeout=10).headers.get(
        "Content-Security-Policy", "")
    if "sandbox" in csp:
        pages.destroy()
        # Apache CouchDB 3.x serves attachments in a CSP sandbox ([csp]
        # attachments_enable), where the login page's script cannot run.
        pytest.skip("the server runs attachments in a CSP sandbox: no login page possible")
    yield url
    pages.destroy()


def _js(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_fauxton_shows_the_todo_tokens(couch, db, login_page, tmp_path):
    binary = chromium()
    env = {"PICAS_URL": couch.url, "PICAS_DATABASE": db.name,
           "PICAS_USERNAME": couch.username, "PICAS_PASSWORD": couch.password,
           "PICAS_CONFIG": str(tmp_path / "conf.yml"), "PICAS_PROFILE": None}
    added = CliRunner().invoke(cli, ["tokens", "add", "--grid", "frame=1..3",
                                     "--command", "render {frame}", "--json"], env=env)
    assert added.exit_code == 0, added.output
    ids = [row["id"] for row in db.view("Monitor", "todo")["rows"]]
    assert len(ids) == 3

    text = visible_text(browse(binary, login_page, tmp_path, "--dump-dom"))
    assert "login failed" not in text, text[:500]
    assert "todo" in text and "Monitor" in text, text[:500]
    for token_id in ids:
        assert token_id in text, f"{token_id} not shown by Fauxton: {text[:500]}"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "fauxton-todo.png"
    shot.unlink(missing_ok=True)
    browse(binary, login_page, tmp_path, f"--screenshot={shot}")
    assert shot.exists(), "chromium wrote no screenshot"
    assert png_size(shot) == (1400, 900)
