"""Upstream PiCaS's newest examples and tutorials run on picas, against a real server.

The scripts in ``tests/upstream_scripts/`` make the same imports and
calls as upstream's ``examples/`` (``picasconfig.py`` reading the
encrypted config of ``picas-cli init``, ``create_views.py``,
``push_tokens.py``, ``local_example.py``, ``resetTokens.py``,
``deleteTokens.py``, ``run_autopilot.py``, ``word_count_example.py``) and
tutorials 01 to 03 (the steps that need no notebook or cluster). Each
test runs them as a user would, in order, as a CouchDB user who
administers the database (as on SURF's PiCaS server), with HOME in a
temporary folder.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from pilots import states
from support import eventually, skip_unless_users_read_their_record

from picas.database import Database

SCRIPTS = Path(__file__).resolve().parent / "upstream_scripts"
BIN = Path(sys.executable).parent


class Workspace:
    """The examples folder, a HOME with the config, and a fake sbatch."""

    def __init__(self, root: Path, couch, db: Database, user: str, password: str) -> None:
        self.dir = root / "examples"
        shutil.copytree(SCRIPTS, self.dir)
        self.home = root / "home"
        self.home.mkdir()
        fake = root / "bin"
        fake.mkdir()
        self.sbatch_calls = root / "sbatch-calls"
        (fake / "sbatch").write_text(f'#!/bin/sh\necho "$*" >> {self.sbatch_calls}\n'
                                     'echo "Submitted batch job 42"\n')
        (fake / "sbatch").chmod(0o755)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PICAS_")}
        self.env.update(HOME=str(self.home), PYTHONPATH=str(self.dir),
                        PATH=os.pathsep.join([str(fake), str(BIN), self.env.get("PATH", "")]))
        self.db = db
        self.url, self.user, self.password = couch.url, user, password

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        command = [sys.executable, *args] if args[0].endswith(".py") else \
            [str(BIN / args[0]), *args[1:]]
        done = subprocess.run(command, cwd=self.dir, env=self.env, input=input,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
        return done

    def init(self) -> None:
        """As create_config.py does it (with the password on stdin, not in argv)."""
        self.run("picas-cli", "init", "--host-url", self.url, "--database", self.db.name,
                 "--username", self.user, "--password-stdin", input=self.password + "\n")

    def tokens(self) -> dict[str, dict]:
        rows = self.db.all_docs(include_docs=True)["rows"]
        return {row["id"]: row["doc"] for row in rows if not row["id"].startswith("_design/")}


@pytest.fixture
def workspace(tmp_path, couch, empty_db) -> Workspace:
    user, password = f"picas_user_{uuid.uuid4().hex[:8]}", "a pass'word"
    auth = (couch.username, couch.password)
    user_url = f"{couch.url}/_users/org.couchdb.user:{user}"
    requests.put(user_url, json={"name": user, "password": password, "roles": [],
                                 "type": "user"}, auth=auth, timeout=10).raise_for_status()
    empty_db.set_security({"admins": {"names": [user], "roles": []},
                           "members": {"names": [user], "roles": []}})
    space = Workspace(tmp_path, couch, empty_db, user, password)
    space.init()
    yield space
    rev = requests.get(user_url, auth=auth, timeout=10).json()["_rev"]
    requests.delete(user_url, params={"rev": rev}, auth=auth, timeout=10)


def test_quick_example_views_push_run_reset_and_delete(workspace):
    space = workspace
    space.run("picasconfig.py")
    space.run("create_views.py")
    assert set(space.db.get("_design/Monitor")["views"]) == \
        {"todo", "locked", "done", "error", "overview_total"}
    space.run("push_tokens.py")
    assert sorted(space.tokens()) == ["token_1", "token_2", "token_3"]  # offset: the design doc
    assert states(space.db) == {"todo": 3}

    out = space.run("local_example.py").stdout
    assert out.count("Working on token") == 3
    assert states(space.db) == {"done": 3}
    for token_id, doc in space.tokens().items():
        assert doc["exit_code"] == 0 and doc["done"] > 0
        log = space.db.get_attachment(token_id, f"logs_{token_id}.out").decode()
        assert f"token {token_id} on" in log and f"this is token {doc['input'][-2]}" in log
        assert f"logs_{token_id}.err" in doc["_attachments"]

    reset = space.run("resetTokens.py", "Monitor/done", "0").stdout
    assert "Number of reset tokens: 3" in reset
    assert states(space.db) == {"todo": 3}
    assert all(doc["scrub_count"] == 1 and "_attachments" not in doc
               for doc in space.tokens().values())
    space.run("resetTokens.py", "Monitor/locked", input="\n")  # asks first; nothing locked

    space.run("local_example.py")
    assert states(space.db) == {"done": 3}
    space.run("deleteTokens.py", "Monitor/done")
    assert space.tokens() == {}


def test_autopilot_submits_a_pilot_only_when_its_view_has_work(workspace):
    space = workspace
    space.run("create_views.py", "autopilot")
    space.run("run_autopilot.py")
    assert not space.sbatch_calls.exists()
    space.run("push_tokens.py", "autopilot")
    assert sorted((d["cores"], d["input"]) for d in space.tokens().values()) == \
        [(1, "echo $SLURM_CPUS_PER_TASK")] * 2 + [(4, "echo $SLURM_CPUS_PER_TASK")]
    space.run("run_autopilot.py")
    space.run("run_autopilot.py", "--design_doc", "MultiCore", "--cores", "4")
    assert space.sbatch_calls.read_text().splitlines() == [
        "--cpus-per-task=1 --export=ALL,VIEW=todo,DESIGN_DOC=SingleCore slurm_example.sh",
        "--cpus-per-task=4 --export=ALL,VIEW=todo,DESIGN_DOC=MultiCore slurm_example.sh"]


def test_word_count_tutorial_counts_every_file(workspace, tmp_path):
    space = workspace
    data = tmp_path / "picas_fake_data"
    expected = {}
    for n, leaf in enumerate(["Aruba/Oranjestad/Anna/Smith", "Peru/Lima/Bob/Jones"]):
        (data / leaf).mkdir(parents=True)
        for i in range(1, 4):
            path = data / leaf / f"file_{i:03d}.txt"
            path.write_text(" ".join(["word"] * (10 * i + n)))
            expected[str(path)] = 10 * i + n
    space.run("create_views.py")
    pushed = space.run("push_files.py", str(data)).stdout
    assert "Number of documents in the todo view: 6" in pushed
    assert "***masked***" in pushed and space.password not in pushed
    out = space.run("word_count_example.py").stdout
    assert out.count("Working on token") == 6
    eventually(lambda: states(space.db), {"done": 6})
    counts = {doc["input"]: int(space.db.get_attachment(token_id, "word_count"))
              for token_id, doc in space.tokens().items()}
    assert counts == expected


def test_database_setup_tutorial_and_picas_on_the_same_config(workspace):
    space = workspace
    # Tutorial 01 passes the passwords on the command line; picas-cli warns.
    again = space.run("picas-cli", "init", "--host-url", space.url, "--database",
                      space.db.name, "--username", space.user, "--password", space.password)
    assert "other users" in again.stderr
    space.run("create_views.py")
    space.run("push_tokens.py")
    # picas itself reads the same file; its own views go next to upstream's.
    space.run("picas", "views", "push")
    status = space.run("picas", "status", "--json").stdout
    assert json.loads(status)["todo"] == 3

    skip_unless_users_read_their_record(space.url, space.user, space.password)
    changed = space.run("picas-cli", "passwd", "--password", "new pass")
    assert "other users" in changed.stderr
    assert requests.get(f"{space.url}/{space.db.name}", auth=(space.user, "new pass"),
                        timeout=10).status_code == 200
    space.run("deleteTokens.py", "Monitor/todo")  # picasconfig.py reads the new password
    assert space.tokens() == {}
