"""RunActor: upstream's pilot API on the safe claim path, leases and limits."""
from __future__ import annotations

import time

from pilots import add, states, tokens
from support import eventually

from picas import state
from picas.actors import RunActor
from picas.executers import execute
from picas.iterators import TaskViewIterator
from picas.modifiers import BasicTokenModifier
from picas.state import TokenState


class ShellActor(RunActor):
    def __init__(self, db, **view_params):
        super().__init__(db, iterator=TaskViewIterator(db, "todo", **view_params))
        self.seen: list[str] = []

    def process_task(self, token):
        self.seen.append(token["_id"])
        _, code, out, _ = execute(token["command"], shell=True)
        token["exit_code"] = code
        BasicTokenModifier().close(token)
        token.put_attachment("out.log", out)


def test_max_token_time_stops_the_command_and_records_a_timeout(client, db):
    add(db, tokens({"slow": "sleep 30", "quick": "echo hi"}))
    started = time.monotonic()
    ShellActor(client).run(max_token_time=1)
    assert time.monotonic() - started < 20
    slow = db.get("slow")
    assert [a["outcome"] for a in slow["attempts"]] == ["timed_out"]
    assert state.classify(slow) is TokenState.ERROR and slow["exit_code"] != 0
    assert state.classify(db.get("quick")) is TokenState.DONE


def test_the_actor_holds_a_lease_and_records_attempts(client, db):
    add(db, tokens({"t": "echo hi"}))
    actor = ShellActor(client, lease_seconds=30)
    actor.run()
    token = db.get("t")
    (attempt,) = token["attempts"]
    assert attempt["outcome"] == "succeeded" and attempt["logs"] == ["out.log"]
    assert attempt["lease"] and "lease" not in token
    assert db.get_attachment("t", "out.log") == b"hi\n"


def test_max_scrub_retries_failures_the_upstream_way(client, db):
    add(db, tokens({"bad": "exit 2"}))
    actor = ShellActor(client)
    actor.run(max_scrub=2)
    token = db.get("bad")
    assert actor.seen == ["bad"] * 3
    assert token["scrub_count"] == 2 and states(db) == {"error": 1}


def test_max_tasks_stops_the_actor(client, db):
    add(db, tokens({f"t{i}": "true" for i in range(5)}))
    actor = ShellActor(client)
    actor.run(max_tasks=2)
    assert len(actor.seen) == 2
    eventually(lambda: states(db), {"done": 2, "todo": 3})
