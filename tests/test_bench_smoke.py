"""The benchmark keeps working: a tiny run, end to end, checked for shape and duplicates.

It starts its own server and installs upstream PiCaS into a venv of its own
the first time, so it runs only under CI=true or with PICAS_BENCH_SMOKE=1.
Timings are reported, never asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import IN_CI, missing

from picas import errors, server

ROOT = Path(__file__).resolve().parent.parent
PER_PILOT_COUNT = ("tokens_per_s", "ratio_vs_upstream", "requests_per_token", "duplicates",
                   "server_limit_tokens_per_s")
IMPLEMENTATIONS = ("ours_pilot", "ours_actor", "upstream")

pytestmark = pytest.mark.skipif(
    not (IN_CI or os.environ.get("PICAS_BENCH_SMOKE") == "1"),
    reason="the benchmark smoke run needs CI=true or PICAS_BENCH_SMOKE=1")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    try:
        server.executable()
    except errors.ConfigError as exc:
        missing(f"pouchdb-server ({exc})")
    folder = tmp_path_factory.mktemp("bench")
    out, plot = folder / "results.json", folder / "throughput.png"
    # The README's command, made small: the same --json and --plot.
    done = subprocess.run([str(ROOT / "bench" / "run"), "--n", "50", "--pilots", "1,2",
                           "--reps", "1", "--scale", "0", "--json", str(out), "--plot", str(plot)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert plot.read_bytes().startswith(b"\x89PNG")
    return json.loads(out.read_text())


def test_every_pilot_count_reports_the_figures_the_issue_names(results: dict) -> None:
    assert sorted(results["pilots"]) == ["1", "2"]
    for row in results["pilots"].values():
        assert set(PER_PILOT_COUNT) <= set(row)
        assert set(row["tokens_per_s"]) == set(IMPLEMENTATIONS)
        assert set(row["ratio_vs_upstream"]) == {"ours_pilot", "ours_actor"}
        assert row["server_limit_tokens_per_s"] > 0


def test_our_pilots_drain_every_token_exactly_once(results: dict) -> None:
    ours = [run for run in results["runs"] if run["implementation"] != "upstream"]
    assert len(ours) == 4
    for run in ours:
        assert run["drained"], run
        assert run["duplicates"] == 0, run
        assert run["never_run"] == 0, run
        assert run["executions"] == run["n"], run
    for row in results["pilots"].values():
        assert row["duplicates"]["ours_pilot"] == 0
        assert row["duplicates"]["ours_actor"] == 0


def test_upstream_really_ran(results: dict) -> None:
    """Upstream may run a token twice (that is measured), but it must drain the database."""
    upstream = [run for run in results["runs"] if run["implementation"] == "upstream"]
    assert len(upstream) == 2
    for run in upstream:
        assert run["drained"], run
        assert run["never_run"] == 0, run


def test_a_run_against_a_server_given_by_url(couch, tmp_path: Path) -> None:
    """`bench/run --url` measures an external server (here the test server):
    no password in what it writes, and the server's CPU found by its port."""
    out = tmp_path / "results.json"
    env = {**os.environ, "PICAS_USERNAME": couch.username, "PICAS_PASSWORD": couch.password}
    done = subprocess.run([str(ROOT / "bench" / "run"), "--url", couch.url, "--n", "30",
                           "--pilots", "2", "--reps", "1", "--scale", "0",
                           "--implementations", "ours_pilot", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    (run,) = results["runs"]
    assert run["drained"] and run["duplicates"] == 0
    assert run["server_cpu_s"] > 0  # the server's process was found by its port
    assert couch.password not in out.read_text()


def test_the_scale_case_adds_watches_and_starts_a_pilot_on_a_mostly_done_pool(tmp_path):
    """The scale part alone (``--reps 0``), scaled down from the 100,000 and 1,000,000
    tokens of the README's table to what CI can afford."""
    out = tmp_path / "scale.json"
    done = subprocess.run([str(ROOT / "bench" / "run"), "--reps", "0", "--scale", "1000",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [scale] = json.loads(out.read_text())["scale"]
    assert scale["n"] == 1000 and scale["status_todo"] == 100
    assert scale["new_pilot_succeeded"] == 1 and scale["new_pilot_requests"] > 0
    assert "a new pilot ran its first token" in done.stdout
