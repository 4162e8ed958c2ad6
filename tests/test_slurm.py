"""Pilots on a real Slurm: submit, scancel, walltime and the autopilot.

These tests need a running Slurm cluster (``scripts/slurm-cluster.sh
start``, which ``scripts/test.sh`` does, and ``SLURM_CONF`` exported).
Jobs reach the database with what ``picas pilots submit`` gives them: a
0600 environment file (the password is in the test's environment, as
``PICAS_PASSWORD``), never the command line.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import PYTHON
from support import missing

from picas import adding, config, shaping
from picas.database import Database
from picas.shaping import Shape
from picas.sources import Record
from picas.state import TokenState, classify

#: The todo view of a design document like upstream's MultiCore example.
MULTICORE_TODO = """function (doc) {
  if (doc.type == "token" && doc.lock == 0 && doc.done == 0 && doc.input.cores == 2) {
    emit(doc._id, null);
  }
}"""


@pytest.fixture(scope="module")
def cluster() -> None:
    if shutil.which("sbatch") is None:
        missing("slurm (no sbatch on PATH)")
    if os.environ.get("PICAS_SLURM_START_ERROR"):
        missing("slurm (scripts/slurm-cluster.sh could not start it: "
                f"{' '.join(os.environ['PICAS_SLURM_START_ERROR'].split())})")
    if not os.environ.get("SLURM_CONF"):
        missing("slurm (SLURM_CONF is not set: scripts/slurm-cluster.sh start, then "
                'eval "$(scripts/slurm-cluster.sh env)")')
    if subprocess.run(["squeue", "-h"], capture_output=True, timeout=30).returncode != 0:
        missing("slurm (the controller does not answer squeue)")


@pytest.fixture
def env(cluster: None, pilot_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The submitting user's environment: the password in PICAS_PASSWORD, no config file."""
    (tmp_path / "tmp").mkdir()
    return {**pilot_env, "PICAS_CONFIG": str(tmp_path / "config" / "conf.yml"),
            # each test's pilots get their own work and spool folders
            "TMPDIR": str(tmp_path / "tmp")}


@pytest.fixture
def jobs() -> list[str]:
    """Job ids a test submitted: cancelled afterwards, whatever happened."""
    submitted: list[str] = []
    yield submitted
    if submitted:
        subprocess.run(["scancel", *submitted], capture_output=True, timeout=30)
        wait_gone(submitted, timeout=30, check=False)


