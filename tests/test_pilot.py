"""`picas pilot`: running tokens, recording attempts, and every way they end."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from pilots import (
    add,
    executions,
    finish,
    kill_group,
    run_pilot,
    start_pilot,
    state_of,
    states,
    tokens,
    wait_for,
)

from picas import errors, state
from picas.state import TokenState

#: A minute's sleep that only this test session runs (GNU sleep adds up its
#: arguments), so that cleaning up strays cannot hit another session's tasks.
LONG_SLEEP = f"sleep 60 0.{os.getpid():07d}"


def test_commands_run_through_the_shell_or_directly_with_the_tokens_env(db, pilot_env, tmp_path):
    add(db, tokens({"shell": "echo $GREETING from $(basename $PWD) && pwd > ../where-shell",
                    "argv": ["sh", "-c", "echo argv $GREETING; pwd > ../where-argv"]},
                   env={"GREETING": "hello"}))
    report = run_pilot(pilot_env, workdir=tmp_path)
    assert report["outcomes"] == {"succeeded": 2}
    shell = db.get("shell")
    assert db.get_attachment("shell", "attempt-1.stdout").startswith(b"hello from shell-")
    assert db.get_attachment("argv", "attempt-1.stdout") == b"argv hello\n"
    # each token ran in a fresh folder of its own, removed afterwards
    where = {(tmp_path / f"where-{n}").read_text().strip() for n in ("shell", "argv")}
    assert len(where) == 2 and not any(os.path.exists(w) for w in where)
    assert state.classify(shell) is TokenState.DONE and shell["exit_code"] == 0


def test_an_attempt_records_times_host_pilot_and_batch_job(db, pilot_env, tmp_path):
    add(db, tokens({"t": "echo out; echo err >&2; exit 0"}))
    env = {**pilot_env, "SLURM_JOB_ID": "4242"}
    report = run_pilot(env, workdir=tmp_path)
    token = db.get("t")
    (attempt,) = token["attempts"]
    assert attempt["n"] == 1 and attempt["outcome"] == "succeeded" and attempt["exit_code"] == 0
    assert attempt["pilot"] == report["pilot_id"] and attempt["host"] == token["hostname"]
    assert attempt["job_id"] == "4242" and token["slurm_job_id"] == "4242"
    assert attempt["start"] <= attempt["end"] and attempt["duration"] >= 0
    assert sorted(attempt["logs"]) == ["attempt-1.stderr", "attempt-1.stdout"]
    assert db.get_attachment("t", "attempt-1.stderr") == b"err\n"
    assert "lease" not in token and token["done"] > 0


def test_failures_retry_until_max_attempts_then_error(db, pilot_env, tmp_path):
    add(db, tokens({"flaky": "exit 3"}, max_attempts=3))
    report = run_pilot(pilot_env, workdir=tmp_path)
    token = db.get("flaky")
    assert report["outcomes"] == {"failed": 3}
    assert [a["outcome"] for a in token["attempts"]] == ["failed"] * 3
    assert [a["n"] for a in token["attempts"]] == [1, 2, 3]
    assert state.classify(token) is TokenState.ERROR and token["exit_code"] == 3
    assert token["scrub_count"] == 2  # put back in todo twice, upstream's meaning


def test_default_max_attempts_comes_from_the_pilot_option(db, pilot_env, tmp_path):
    add(db, tokens({"flaky": "exit 1"}))
    run_pilot(pilot_env, "--max-attempts", "1", workdir=tmp_path)
    assert len(db.get("flaky")["attempts"]) == 1
    assert state_of(db, "flaky") is TokenState.ERROR


def test_logs_are_capped_keeping_the_tail(db, pilot_env, tmp_path):
    add(db, tokens({"big": "seq 1 200000"}))
    run_pilot(pilot_env, "--log-cap", "4096", workdir=tmp_path)
    log = db.get_attachment("big", "attempt-1.stdout")
    assert log.endswith(b"199999\n200000\n")
    assert log.startswith(b"[picas: the first ") and len(log) < 4096 + 200
    assert db.get("big")["attempts"][0]["stdout_truncated_bytes"] > 1_000_000


def test_bad_tokens_are_recorded_and_the_pilot_goes_on(db, pilot_env, tmp_path):
    add(db, tokens({"missing-exe": ["/no/such/program"], "shell-127": "no-such-program-xyz",
                    "binary": "printf '\\377\\376 not utf8'", "fine": "true"}))
    add(db, [{**tokens({"x": None})[0], "_id": "no-command"}])
    report = run_pilot(pilot_env, workdir=tmp_path)
    assert report["stopped_because"] == "no-work"
    assert state_of(db, "fine") is TokenState.DONE
    no_command = db.get("no-command")
    assert state.classify(no_command) is TokenState.ERROR
    assert "no 'command'" in no_command["attempts"][0]["error"]
    assert "no 'command'" in no_command["error"][-1]["message"]
    for token_id in ("missing-exe", "shell-127"):
        token = db.get(token_id)
        assert token["exit_code"] == 127, token_id
    assert b"/no/such/program" in db.get_attachment("missing-exe", "attempt-1.stderr")
    binary = db.get("binary")
    assert binary["attempts"][0]["stdout_not_utf8"] is True
    assert db.get_attachment("binary", "attempt-1.stdout").startswith(b"\xff\xfe")


def test_background_children_do_not_hold_the_pilot(db, pilot_env, tmp_path):
    marker = tmp_path / "child-pid"
    add(db, tokens({"bg": f"sleep 300 & echo $! > {marker}; echo started"}))
    started = time.monotonic()
    run_pilot(pilot_env, workdir=tmp_path / "w", timeout=60)
    assert time.monotonic() - started < 60
    assert state_of(db, "bg") is TokenState.DONE
    child = int(marker.read_text())
    wait_for(lambda: not _alive(child), timeout=10)


def test_a_timeout_kills_the_whole_process_tree(db, pilot_env, tmp_path):
    marker = tmp_path / "grandchild"
    add(db, tokens({"slow": f"sh -c '{LONG_SLEEP} & echo $! > {marker}; wait' ; echo never"}))
    run_pilot(pilot_env, "--max-token-time", "1", "--grace", "1", workdir=tmp_path / "w")
    token = db.get("slow")
    assert next(a["outcome"] for a in token["attempts"]) == "timed_out"
    assert token["attempts"][0]["exit_code"] < 0  # killed by a signal
    grandchild = int(marker.read_text())
    wait_for(lambda: not _alive(grandchild), timeout=10)


def test_sigterm_puts_the_token_back_in_todo_within_two_seconds(db, pilot_env, tmp_path):
    add(db, tokens({"long": LONG_SLEEP}))
    proc = start_pilot(pilot_env, workdir=tmp_path)
    wait_for(lambda: state_of(db, "long") is TokenState.LOCKED)
    time.sleep(0.5)  # let the command start
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    wait_for(lambda: state_of(db, "long") is TokenState.TODO, timeout=2.0, interval=0.05)
    back_after = time.monotonic() - sent
    report = finish(proc, timeout=10)
    assert back_after <= 2.0
    assert report["stopped_because"] == "signal"
    token = db.get("long")
    assert [a["outcome"] for a in token["attempts"]] == ["interrupted"]
    # an interruption does not use up the application's retries
    assert state.application_failures(token) == 0


def test_sigkill_mid_token_the_lease_expires_and_it_runs_exactly_once_more(db, pilot_env, tmp_path):
    side = tmp_path / "side"
    side.mkdir()
    add(db, tokens({"victim": f"echo $PICAS_TOKEN_ID >> {side}/$$; sleep 4"}))
    first = start_pilot(pilot_env, "--lease", "2", workdir=tmp_path / "a")
    wait_for(lambda: executions(side).get("victim") == 1)
    kill_group(first, signal.SIGKILL)  # pilot and task die together, as on a lost node
    first.wait()
    assert state_of(db, "victim") is TokenState.LOCKED
    second = start_pilot(pilot_env, "--lease", "2", "--endless", "--max-time", "12",
                         workdir=tmp_path / "b")
    report = finish(second, timeout=60)
    assert executions(side) == {"victim": 2}
    token = db.get("victim")
    assert [a["outcome"] for a in token["attempts"]] == ["lease_lost", "succeeded"]
    assert state.classify(token) is TokenState.DONE
    assert report["recovered"] == 1
    assert states(db) == {"done": 1}


def test_a_late_finisher_does_not_overwrite_the_newer_attempt(db, pilot_env, tmp_path):
    add(db, tokens({"t": "sleep 3; echo from $PICAS_PILOT_MARK"}))
    slow = start_pilot({**pilot_env, "PICAS_PILOT_MARK": "slow"}, "--lease", "2",
                       workdir=tmp_path / "a")
    wait_for(lambda: state_of(db, "t") is TokenState.LOCKED)
    time.sleep(0.3)
    os.kill(slow.pid, signal.SIGSTOP)  # no heartbeats: the lease runs out
    try:
        fast = start_pilot({**pilot_env, "PICAS_PILOT_MARK": "fast"}, "--lease", "30",
                           "--endless", "--max-time", "8", workdir=tmp_path / "b")
        wait_for(lambda: state_of(db, "t") is TokenState.DONE, timeout=30)
    finally:
        os.kill(slow.pid, signal.SIGCONT)
    slow_report = finish(slow, timeout=30)
    finish(fast, timeout=30)
    token = db.get("t")
    assert state.classify(token) is TokenState.DONE
    counted = [(a["outcome"], a.get("late", False)) for a in token["attempts"]]
    assert counted[:2] == [("lease_lost", False), ("succeeded", False)]
    assert counted[2][1] is True and slow_report["late"] == 1
    newest = token["attempts"][1]["logs"]
    assert db.get_attachment("t", next(n for n in newest if n.endswith("stdout"))) == b"from fast\n"


def test_cancel_reaches_a_running_token_at_its_next_heartbeat(db, pilot_env, tmp_path):
    add(db, tokens({"t": LONG_SLEEP}))
    proc = start_pilot(pilot_env, "--lease", "3", workdir=tmp_path)
    wait_for(lambda: state_of(db, "t") is TokenState.LOCKED)
    for _ in range(5):
        try:
            db.put(state.cancel(db.get("t")))
            break
        except errors.Conflict:  # a heartbeat got in first: read again
            continue
    report = finish(proc, timeout=30)
    token = db.get("t")
    assert state.classify(token) is TokenState.CANCELLED
    assert [a["outcome"] for a in token["attempts"]] == ["cancelled"]
    assert report["outcomes"] == {"cancelled": 1}


def test_eight_pilots_drain_a_thousand_tokens_each_exactly_once(db, pilot_env, tmp_path):
    side = tmp_path / "side"
    side.mkdir()
    add(db, tokens({f"t{i:04d}": f'echo "$PICAS_TOKEN_ID" >> {side}/$PPID' for i in range(1000)}))
    procs = [start_pilot(pilot_env, workdir=tmp_path / f"w{i}") for i in range(8)]
    reports = [finish(p, timeout=300) for p in procs]
    counts = executions(side)
    assert len(counts) == 1000
    assert [t for t, n in counts.items() if n != 1] == []
    assert sum(r["started"] for r in reports) == 1000
    assert states(db) == {"done": 1000}


def test_walltime_stops_claiming_and_only_fitting_tokens_are_taken(db, pilot_env, tmp_path):
    add(db, tokens({"short": "true"}, expected_runtime=1))
    add(db, tokens({"long": "true"}, expected_runtime=3600))
    end = time.time() + 120
    report = run_pilot(pilot_env, "--end-time", str(end), "--margin", "60", workdir=tmp_path)
    assert state_of(db, "short") is TokenState.DONE
    assert state_of(db, "long") is TokenState.TODO
    assert report["started"] == 1
    report = run_pilot(pilot_env, "--end-time", str(time.time() + 30), "--margin", "60",
                       workdir=tmp_path)
    assert report["stopped_because"] == "walltime" and report["started"] == 0


def test_prefetched_tokens_are_released_when_the_pilot_stops(db, pilot_env, tmp_path):
    add(db, tokens({f"t{i}": "true" for i in range(40)}))
    report = run_pilot(pilot_env, "--batch", "10", "--max-tasks", "3", workdir=tmp_path)
    assert report["started"] == 3
    assert states(db) == {"done": 3, "todo": 37}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(autouse=True)
def _no_stray_sleepers():
    yield
    subprocess.run(["pkill", "-f", f"^{LONG_SLEEP}$"], check=False)


def test_once_the_pool_uses_priorities_the_highest_runs_first(db, pilot_env, tmp_path):
    from picas import pool
    order = tmp_path / "order"
    add(db, tokens({f"low{i}": f"echo low{i} >> {order}" for i in range(5)}))
    add(db, tokens({"urgent": f"echo urgent >> {order}"}, priority=10))
    assert pool.enable_priorities(db) is True
    assert pool.enable_priorities(db) is False
    run_pilot(pilot_env, "--batch", "1", workdir=tmp_path / "w")
    assert order.read_text().split()[0] == "urgent"
    assert states(db) == {"done": 6}


def test_every_token_starts_in_an_empty_folder_with_only_its_own_output(db, pilot_env, tmp_path):
    add(db, tokens({"a-messy": "touch left-behind; seq 1 20000",
                    "b-tidy": "ls -A | wc -l; echo b",
                    "c-next": "ls -A | wc -l; basename $PWD"}))
    run_pilot(pilot_env, "--batch", "1", workdir=tmp_path / "w")
    assert db.get_attachment("a-messy", "attempt-1.stdout").endswith(b"19999\n20000\n")
    assert db.get_attachment("b-tidy", "attempt-1.stdout").split() == [b"0", b"b"]
    count, name = db.get_attachment("c-next", "attempt-1.stdout").split()
    assert count == b"0" and name.startswith(b"c-next-")
    assert list((tmp_path / "w").iterdir()) == []  # nothing left behind


def test_automatic_batches_need_few_requests_for_many_short_tokens(db, pilot_env, tmp_path):
    add(db, tokens({f"t{i:03d}": "true" for i in range(300)}))
    report = run_pilot(pilot_env, workdir=tmp_path / "w")
    assert report["started"] == 300 and states(db) == {"done": 300}
    # Claims of 1, 4, 16, 64, then a quarter of what is left each time (so that
    # other pilots would get work too): a claim and a result write per batch.
    # One token at a time would take two requests per token, or more.
    assert report["requests"] < 100, report


def test_automatic_batch_sizes_follow_how_long_tokens_take():
    from picas.pilot import BatchSizer
    sizer, sizes = BatchSizer(), []
    for _ in range(6):
        sizes.append(sizer.next_size())
        sizer.ran(0.01)
    assert sizes == [1, 4, 16, 64, 100, 100]
    for _ in range(20):
        sizer.ran(10.0)  # tokens turned long: back to one at a time
    assert sizer.next_size() == 1
    slow = BatchSizer()
    slow.next_size()
    slow.ran(30.0)
    assert [slow.next_size() for _ in range(3)] == [1, 1, 1]
    assert BatchSizer(7).next_size() == 7


def test_tokens_that_turn_out_long_are_not_kept_waiting_in_a_queue(db, pilot_env, tmp_path):
    from picas import pool
    order = tmp_path / "order"
    # Priorities fix the order on any server (the changes feed of a CouchDB
    # with several shards has none). The first token is quick, so the next
    # claim takes more; the first of those takes 5 s, longer than a claim is
    # meant to cover, so the others are handed back.
    add(db, tokens({"a-quick": f"echo a >> {order}"}, priority=3))
    add(db, tokens({"b-long": f"sleep 5; echo b >> {order}"}, priority=2))
    add(db, tokens({f"c{i}": f"echo c{i} >> {order}" for i in range(20)}, priority=1))
    pool.enable_priorities(db)
    report = run_pilot(pilot_env, workdir=tmp_path / "w")
    assert report["released"] >= 1
    assert states(db) == {"done": 22}
    assert all(len(db.get(t)["attempts"]) == 1 for t in ("a-quick", "b-long", "c0"))


def test_queue_limits_follow_the_longest_recent_run():
    from picas.pilot import BatchSizer
    sizer = BatchSizer()
    assert sizer.queue_limit() is None  # nothing known yet
    sizer.ran(0.01)
    assert sizer.queue_limit() == 400
    sizer.ran(5.0)
    assert sizer.queue_limit() == 0  # one long run is enough to hand the queue back
    assert BatchSizer(10).queue_limit() is None


def test_a_pilot_that_lost_every_race_comes_back_instead_of_stopping(db, tmp_path, monkeypatch):
    from picas import claim, pilot
    add(db, tokens({f"t{i}": "true" for i in range(3)}))
    real_claim, calls = claim.claim, []

    def unlucky_at_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return claim.ClaimResult(conflicts=4)  # other pilots won every race
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(claim, "claim", unlucky_at_first)
    report = _run_here(pilot.Pilot(db, pilot.PilotOptions(workdir=tmp_path / "w")))
    assert report.started == 3 and report.stopped_because == "no-work"
    assert states(db) == {"done": 3}


def _run_here(pilot):
    """Run a pilot in this process; it routes SIGTERM and SIGINT to its flag,
    so give them back to pytest after."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return pilot.run()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def test_a_command_that_removes_its_own_folder_does_not_upset_the_pilot(db, pilot_env, tmp_path):
    add(db, tokens({"a-vandal": "rm -rf \"$PWD\"", "b-next": "ls -A | wc -l; pwd"}))
    report = run_pilot(pilot_env, "--batch", "1", workdir=tmp_path / "w")
    assert report["outcomes"] == {"succeeded": 2} and states(db) == {"done": 2}
    count, where = db.get_attachment("b-next", "attempt-1.stdout").split()
    assert count == b"0" and b"b-next-" in where
