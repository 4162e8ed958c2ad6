#!/usr/bin/env python3
"""Exactly-once on a cluster: pilots spread over its nodes drain one pool.

    bench/race.py --url http://127.0.0.1:15984 --url http://127.0.0.1:25984 \\
        --url http://127.0.0.1:35984 --n 2000 --pilots 8 --runs 5

The pilots reach the nodes through a round-robin TCP balancer run here,
which passes over a node that does not accept connections.
Each run reports the executions, the tokens run more than once, the
tokens left with conflicting branches or locks in doubt (before and after
`picas recover`), and how the tokens ended. ``--kill-after S --kill-cmd
CMD`` runs CMD (say, one that kills a node) S seconds into each run.
``--busy`` keeps one core busy beside the cluster during each run.
``--sweep-after S`` starts one more pilot S seconds after the others
ended (on the first URL), for tokens whose pilot died with its node.
Credentials come from PICAS_USERNAME and PICAS_PASSWORD (a server admin's:
each run makes its own database).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from drain import OUR_PICAS, Target, add_tokens, count_executions, fresh_database, pilot_env, states  # noqa: E402

from picas import conflicts, overview  # noqa: E402
from picas.database import Database  # noqa: E402


class Balancer:
    """Round-robin TCP balancing over the nodes, as in front of a cluster."""

    def __init__(self, urls: list[str]) -> None:
        self.nodes = [(urlsplit(u).hostname, urlsplit(u).port) for u in urls]
        self._next = itertools.cycle(range(len(self.nodes)))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        for _ in range(len(self.nodes)):
            try:
                upstream = socket.create_connection(self.nodes[next(self._next)], timeout=2)
                break
            except OSError:
                continue
        else:
            client.close()
            return
        upstream.settimeout(None)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def one_run(urls: list[str], user: str, password: str, n: int, pilots: int, run: int,
            workdir: Path, kill_after: float | None, kill_cmd: str | None, busy: bool,
            sweep_after: float | None = None) -> dict:
    name = f"race-{int(time.time())}-r{run}"
    first = Target(urls[0], user, password, ())
    db = fresh_database(first, name)
    add_tokens(db, n)
    case = workdir / name
    case.mkdir(parents=True)
    sides = [case / f"side-{i}.txt" for i in range(pilots)]
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    procs = []
    started = time.monotonic()
    balancer = Balancer(urls)
    try:
        for i in range(pilots):
            env = pilot_env(Target(balancer.url, user, password, ()), name, sides[i],
                            case / "no-config.yml")
            with open(case / f"pilot-{i}.out", "wb") as out, \
                    open(case / f"pilot-{i}.err", "wb") as err:
                procs.append(subprocess.Popen(
                    [str(OUR_PICAS), "pilot", "--json", "--lease", "30",
                     "--workdir", str(case / f"w{i}")],
                    env=env, cwd=case, stdout=out, stderr=err, stdin=subprocess.DEVNULL))
        killed = False
        while any(p.poll() is None for p in procs):
            if kill_cmd and not killed and time.monotonic() - started >= (kill_after or 0):
                subprocess.run(kill_cmd, shell=True, check=False)
                killed = True
            time.sleep(0.1)
    finally:
        if burner is not None:
            burner.kill()
    seconds = time.monotonic() - started
    if sweep_after is not None:
        time.sleep(sweep_after)
        sides.append(case / "side-sweeper.txt")
        env = pilot_env(first, name, sides[-1], case / "no-config.yml")
        subprocess.run([str(OUR_PICAS), "pilot", "--workdir", str(case / "wsweep")], env=env,
                       cwd=case, check=False, capture_output=True)
    reports = []
    for i in range(pilots):
        lines = (case / f"pilot-{i}.out").read_text().strip().splitlines()
        reports.append(json.loads(lines[-1]) if lines else {
            "failure": (case / f"pilot-{i}.err").read_text().strip()[-300:]})
    runs = count_executions(sides)
    left_before = overview.needs_recovery(db)
    env = pilot_env(first, name, case / "unused.txt", case / "no-config.yml")
    subprocess.run([str(OUR_PICAS), "recover"], env=env, check=False, capture_output=True)
    left_after = overview.needs_recovery(db)
    branched = sum(1 for row in db.iter_all_docs()
                   if len(conflicts.live_leaves(db, row["id"])) > 1) if n <= 5000 else None
    result = {
        "run": run, "n": n, "pilots": pilots, "seconds": round(seconds, 1),
        "tokens_per_s": round(n / seconds, 1),
        "executions": sum(runs.values()), "tokens_run": len(runs),
        "duplicates": sum(runs.values()) - len(runs),
        "tokens_run_more_than_once": sum(1 for c in runs.values() if c > 1),
        "in_doubt_reported": sum(int(r.get("in_doubt", 0)) for r in reports),
        "pilot_failures": [r["failure"] for r in reports if "failure" in r],
        "needs_recovery_before": left_before, "needs_recovery_after": left_after,
        "documents_with_branches_after": branched, "states_after": states(db),
    }
    Database(db.transport, name).destroy()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", action="append", required=True, help="a node (repeat)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--pilots", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kill-after", type=float)
    parser.add_argument("--kill-cmd")
    parser.add_argument("--busy", action="store_true")
    parser.add_argument("--sweep-after", type=float)
    args = parser.parse_args()
    user, password = os.environ.get("PICAS_USERNAME"), os.environ.get("PICAS_PASSWORD")
    if not user or not password:
        parser.error("set PICAS_USERNAME and PICAS_PASSWORD (a server admin)")
    workdir = Path(tempfile.mkdtemp(prefix="picas-race-"))
    for run in range(args.runs):
        result = one_run(args.url, user, password, args.n, args.pilots, run, workdir,
                         args.kill_after, args.kill_cmd, args.busy, args.sweep_after)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
