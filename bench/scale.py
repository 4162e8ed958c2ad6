"""Scale: adding many tokens with the CLI, and ``picas status`` over them.

Both are timed as a person would see them: the whole CLI process, from
start to exit. The first ``picas status`` has to index every token for the
views it reads (cold); the second finds the indexes up to date (warm).
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from drain import OUR_PICAS, Target, fresh_database, pilot_env


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
    cold_s, status = _timed([picas, "status", "--json"], env, case_dir, timeout)
    warm_s, _ = _timed([picas, "status", "--json"], env, case_dir, timeout)
    db.destroy()
    return {"n": n, "rep": rep, "add_s": add_s, "add_tokens_per_s": n / add_s,
            "status_cold_s": cold_s, "status_warm_s": warm_s, "status_todo": status.get("todo")}
