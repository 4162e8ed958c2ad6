"""Upstream PiCaS's pilot pattern (examples/) drains a database unchanged."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pilots import states
from support import eventually

from picas import state
from picas.state import TokenState

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_push_tokens_and_the_local_example_drain_the_database(db, pilot_env, tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("echo one\necho two\nexit 3\n")
    assert "added 3 of 3 tokens" in run(pilot_env, str(EXAMPLES / "push_tokens.py"), str(tasks))
    assert states(db) == {"todo": 3}
    output = run(pilot_env, str(EXAMPLES / "local_example.py"))
    assert output.count("Working on token") == 5  # 2 successes, 3 tries of the failing one
    assert states(db) == {"done": 2, "error": 1}
    docs = [row["doc"] for row in db.view("Monitor", "done", include_docs=True)["rows"]]
    for doc in docs:
        name = f"logs_{doc['_id']}.out"
        assert name in doc["_attachments"]
        assert db.get_attachment(doc["_id"], name) in (b"one\n", b"two\n")
        assert [a["outcome"] for a in doc["attempts"]] == ["succeeded"]
    eventually(lambda: [(row["doc"]["exit_code"], row["doc"]["scrub_count"]) for row in db.view(
        "Monitor", "error", include_docs=True)["rows"]], [(3, 2)])
    (failed,) = [db.get(row["id"]) for row in db.view("Monitor", "error")["rows"]]
    assert [a["outcome"] for a in failed["attempts"]] == ["failed"] * 3
    assert state.classify(failed) is TokenState.ERROR
