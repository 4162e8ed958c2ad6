"""How long after a token is done does its future resolve?

Submits N trivial command tokens through ``picas.Pool``, drains them with
real ``picas pilot`` processes, and compares, per token, the moment its
future resolved (a done callback, in the pool's feed thread) with

* the token's own ``done`` field: the time the result was written, in
  whole seconds (so this figure overstates the delay by up to a second),
* the last attempt's ``end``: when the command ended, to the millisecond
  (this one includes the pilot's buffering of results before it writes).

    .venv/bin/python bench/futures_latency.py --n 1000 --pilots 2
    .venv/bin/python bench/futures_latency.py --url http://USER:PASS@HOST:PORT

Without ``--url`` a local pouchdb-server is started (and stopped) for the run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from picas import designdocs, server
from picas.database import Database
from picas.futures import Pool, wait
from picas.transport import Transport, split_credentials

ROOT = Path(__file__).resolve().parent.parent


def summary(delays: list[float]) -> dict:
    ordered = sorted(delays)
    return {"median_s": round(statistics.median(ordered), 4),
            "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 4),
            "worst_s": round(ordered[-1], 4), "best_s": round(ordered[0], 4)}


def measure(url: str, username: str, password: str, n: int, pilots: int) -> dict:
    db = Database(Transport(url, username, password), f"futures_bench_{uuid.uuid4().hex[:8]}")
    db.create()
    designdocs.push(db)
    resolved: dict[str, float] = {}
    pool = Pool(db)
    try:
        futures = [pool.submit("true", i=i) for i in range(n)]
        for future in futures:
            future.add_done_callback(lambda f: resolved.setdefault(f.token_id, time.time()))
        env = {**os.environ, "PICAS_URL": url, "PICAS_DATABASE": db.name,
               "PICAS_USERNAME": username, "PICAS_PASSWORD": password}
        env.pop("PICAS_CONFIG", None)
        with tempfile.TemporaryDirectory() as work:
            procs = [subprocess.Popen([sys.executable, "-m", "picas", "pilot", "--workdir",
                                       f"{work}/{i}"], env=env, stdout=subprocess.DEVNULL)
                     for i in range(pilots)]
            for proc in procs:
                proc.wait()
        left = wait(futures, timeout=120).not_done
        pool.shutdown(wait=False)
        feed_requests = pool._watcher.feed_db.transport.request_count
        docs = [row["doc"] for row in db.iter_all_docs(include_docs=True)
                if not row["id"].startswith("_design/")]
    finally:
        pool.shutdown(wait=False)
        db.destroy()
    by_done, by_end = [], []
    for doc in docs:
        if doc["_id"] not in resolved:
            continue
        by_done.append(resolved[doc["_id"]] - doc["done"])
        by_end.append(resolved[doc["_id"]] - doc["attempts"][-1]["end"])
    # The result was written after the command ended and within the second
    # that ``done`` names: each figure bounds the delay from above, and the
    # smaller of the two is the tighter bound; ``done`` + 1 s bounds it from below.
    tighter = [min(a, b) for a, b in zip(by_done, by_end, strict=True)]
    return {"n": n, "pilots": pilots, "resolved": len(resolved), "unresolved": len(left),
            "server": url, "since_done_field": summary(by_done),
            "since_command_end": summary(by_end), "at_most": summary(tighter),
            "at_least": summary([max(0.0, d - 1) for d in by_done]),
            "feed_requests": feed_requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a CouchDB with admin credentials in the URL "
                                      "(default: a local pouchdb-server)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--pilots", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    local = None
    if args.url:
        url, username, password = split_credentials(args.url)
    else:
        local = server.LocalServer().start()
        url, username, password = local.url, "admin", "bench"
        server.ensure_admin(url, username, password)
    try:
        result = measure(url, username or "", password or "", args.n, args.pilots)
    finally:
        if local is not None:
            local.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
