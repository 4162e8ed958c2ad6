#!/usr/bin/env python3
"""A pool of a million tokens on one CouchDB: adding it, watching it, and
pilots at its start and at its end.

    .venv/bin/python bench/million.py --url http://admin:pw@127.0.0.1:5984 --n 1000000 \\
        --json million.json --plot million.png

1. ``picas tokens add`` of N tokens (``--grid``): time, peak memory.
2. ``picas status``, cold right after the add and again warm.
3. *Start*: P pilots (``picas -vv pilot``) drain for ``--start-seconds``;
   each claim's latency and size come from their log, the server's CPU
   from /proc.
4. All but ``--rest`` of the tokens are then marked finished directly
   (``_bulk_docs``), as a long drain would leave them.
5. *End*: a new pilot's time to its first token (behind the finished
   ones in the changes feed), then P pilots drain the rest.

Claim latencies (median, 99th percentile) and tokens/s are reported for
the start and the end, so that a cost that grows with the pool shows.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import envs
from benchmark import listening_pids
from scale import finish_all_but
from views import server_cpu

from picas import frontier
from picas.database import Database
from picas.transport import Transport, split_credentials

HERE = Path(__file__).resolve().parent
PICAS = HERE.parent / ".venv" / "bin" / "picas"
CLAIM = re.compile(r"claim at ([\d.]+): (\d+) of (\d+) token\(s\) in ([\d.]+) ms")


def _env(url: str, database: str, workdir: Path) -> dict[str, str]:
    clean, user, password = split_credentials(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICAS_")}
    env.update(PICAS_URL=clean, PICAS_DATABASE=database, PICAS_USERNAME=user or "",
               PICAS_PASSWORD=password or "", PICAS_CONFIG=str(workdir / "none.yml"))
    return env


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, str, float]:
    """Seconds, stdout and the peak RSS (MiB) of a command."""
    before = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - before
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:])} failed: {done.stderr[-2000:]}")
    rss_kib = int(done.stderr.strip().splitlines()[-1])
    return seconds, done.stdout, rss_kib / 1024


def _pilots(count: int, env: dict[str, str], workdir: Path, phase: str,
            seconds: float | None, *extra: str) -> list[Path]:
    """Run ``count`` pilots until they end, or stop them after ``seconds``; their logs."""
    logs, procs = [], []
    for i in range(count):
        log = workdir / f"{phase}-pilot{i}.log"
        logs.append(log)
        with log.open("w") as handle:
            procs.append(subprocess.Popen([str(PICAS), "-vv", "pilot", "--json", *extra], env=env,
                                          stdout=subprocess.DEVNULL, stderr=handle,
                                          cwd=workdir, start_new_session=True))
    deadline = None if seconds is None else time.monotonic() + seconds
    for proc in procs:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=left)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.wait()
    return logs


def _claims(logs: list[Path]) -> list[tuple[float, int, float]]:
    """(time, tokens, latency ms) of every claim in the pilots' logs."""
    found = []
    for log in logs:
        for match in CLAIM.finditer(log.read_text()):
            found.append((float(match[1]), int(match[2]), float(match[4])))
    return sorted(found)


def _summary(claims: list[tuple[float, int, float]], cpu_s: float) -> dict:
    taken = [c for c in claims if c[1]]
    latencies = sorted(c[2] for c in taken)
    tokens = sum(c[1] for c in taken)
    span = (taken[-1][0] - taken[0][0]) if len(taken) > 1 else 0.0
    return {"claims": len(taken), "tokens": tokens,
            "tokens_per_s": round(tokens / span, 1) if span else None,
            "claim_ms_median": round(statistics.median(latencies), 1) if latencies else None,
            "claim_ms_p99": round(latencies[int(0.99 * (len(latencies) - 1))], 1)
            if latencies else None,
            "server_cpu_ms_per_token": round(1000 * cpu_s / tokens, 2) if tokens else None}