def picas(env: dict[str, str], cwd: Path, *args: str) -> str:
    done = subprocess.run([PYTHON, "-m", "picas", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"picas {' '.join(args)}: {done.stderr}"
    return done.stdout


def submit(env: dict[str, str], tmp_path: Path, jobs: list[str], *args: str,
           hold: bool = False) -> dict:
    answer = json.loads(picas(env, tmp_path, "pilots", "submit", "--json", *args, "--",
                              f"--output={tmp_path}/%x-%A_%a.out",
                              *(["--hold"] if hold else [])))
    jobs.append(answer["job_id"])
    return answer


def queued(job_ids: list[str]) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i"],
                         capture_output=True, text=True, timeout=30).stdout
    return out.split()


def wait_gone(job_ids: list[str], timeout: float, check: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while queued(job_ids):
        if time.monotonic() > deadline:
            assert not check, f"jobs {job_ids} still queued after {timeout} s: {queued(job_ids)}"
            return
        time.sleep(0.5)


def add(db: Database, n: int, command: str, prefix: str = "t", **fields) -> list[str]:
    new = shaping.build([Record({"_id": f"{prefix}{i:03d}", "command": command, **fields}, "t")
                        for i in range(n)], Shape())
    assert adding.add(db, new).added == n
    return [t["_id"] for t in new]


def all_tokens(db: Database) -> dict[str, dict]:
    rows = db.all_docs(include_docs=True)["rows"]
    return {r["id"]: r["doc"] for r in rows if r["doc"].get("type") == "token"}


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def outputs(tmp_path: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.out")))


# -- submit ----------------------------------------------------------------------

def test_the_password_stays_out_of_the_job_script(env, tmp_path, jobs, couch):
    answer = submit(env, tmp_path, jobs, "-n", "2", "--time", "5:00", hold=True)
    script = subprocess.run(["scontrol", "write", "batch_script", answer["job_id"], "-"],
                            capture_output=True, text=True, timeout=30).stdout
    dry = picas(env, tmp_path, "pilots", "submit", "-n", "2", "--time", "5:00", "--dry-run")
    env_file = tmp_path / "config" / "env" / f"{answer['job_name']}.env"
    assert "--array=0-1" in script and f". {env_file};" in script
    assert script == dry
    assert couch.password not in script
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(env_file.parent.stat().st_mode) == 0o700
    assert f"PICAS_PASSWORD={couch.password}" in env_file.read_text()
    assert answer["pilots"] == [f"{answer['job_id']}_0", f"{answer['job_id']}_1"]


def test_a_config_file_holding_the_password_is_what_the_job_reads(env, db, couch, tmp_path,
                                                                  jobs):
    conf = tmp_path / "config" / "conf.yml"
    config.write(conf, {"url": couch.url, "database": db.name, "username": couch.username,
                        "password": couch.password})
    env = {k: v for k, v in env.items() if not k.startswith("PICAS_")}
    env["PICAS_CONFIG"] = str(conf)
    side = tmp_path / "side"
    ids = add(db, 3, f"echo $PICAS_TOKEN_ID >> {side}")
    dry = picas(env, tmp_path, "pilots", "submit", "--dry-run")
    assert f"PICAS_CONFIG={conf}" in dry and "set -a" not in dry
    assert couch.password not in dry
    answer = submit(env, tmp_path, jobs)
    wait_gone([answer["job_id"]], timeout=60)
    assert sorted(lines(side)) == ids, outputs(tmp_path)
    assert not (tmp_path / "config" / "env").exists()


def test_four_pilots_drain_200_tokens_each_run_once(env, db, tmp_path, jobs):
    side = tmp_path / "side"
    ids = add(db, 200, f"echo $PICAS_TOKEN_ID >> {side}")
    answer = submit(env, tmp_path, jobs, "-n", "4", "--time", "5:00")
    wait_gone([answer["job_id"]], timeout=120)
    assert sorted(lines(side)) == ids, outputs(tmp_path)
    found = all_tokens(db)
    assert all(classify(doc) is TokenState.DONE for doc in found.values())
    pilots = set(answer["pilots"])
    for doc in found.values():
        (attempt,) = doc["attempts"]
        assert attempt["outcome"] == "succeeded"
        assert attempt["job_id"] in pilots and doc["slurm_job_id"] == attempt["job_id"]
    # Each of the four array tasks ran a pilot to the end of the work.
    assert outputs(tmp_path).count("stopped: no-work") == 4, outputs(tmp_path)


# -- scancel ---------------------------------------------------------------------

def test_a_cancelled_pilot_hands_its_token_to_another(env, db, tmp_path, jobs):
    started, side = tmp_path / "started", tmp_path / "side"
    # "&&": a token whose sleep was killed must not go on to finish; the
    # shell may outlive the signal and would otherwise exit 0, a real success.
    ids = add(db, 12, f"echo $PICAS_TOKEN_ID >> {started} && sleep 4 && "
                      f"echo $PICAS_TOKEN_ID >> {side}")
    answer = submit(env, tmp_path, jobs, "-n", "4", "--time", "5:00")
    deadline = time.monotonic() + 60
    while not lines(started):
        assert time.monotonic() < deadline, "no pilot started a token"
        time.sleep(0.2)
    victim = lines(started)[0]
    pilot = db.get(victim)["lease"]["job_id"]
    subprocess.run(["scancel", pilot], check=True, timeout=30)
    wait_gone([answer["job_id"]], timeout=120)

    found = all_tokens(db)
    assert all(classify(doc) is TokenState.DONE for doc in found.values()), outputs(tmp_path)
    assert len(found[victim]["attempts"]) == 2, (found[victim], outputs(tmp_path))
    first, second = found[victim]["attempts"]
    assert (first["outcome"], first["job_id"]) == ("interrupted", pilot)
    assert second["outcome"] == "succeeded" and second["job_id"] != pilot
    # Every token completed exactly once; only the victim started twice.
    assert sorted(lines(side)) == ids
    assert sorted(lines(started)) == sorted([*ids, victim])
    assert "stopped: signal" in (tmp_path / f"{answer['job_name']}-{pilot}.out").read_text()


# -- walltime --------------------------------------------------------------------

def running_until(job: str) -> float | None:
    """When a running job's time limit ends (epoch s); None while it is pending."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %e"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "SLURM_TIME_FORMAT": "%s"})
    fields = out.stdout.split()
    return float(fields[1]) if fields[:1] == ["RUNNING"] else None


def test_a_pilot_stops_before_walltime_and_leaves_nothing_locked(env, db, tmp_path, jobs):
    # Slurm signals the pilot `margin` s before the limit, or up to a minute
    # earlier; the pilot also stops claiming by itself then, and claims only
    # tokens whose expected runtime fits. Whichever comes first, the pilot
    # must leave before the limit with every token done or back in todo.
    ids = add(db, 4, "sleep 20", expected_runtime=20)
    answer = submit(env, tmp_path, jobs, "--time", "0:01:00", "--margin", "30")
    job = answer["job_id"]
    deadline = time.monotonic() + 60
    end = None
    while end is None:
        assert time.monotonic() < deadline, "the pilot job did not start"
        end = running_until(job)
        time.sleep(0.2)
    wait_gone([job], timeout=120)
    left_at = time.time()

    # The pilot ended by itself, before Slurm would have killed it at the limit.
    assert left_at < end, outputs(tmp_path)
    assert re.search(r"stopped: (signal|walltime|no-work)", outputs(tmp_path)), outputs(tmp_path)
    found = all_tokens(db)
    assert sorted(found) == ids
    assert {classify(doc) for doc in found.values()} <= {TokenState.TODO, TokenState.DONE}
    attempts = [a for doc in found.values() for a in doc.get("attempts", [])]
    assert attempts and all(a["outcome"] in ("succeeded", "interrupted") for a in attempts)
    # Nothing was claimed in the last 30 s (the margin).
    assert all(a["start"] < end - 30 for a in attempts)


# -- autopilot -------------------------------------------------------------------

def autopilot(env: dict[str, str], tmp_path: Path, jobs: list[str], *args: str,
              hold: bool = False) -> list[dict]:
    out = picas(env, tmp_path, "autopilot", "--json", *args, "--",
                f"--output={tmp_path}/%x-%A_%a.out", *(["--hold"] if hold else []))
    rounds = [json.loads(line) for line in out.splitlines()]
    jobs.extend(k["job_id"] for r in rounds for k in r["kinds"] if k["job_id"])
    return rounds


def active(job_name: str) -> int:
    return len(subprocess.run(["squeue", "-h", "-r", "-n", job_name, "-o", "%i"],
                              capture_output=True, text=True, timeout=30).stdout.split())


def test_autopilot_submits_what_the_backlog_needs_and_no_more(env, db, tmp_path, jobs):
    side = tmp_path / "side"
    ids = add(db, 250, f"echo $PICAS_TOKEN_ID >> {side}")
    sizing = ("--tokens-per-pilot", "100", "--max-pilots", "10", "--time", "5:00")
    # Held, the pilots stay queued: the second round must count them.
    (first,) = autopilot(env, tmp_path, jobs, "--once", *sizing, hold=True)
    (kind,) = first["kinds"]
    assert (kind["todo"], kind["active"], kind["submitted"]) == (250, 0, 3)
    assert active(kind["job_name"]) == 3
    (second,) = autopilot(env, tmp_path, jobs, "--once", *sizing, hold=True)
    assert (second["kinds"][0]["active"], second["kinds"][0]["submitted"]) == (3, 0)
    assert active(kind["job_name"]) == 3

    # Released, the pilots drain the backlog; the looping autopilot submits
    # nothing more and stops once nothing is todo.
    subprocess.run(["scontrol", "release", kind["job_id"]], check=True, timeout=30)
    rounds = autopilot(env, tmp_path, jobs, "--interval", "2", *sizing)
    assert all(k["submitted"] == 0 for r in rounds for k in r["kinds"])
    assert rounds[-1]["finished"] and not any(r["finished"] for r in rounds[:-1])
    wait_gone([kind["job_id"]], timeout=60)
    assert sorted(lines(side)) == ids


def test_autopilot_sizes_each_tag_apart_within_max_pilots(env, db, tmp_path, jobs):
    add(db, 150, "true", prefix="a", tags=["small"])
    add(db, 700, "true", prefix="b", tags=["big"])
    args = ("--once", "--tag", "small", "--tag", "big", "--tokens-per-pilot", "100",
            "--max-pilots", "5")
    (first,) = autopilot(env, tmp_path, jobs, *args, hold=True)
    decided = {k["tag"]: (k["todo"], k["active"], k["submitted"]) for k in first["kinds"]}
    assert decided == {"small": (150, 0, 2), "big": (700, 0, 5)}
    names = {k["tag"]: k["job_name"] for k in first["kinds"]}
    assert names["small"] != names["big"]
    assert (active(names["small"]), active(names["big"])) == (2, 5)
    (second,) = autopilot(env, tmp_path, jobs, *args, hold=True)
    assert [k["submitted"] for k in second["kinds"]] == [0, 0]


def test_autopilot_with_nothing_todo_submits_nothing_and_stops(env, db, tmp_path, jobs):
    (only,) = autopilot(env, tmp_path, jobs, "--interval", "60")
    assert only["finished"] and only["kinds"][0]["submitted"] == 0


def test_pilots_for_a_tag_run_only_that_tags_tokens(env, db, tmp_path, jobs):
    side = tmp_path / "side"
    small = add(db, 20, f"echo $PICAS_TOKEN_ID >> {side}", prefix="a", tags=["small"])
    big = add(db, 20, f"echo $PICAS_TOKEN_ID >> {side}", prefix="b", tags=["big"])
    (first,) = autopilot(env, tmp_path, jobs, "--once", "--tag", "small",
                         "--tokens-per-pilot", "10", "--time", "5:00")
    assert first["kinds"][0]["submitted"] == 2
    wait_gone(jobs, timeout=60)
    assert sorted(lines(side)) == small, outputs(tmp_path)
    found = all_tokens(db)
    assert all(classify(found[i]) is TokenState.TODO for i in big)


def test_autopilot_per_design_doc_runs_that_views_tokens(env, db, tmp_path, jobs):
    # Upstream's SingleCore/MultiCore example: a design document per kind of job.
    db.put({"_id": "_design/MultiCore", "language": "javascript",
            "views": {"todo": {"map": MULTICORE_TODO}}})
    side = tmp_path / "side"
    multi = add(db, 10, f"echo $PICAS_TOKEN_ID >> {side}", prefix="m", cores=2)
    single = add(db, 10, f"echo $PICAS_TOKEN_ID >> {side}", prefix="s", cores=1)
    (first,) = autopilot(env, tmp_path, jobs, "--once", "--design-doc", "MultiCore",
                         "--cpus-per-task", "2", "--tokens-per-pilot", "10", "--time", "5:00")
    (kind,) = first["kinds"]
    assert (kind["todo"], kind["submitted"]) == (10, 1)
    assert kind["job_name"] == f"picas-{db.name}-MultiCore"
    wait_gone(jobs, timeout=60)
    assert sorted(lines(side)) == multi, outputs(tmp_path)
    found = all_tokens(db)
    assert all(classify(found[i]) is TokenState.TODO for i in single)


def test_a_cluster_that_could_not_start_fails_these_tests_under_ci_with_its_reason(tmp_path):
    """What scripts/test.sh hands on when scripts/slurm-cluster.sh start fails."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (fake / "sbatch").chmod(0o755)
    reason = ("slurmctld exited during startup\n"
              "  fatal: slurm_init_msg_engine_addrname_port error Address already in use")
    env = {**os.environ, "CI": "true", "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}",
           "PICAS_SLURM_START_ERROR": reason}
    env.pop("SLURM_CONF", None)
    done = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_the_password_stays_out_of_the_job_script"],
        env=env, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "scripts/slurm-cluster.sh could not start it: slurmctld exited during startup " \
           "fatal: slurm_init_msg_engine_addrname_port error Address already in use" \
           in done.stdout
    assert "SLURM_CONF is not set" not in done.stdout
