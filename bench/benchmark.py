"""Throughput of picas against upstream PiCaS 1.1.2, in one run on one local server.

See README.md beside this file for what each number means. The order of
the cases is interleaved (every repetition goes through every pilot count,
and the implementations take turns going first) so that a change in the
load of the shared machine hits all implementations alike.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import envs
from drain import (
    IMPLEMENTATIONS,
    OURS_ACTOR,
    OURS_PILOT,
    ROOT,
    UPSTREAM,
    CaseResult,
    Target,
    bulk_write_rate,
    run_case,
)
from scale import run_scale

from picas import server
from picas.transport import mask_url, split_credentials

OURS = (OURS_PILOT, OURS_ACTOR)
LABELS = {OURS_PILOT: "picas pilot", OURS_ACTOR: "picas RunActor", UPSTREAM: "upstream 1.1.2"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description="Drain trivial tokens with picas and with upstream "
        "PiCaS 1.1.2 on one local pouchdb-server, and measure the server's limit and "
        "picas at scale.")
    parser.add_argument("--n", type=int, default=2000, help="tokens per case [2000]")
    parser.add_argument("--pilots", default="1,2,4,8",
                        help="pilot process counts, comma-separated [1,2,4,8]")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; medians are "
                        "reported; 0 runs the scale part only [3]")
    parser.add_argument("--scale", type=int, default=100_000, help="tokens for the scale "
                        "part; 0 skips it [100000]")
    parser.add_argument("--scale-reps", type=int, default=1, help="repetitions of the "
                        "scale part, which takes minutes each [1]")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS),
                        help=f"which to run [{','.join(IMPLEMENTATIONS)}]")
    parser.add_argument("--json", dest="json_out", type=Path, help="write the results here")
    parser.add_argument("--plot", type=Path, help="write a PNG of tokens/s against pilots here")
    parser.add_argument("--url", help="measure on this CouchDB instead of a local "
                        "pouchdb-server, e.g. http://127.0.0.1:5984 (credentials from the "
                        "URL or PICAS_USERNAME and PICAS_PASSWORD; the user must be a server "
                        "admin, as every case makes its own database)")
    parser.add_argument("--server-pid", type=int, action="append", default=[],
                        help="a process of the --url server whose CPU time to count "
                        "(repeat for each node of a cluster) [found by its port when it "
                        "listens on this machine]")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (pilot "
                        "output, side files, server log) even when everything went well")
    args = parser.parse_args(argv)
    try:
        args.pilot_counts = sorted({int(p) for p in args.pilots.split(",") if p.strip()})
    except ValueError:
        parser.error(f"--pilots takes whole numbers separated by commas, not {args.pilots!r}")
    args.implementations = [i.strip() for i in args.implementations.split(",") if i.strip()]
    unknown = set(args.implementations) - set(IMPLEMENTATIONS)
    if unknown:
        parser.error(f"unknown implementation(s): {', '.join(sorted(unknown))}")
    if args.n < 1 or args.reps < 0 or args.scale < 0 or args.scale_reps < 1 \
            or not args.pilot_counts or min(args.pilot_counts) < 1 \
            or not (args.reps or args.scale):
        parser.error("--n, --scale-reps and every pilot count must be at least 1, --reps and "
                     "--scale at least 0, and not both 0")
    if not args.reps:
        args.pilot_counts = []  # the scale part only
    return args


def _git(*argv: str) -> str:
    done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip()


def external_target(url: str, pids: list[int]) -> Target:
    """The server given by --url, with its processes for the CPU figures."""
    clean, user, password = split_credentials(url)
    user = user or os.environ.get("PICAS_USERNAME")
    password = password or os.environ.get("PICAS_PASSWORD")
    if not user or not password:
        raise SystemExit("--url needs an admin's credentials: in the URL, or in "
                         "PICAS_USERNAME and PICAS_PASSWORD")
    found = tuple(pids) or listening_pids(urlsplit(clean).port or 5984)
    if not found:
        print(f"note: no process listening on {clean} found here; server CPU reads 0",
              flush=True)
    return Target(clean, user, password, found)


def listening_pids(port: int) -> tuple[int, ...]:
    """The processes on this machine that listen on a TCP port (needs the rights to
    read their /proc entries, as root has)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    pids = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.add(int(fd_dir.parent.name))
                    break
        except OSError:
            continue
    return tuple(sorted(pids))


def source_state() -> dict:
    """Which picas is measured: pilots import it afresh in every case, so a tree
    that changes during the run mixes versions; comparing start and end shows it."""
    diff = _git("diff", "HEAD", "--", "picas", "couchviews")
    return {"commit": _git("rev-parse", "HEAD"), "uncommitted_changes": bool(diff),
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest()}


