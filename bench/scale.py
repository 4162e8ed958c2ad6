"""Scale: adding many tokens with the CLI, ``picas status`` over them, and a
new pilot in a pool that is mostly done.

All are timed as a person would see them: the whole CLI process, from
start to exit. ``tokens add`` of N tokens, then the same again (which adds
nothing); then 90% of them are marked finished directly, as a long drain
leaves them; the first ``picas status`` after that finds the views behind
(cold), the second up to date (warm); last, a new ``picas pilot`` runs one
token, and its requests are counted.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from drain import OUR_PICAS, Target, fresh_database, pilot_env

from picas import state
from picas.database import Database
from picas.state import Holder, Outcome


def _timed(argv: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[1:])} failed ({done.returncode}): "
                         f"{done.stderr.strip()[-2000:]}")
    return seconds, json.loads(done.stdout)


def run_scale(target: Target, n: int, rep: int, workdir: Path, timeout: float) -> dict:
    """Seconds to add ``n`` tokens with `picas tokens add`, then to run `picas status` twice."""
    name = f"bench-scale-r{rep}"
    case_dir = workdir / name
    case_dir.mkdir(parents=True, exist_ok=True)
    db = fresh_database(target, name)
    env = pilot_env(target, name, case_dir / "unused-side.txt", case_dir / "no-config.yml")
    picas = str(OUR_PICAS)
    add_s, added = _timed([picas, "tokens", "add", "--grid", f"i=1..{n}", "--command", "true",
                           "--json"], env, case_dir, timeout)
    if added.get("added") != n:
        raise SystemExit(f"picas tokens add added {added.get('added')} of {n} tokens: {added}")
    readd_s, _ = _timed([picas, "tokens", "add", "--grid", f"i=1..{n}", "--command", "true",
                         "--json"], env, case_dir, timeout)
    finish_all_but(db, n // 10)
    cold_s, status = _timed([picas, "status", "--json"], env, case_dir, timeout)
    warm_s, _ = _timed([picas, "status", "--json"], env, case_dir, timeout)
    pilot_s, pilot = _timed([picas, "pilot", "--max-tasks", "1", "--json"], env, case_dir,
                            timeout)
    db.destroy()
    return {"n": n, "rep": rep, "add_s": add_s, "add_tokens_per_s": n / add_s,
            "readd_s": readd_s, "status_cold_s": cold_s, "status_warm_s": warm_s,
            "status_todo": status.get("todo"), "views_note": status.get("views_note"),
            "new_pilot_s": pilot_s, "new_pilot_requests": pilot.get("requests"),
            "new_pilot_succeeded": (pilot.get("outcomes") or {}).get("succeeded", 0)}


def finish_all_but(db: Database, rest: int, batch: int = 2000) -> int:
    """Mark todo tokens finished directly, leaving ``rest`` todo; return how many."""
    holder = Holder("bench-direct", "bench")
    marked, keep = 0, rest
    chunk: list[dict] = []
    for row in db.iter_all_docs(page=batch, include_docs=True):
        doc = row.get("doc") or {}
        if state.classify(doc) is not state.TokenState.TODO:
            continue
        if keep:
            keep -= 1
            continue
        locked = state.lock(doc, holder, 60.0)
        chunk.append(state.finish(locked, state.new_attempt(locked, Outcome.SUCCEEDED,
                                                            exit_code=0)))
        if len(chunk) == batch:
            db.bulk_docs(chunk)
            marked += len(chunk)
            chunk = []
    if chunk:
        db.bulk_docs(chunk)
        marked += len(chunk)
    return marked
