"""Dependencies at scale: does a claim cost more when many tokens wait?

Three pools, each drained by one in-process pilot loop that uses the real
claim (the changes feed, as ``picas pilot`` does by default) and the real
result writer (which releases the dependents), with no command run:

* ``chains``: C chains of L tokens (each waits for the one before);
* ``fan-in``: N tokens, and one more that waits for all of them;
* ``flat``: C * L tokens without dependencies, for comparison.

For each it reports the seconds to add and to drain, and the requests
per token: of the claims (what a pilot pays to find work) and of the
result writes (which include the releases). The claims are also reported
per tenth of the drain, while the number of waiting tokens falls from
nearly all to none: if a claim read waiting tokens, its cost would fall
with them.

    .venv/bin/python bench/deps.py                         # a local pouchdb-server
    .venv/bin/python bench/deps.py --url http://USER:PW@HOST:5984 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from picas import (  # noqa: E402
    adding,
    claim,
    dependencies,
    designdocs,
    results,
    server,
    shaping,
    state,
)
from picas.database import Database  # noqa: E402
from picas.sources import Record  # noqa: E402
from picas.state import Holder, Outcome  # noqa: E402
from picas.transport import Transport, split_credentials  # noqa: E402


def chains(count: int, length: int) -> list[Record]:
    records = []
    for c in range(count):
        for i in range(length):
            fields: dict = {"_id": f"c{c}-{i}", "command": "true"}
            if i:
                fields["after"] = [f"c{c}-{i - 1}"]
            records.append(Record(fields, f"chain {c}"))
    return records


def fan_in(n: int) -> list[Record]:
    parents = [Record({"_id": f"p{i}", "command": "true"}, "parent") for i in range(n)]
    return [*parents, Record({"_id": "merge", "command": "true",
                              "after": [f"p{i}" for i in range(n)]}, "merge")]


def flat(n: int) -> list[Record]:
    return [Record({"_id": f"f{i}", "command": "true"}, "flat") for i in range(n)]


def drain(db: Database, total: int, batch: int) -> dict:
    """Claim and finish every token; count the requests of each part."""
    holder = Holder.here("bench")
    source = claim.ChangesSource()
    writer = results.ResultWriter(db, None)
    transport = db.transport
    finished = claim_requests = write_requests = claims = 0
    tenths: list[dict] = []
    mark = {"finished": 0, "claim_requests": 0, "time": time.perf_counter()}
    started = time.perf_counter()
    while finished < total:
        before = transport.request_count
        got = claim.claim(db, holder, limit=batch, source=source)
        claim_requests += transport.request_count - before
        claims += 1
        if not got.tokens:
            raise SystemExit(f"nothing to claim with {total - finished} tokens left: "
                             "a release was lost")
        for token in got.tokens:
            attempt = state.new_attempt(token, Outcome.SUCCEEDED, exit_code=0)
            writer.add(token, results.Result(token["_id"], state.lease_id(token), attempt))
        before = transport.request_count
        writer.flush()
        write_requests += transport.request_count - before
        finished += len(got.tokens)
        if finished - mark["finished"] >= total / 10 or finished == total:
            now = time.perf_counter()
            done_here = finished - mark["finished"]
            tenths.append({"finished": finished,
                           "claim_requests_per_token": round(
                               (claim_requests - mark["claim_requests"]) / done_here, 3),
                           "tokens_per_s": round(done_here / (now - mark["time"]), 1)})
            mark = {"finished": finished, "claim_requests": claim_requests, "time": now}
    seconds = time.perf_counter() - started
    return {"drain_s": round(seconds, 1), "tokens_per_s": round(total / seconds, 1),
            "claims": claims,
            "claim_requests_per_token": round(claim_requests / total, 3),
            "write_requests_per_token": round(write_requests / total, 3),
            "by_tenth": tenths}


def case(transport: Transport, name: str, records: list[Record], batch: int) -> dict:
    db = Database(transport, f"bench-deps-{name}-{int(time.time())}")
    db.create()
    try:
        designdocs.push(db)
        started = time.perf_counter()
        tokens = shaping.build(records)
        added = adding.add(db, tokens)
        add_s = time.perf_counter() - started
        if added.added != len(tokens):
            raise SystemExit(f"{name}: added {added.added} of {len(tokens)}")
        result = {"case": name, "tokens": len(tokens), "gates": added.gates, "batch": batch,
                  "add_s": round(add_s, 1), **drain(db, len(tokens), batch)}
        left = {row["key"]: row["value"] for row in
                db.view("Monitor", "overview_total", group=True)["rows"]}
        if left != {"done": len(tokens) + added.gates}:
            raise SystemExit(f"{name}: not all done: {left}")
        return result
    finally:
        db.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a CouchDB with admin credentials [a new local "
                                      "pouchdb-server]")
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--fan-in", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="tokens per claim")
    parser.add_argument("--cases", default="chains,fan-in,flat")
    parser.add_argument("--gate-size", type=int, default=dependencies.GATE_SIZE,
                        help="most tokens one waits for directly (huge: no gates)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    dependencies.GATE_SIZE = args.gate_size
    local = None
    if args.url:
        transport = Transport(*split_credentials(args.url))
    else:
        local = server.LocalServer().start()
        server.ensure_admin(local.url, "admin", "secret")
        transport = Transport(local.url, "admin", "secret")
    pools = {"chains": lambda: chains(args.chains, args.length),
             "fan-in": lambda: fan_in(args.fan_in),
             "flat": lambda: flat(args.chains * args.length)}
    found = []
    try:
        for name in args.cases.split(","):
            result = {**case(transport, name, pools[name](), args.batch),
                      "gate_size": args.gate_size}
            print(json.dumps(result), flush=True)
            found.append(result)
    finally:
        if local is not None:
            local.stop()
    if args.json:
        where = split_credentials(args.url)[0] if args.url else "pouchdb-server (local)"
        args.json.write_text(json.dumps({"server": where, "cases": found}, indent=1) + "\n")


if __name__ == "__main__":
    main()
