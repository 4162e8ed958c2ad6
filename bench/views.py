#!/usr/bin/env python3
"""What indexing costs the server, per token written, for each design document.

A database gets N tokens as a drain leaves them (a third todo, a third
running, a third finished with an attempt record), with no design document.
Then each of picas's design documents is pushed alone and built, one after
the other, and the CPU the server spent on it (its own process and its
JavaScript processes, read from /proc) is divided by N: the cost of
indexing one changed token for that design document, which every write a
pilot makes (lock, renewal, result) pays again.

    .venv/bin/python bench/views.py --url http://admin:pw@127.0.0.1:5984 --n 100000

``--couchviews`` measures another layout of the views (for example an
earlier version's: ``git archive REV couchviews | tar -x -C /tmp/old``).
Only for a server on this machine (it reads /proc); give ``--server-pid``
when the server's port does not find it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchmark import listening_pids

from picas import designdocs, errors, state
from picas.database import Database
from picas.state import Holder, Outcome
from picas.token import blank
from picas.transport import Transport

TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of its children (living and reaped)."""
    total = 0.0
    for child in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += (utime + stime + (cutime + cstime if child == pid else 0)) / TICK
    return total


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        found.extend(int(c) for c in children)
        todo.extend(int(c) for c in children)
    return found


def _tokens(n: int) -> list[dict]:
    now = time.time()
    holder = Holder("bench-pilot", "node1", ("SLURM_JOB_ID", "1"))
    docs = []
    for i in range(n):
        token = blank(input={"i": i})
        token.update(_id=f"t-{i:09d}", command=f"run {i}")
        if i % 3 >= 1:
            token = state.lock(token, holder, 600.0, now)
        if i % 3 == 2:
            attempt = state.new_attempt(token, Outcome.SUCCEEDED, exit_code=0, end=now + 1,
                                        logs=[f"logs/{i}/stdout", f"logs/{i}/stderr"],
                                        max_rss_kb=1024, cpu_s=0.5)
            token = state.finish(token, attempt, now=now + 1)
        docs.append(token)
    return docs


def measure(db: Database, n: int, server_pid: int, root: Path | None = None,
            batch: int = 2000) -> dict:
    with contextlib.suppress(errors.DatabaseNotFound):
        db.destroy()
    db.create()
    docs = _tokens(n)
    for start in range(0, n, batch):
        db.bulk_docs(docs[start:start + batch])
    result = {"n": n, "designs": {}}
    designs = designdocs.load(root)
    for design, doc in designs.items():
        cpu0, t0 = server_cpu(server_pid), time.perf_counter()
        db.put({"_id": f"_design/{design}", **doc})
        first = next(iter(doc["views"]))
        db.transport.timeout = (5.0, 3600.0)
        db.view(design, first, limit=0)
        seconds, cpu = time.perf_counter() - t0, server_cpu(server_pid) - cpu0
        views = len(doc["views"])
        result["designs"][design] = {
            "views": views, "build_s": round(seconds, 2),
            "server_cpu_s": round(cpu, 2), "cpu_ms_per_token": round(1000 * cpu / n, 3),
            "tokens_per_s": round(n / seconds)}
        print(f"{design:<8} {views:>2} views: {seconds:6.1f} s, server CPU {cpu:6.1f} s = "
              f"{1000 * cpu / n:.3f} ms per token ({n / seconds:,.0f} tokens/s)", flush=True)
    db.destroy()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="http://USER:PASSWORD@HOST:PORT")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--database", default="bench-views")
    parser.add_argument("--couchviews", type=Path,
                        help="design documents from this folder [picas's own]")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    transport = Transport(args.url)
    pid = args.server_pid or next(iter(listening_pids(urlsplit(transport.url).port or 5984)),
                                  None)
    if pid is None:
        raise SystemExit("cannot find the server's process: give --server-pid")
    result = measure(Database(transport, args.database), args.n, pid, args.couchviews)
    result["server"] = transport.server_info().get("version")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