def machine(source: dict) -> dict:
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "load_average": os.getloadavg(), **source,
            "picas_changed_during_run": source != source_state()}


def server_name(target: Target) -> str:
    """What the server says it is, for the results (no credentials)."""
    info = target.transport().request("GET", [""])
    vendor = info.get("vendor", {}).get("name", "CouchDB")
    return f"{vendor} {info.get('version', '?')} at {target.url}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarize(runs: list[CaseResult], bulk_rates: list[float], pilot_counts: list[int],
              implementations: list[str]) -> dict:
    """Medians per pilot count and implementation; duplicates as the worst repetition."""
    bulk = _median(bulk_rates)
    limit = bulk / 2
    summary: dict[str, dict] = {}
    for pilots in pilot_counts:
        per: dict[str, list[CaseResult]] = {
            impl: [r for r in runs if r.pilots == pilots and r.implementation == impl]
            for impl in implementations}

        def each(metric: str, how: Callable[[list], float] = _median,
                 per: dict[str, list[CaseResult]] = per) -> dict[str, float]:
            return {impl: how([getattr(r, metric) for r in rs]) for impl, rs in per.items() if rs}

        tokens_per_s = each("tokens_per_s")
        upstream = tokens_per_s.get(UPSTREAM)
        summary[str(pilots)] = {
            "tokens_per_s": tokens_per_s,
            "ratio_vs_upstream": {impl: tokens_per_s[impl] / upstream
                                  for impl in OURS if impl in tokens_per_s and upstream},
            "requests_per_token": each("requests_per_token"),
            "conflicts": each("conflicts"),
            "duplicates": each("duplicates", max),
            "tokens_run_more_than_once": each("tokens_run_more_than_once", max),
            "server_cpu_s_per_token": each("server_cpu_s_per_token"),
            "pilot_cpu_s_per_token": each("pilot_cpu_s_per_token"),
            "server_limit_tokens_per_s": limit,
            "fraction_of_server_limit": {impl: v / limit for impl, v in tokens_per_s.items()
                                         if limit},
            "all_drained": {impl: all(r.drained for r in rs) for impl, rs in per.items() if rs},
            "tokens_per_s_per_rep": {impl: [r.tokens_per_s for r in rs]
                                     for impl, rs in per.items() if rs},
        }
    return summary


def table(results: dict) -> str:
    head = (f"{'pilots':>6}  {'implementation':<15} {'tokens/s':>9} {'range':>13} "
            f"{'x upstream':>10} {'req/token':>9} {'conflicts':>9} {'dup':>4} {'dup tok':>7} "
            f"{'srv ms/tok':>10} {'pilot ms/tok':>12} {'% limit':>7}")
    lines = [head, "-" * len(head)]
    for pilots, row in results["pilots"].items():
        for impl, rate in row["tokens_per_s"].items():
            reps = row["tokens_per_s_per_rep"][impl]
            ratio = row["ratio_vs_upstream"].get(impl)
            drained = "" if row["all_drained"][impl] else "  NOT DRAINED"
            lines.append(
                f"{pilots:>6}  {LABELS[impl]:<15} {rate:>9.1f} "
                f"{f'{min(reps):.0f}-{max(reps):.0f}':>13} "
                f"{f'{ratio:.1f}x' if ratio else '':>10} {row['requests_per_token'][impl]:>9.2f} "
                f"{row['conflicts'][impl]:>9.0f} {row['duplicates'][impl]:>4} "
                f"{row['tokens_run_more_than_once'][impl]:>7} "
                f"{row['server_cpu_s_per_token'][impl] * 1000:>10.2f} "
                f"{row['pilot_cpu_s_per_token'][impl] * 1000:>12.2f} "
                f"{row['fraction_of_server_limit'][impl] * 100:>6.1f}%{drained}")
    limit = results["server_limit"]
    if results["pilots"]:
        lines.append("")
        lines.append(f"server limit: _bulk_docs {limit['bulk_docs_per_s']:.0f} docs/s (median "
                     f"of {len(limit['bulk_docs_per_s_per_rep'])}) -> "
                     f"{limit['server_limit_tokens_per_s']:.0f} tokens/s at two writes per token")
    else:
        lines = []  # the scale part only
    for scale in results.get("scale", []):
        lines.append(f"scale: {scale['n']} tokens added by `picas tokens add` in "
                     f"{scale['add_s']:.1f} s ({scale['add_tokens_per_s']:.0f}/s), again (adds "
                     f"nothing) in {scale['readd_s']:.1f} s; with 90% finished, `picas "
                     f"status` {scale['status_cold_s']:.2f} s cold, "
                     f"{scale['status_warm_s']:.2f} s warm; a new pilot ran its first token "
                     f"in {scale['new_pilot_s']:.2f} s with {scale['new_pilot_requests']} "
                     "requests")
    return "\n".join(lines)