def _per_interval(claims: list[tuple[float, int, float]], t0: float, step: float = 10.0
                  ) -> list[tuple[float, float]]:
    buckets: dict[int, int] = {}
    for at, tokens, _ in claims:
        buckets[int((at - t0) // step)] = buckets.get(int((at - t0) // step), 0) + tokens
    return [(k * step, v / step) for k, v in sorted(buckets.items())]


def _first_claim_s(env: dict[str, str], workdir: Path, phase: str) -> float | None:
    """Seconds from starting a new pilot to its first claim of a token."""
    started = time.time()
    taken = [c for c in _claims(_pilots(1, env, workdir, phase, 120.0, "--max-tasks", "1"))
             if c[1]]
    return round(taken[0][0] - started, 2) if taken else None


def _late_tokens(db: Database, env: dict[str, str], workdir: Path, n: int) -> dict:
    """Tokens added once all others are finished sit behind all of them in the
    feed: a new pilot's time to the first of them, with the frontier the
    pilots left and without it (read from the start of the feed)."""
    out = {}
    for how in ("with_frontier", "without_frontier"):
        subprocess.run([str(PICAS), "tokens", "add", "--grid", f"late=1..{n}", "--grid",
                        "round=1..1", "--command", f"echo {how}"], env=env, check=True,
                       capture_output=True)
        if how == "without_frontier":
            current = db.find(frontier.FRONTIER_ID)
            if current:
                db.delete(frontier.FRONTIER_ID, current["_rev"])
        out[how + "_first_claim_s"] = _first_claim_s(env, workdir, how)
        _pilots(2, env, workdir, how + "-rest", None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--database", default="bench-million")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--pilots", type=int, default=8)
    parser.add_argument("--start-seconds", type=float, default=600.0)
    parser.add_argument("--rest", type=int, default=10_000,
                        help="tokens left todo for the end phase [10000]")
    parser.add_argument("--late", type=int, default=1000,
                        help="tokens added after all others finished [1000]")
    parser.add_argument("--skip-add", action="store_true", help="the database has the tokens")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/picas-million"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env = _env(args.url, args.database, args.workdir)
    transport = Transport(args.url)
    db = Database(transport, args.database)
    pid = next(iter(listening_pids(urlsplit(transport.url).port or 5984)), None)
    load = threading.Event()
    result: dict = {"n": args.n, "pilots": args.pilots, "server": transport.server_info()}
    loads: list[float] = []

    def sample_load() -> None:
        while not load.wait(10):
            loads.append(os.getloadavg()[0])

    threading.Thread(target=sample_load, daemon=True).start()
    if not args.skip_add:
        _timed([str(PICAS), "db", "create"], env)
        seconds, out, rss = _timed([str(PICAS), "tokens", "add", "--grid", f"i=1..{args.n}",
                                    "--command", "true", "--json"], env)
        result["add"] = {"seconds": round(seconds, 1), "peak_rss_mib": round(rss, 1),
                         **json.loads(out)}
        print(f"add: {seconds:.1f} s, peak RSS {rss:.0f} MiB", flush=True)
        seconds, out, rss = _timed([str(PICAS), "tokens", "add", "--grid", f"i=1..{args.n}",
                                    "--command", "true", "--json"], env)
        result["readd"] = {"seconds": round(seconds, 1), **json.loads(out)}
        print(f"re-add: {seconds:.1f} s", flush=True)
    for which in ("status_cold", "status_warm"):
        seconds, out, _ = _timed([str(PICAS), "status", "--json"], env)
        found = json.loads(out)
        result[which] = {"seconds": round(seconds, 2), "todo": found["todo"],
                         "views_note": found.get("views_note")}
        print(f"{which}: {seconds:.2f} s ({found.get('views_note') or 'views up to date'})",
              flush=True)
    cpu0, t0 = server_cpu(pid), time.time()
    start_claims = _claims(_pilots(args.pilots, env, args.workdir, "start",
                                   args.start_seconds))
    result["start"] = _summary(start_claims, server_cpu(pid) - cpu0)
    result["start"]["series"] = _per_interval(start_claims, t0)
    print(f"start: {result['start']}", flush=True)
    marked = finish_all_but(db, args.rest)
    result["marked_finished"] = marked
    print(f"marked {marked} finished directly", flush=True)
    result["new_pilot_first_claim_s"] = _first_claim_s(env, args.workdir, "first")
    print(f"a new pilot's first claim after {result['new_pilot_first_claim_s']} s", flush=True)
    cpu0, t2 = server_cpu(pid), time.time()
    end_claims = _claims(_pilots(args.pilots, env, args.workdir, "end", None))
    result["end"] = _summary(end_claims, server_cpu(pid) - cpu0)
    result["end"]["series"] = _per_interval(end_claims, t2)
    print(f"end: {result['end']}", flush=True)
    result["late"] = _late_tokens(db, env, args.workdir, args.late)
    print(f"late tokens behind the finished ones: {result['late']}", flush=True)
    load.set()
    result["load_average"] = {"mean": round(statistics.mean(loads), 1) if loads else None,
                              "max": max(loads) if loads else None}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        _plot(result, args.plot)


def _plot(result: dict, path: Path) -> None:
    """tokens/s over time for both phases, drawn by plot_million.py in the plot venv."""
    data = path.with_suffix(".series.json")
    data.write_text(json.dumps({"start": result["start"]["series"],
                                "end": result["end"]["series"],
                                "n": result["n"], "pilots": result["pilots"]}))
    python = envs.plot_python(path.with_suffix(".venv.log"))
    subprocess.run([str(python), str(HERE / "plot_million.py"), str(data), str(path)],
                   check=True)


if __name__ == "__main__":
    main()