def _print_case(result: CaseResult, pilots: int, impl: str) -> None:
    note = "" if result.drained else f" NOT DRAINED {result.states}"
    failures = f" ({'; '.join(result.pilot_failures)})" if result.pilot_failures else ""
    print(f"  {pilots} x {LABELS[impl]:<15} {result.tokens_per_s:8.1f} tokens/s "
          f"{result.requests_per_token:5.2f} req/token "
          f"{result.conflicts:4d} conflicts {result.duplicates:3d} duplicates"
          f"{note}{failures}", flush=True)


def _run_scales(target: Target, args: argparse.Namespace, workdir: Path) -> list[dict]:
    scales = []
    for rep in range(args.scale_reps if args.scale else 0):
        scales.append(run_scale(target, args.scale, rep, workdir,
                                timeout=600 + args.scale * 0.01))
        print(f"scale rep {rep + 1}: {scales[-1]}", flush=True)
    return scales


def _start_target(args: argparse.Namespace, local: server.LocalServer | None) -> Target:
    """The server to measure: the one given by URL, or ``local`` started now."""
    if local is None:
        return external_target(args.url, args.server_pid)
    local.start()
    password = secrets.token_hex(12)
    server.ensure_admin(local.url, "admin", password)
    return Target(local.url, "admin", password, (local.process.pid,))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="picas-bench-"))
    upstream_python = envs.upstream_python(workdir / "upstream-venv.log") \
        if UPSTREAM in args.implementations else Path()
    envs.byte_compile_ours()
    print(f"work folder: {workdir} (removed at the end if all went well)", flush=True)
    local = None if args.url else server.LocalServer(log_path=workdir / "pouchdb-server.log")
    runs: list[CaseResult] = []
    bulk_rates: list[float] = []
    scales: list[dict] = []
    ok = False
    started = time.monotonic()
    load_before = os.getloadavg()
    source = source_state()
    try:
        target = _start_target(args, local)
        timeout = 60 + args.n * 0.25
        for rep in range(args.reps):
            bulk_rates.append(bulk_write_rate(target, rep))
            print(f"rep {rep + 1}/{args.reps}: _bulk_docs {bulk_rates[-1]:.0f} docs/s", flush=True)
            for turn, pilots in enumerate(args.pilot_counts):
                shift = (rep + turn) % len(args.implementations)
                order = args.implementations[shift:] + args.implementations[:shift]
                for impl in order:
                    if local is not None and not local.alive():
                        raise SystemExit(f"pouchdb-server died: see {workdir}/pouchdb-server.log")
                    result = run_case(target, impl, pilots, args.n, rep, workdir,
                                      upstream_python, timeout)
                    runs.append(result)
                    _print_case(result, pilots, impl)
        scales = _run_scales(target, args, workdir)
        ok = all(r.drained and not r.pilot_failures for r in runs if r.implementation in OURS)
    finally:
        if local is not None:
            local.stop()
    bulk = _median(bulk_rates)
    results = {
        "config": {"n": args.n, "pilots": args.pilot_counts, "reps": args.reps,
                   "scale": args.scale, "scale_reps": args.scale_reps if args.scale else 0,
                   "implementations": args.implementations,
                   "server": server_name(target) if args.url else "pouchdb-server --in-memory",
                   "command": " ".join(["bench/run", *(mask_url(a) if "://" in a else a for a in (
                       sys.argv[1:] if argv is None else argv))])},
        "machine": {**machine(source), "load_average_before": load_before},
        "seconds": round(time.monotonic() - started, 1),
        "server_limit": {"bulk_docs_per_s": bulk, "bulk_docs_per_s_per_rep": bulk_rates,
                         "server_limit_tokens_per_s": bulk / 2},
        "pilots": summarize(runs, bulk_rates, args.pilot_counts, args.implementations),
        "scale": scales,
        "runs": [r.as_dict() for r in runs],
    }
    print()
    print(table(results))
    if results["machine"]["picas_changed_during_run"]:
        print("warning: picas/ or couchviews/ changed during the run: the cases measured "
              "different code")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot_python = envs.plot_python(workdir / "plot-venv.log")
        with tempfile.NamedTemporaryFile("w", suffix=".json") as data:
            json.dump(results, data)
            data.flush()
            subprocess.run([str(plot_python), str(Path(__file__).with_name("plot.py")),
                            data.name, str(args.plot)], check=True)
    if ok and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work folder kept: {workdir}")
    return 0 if ok else 1
