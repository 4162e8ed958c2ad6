"""What the pilot needs to know from Slurm, read through its own commands."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Mapping


def allocation_end(environ: Mapping[str, str] | None = None) -> float | None:
    """Epoch seconds when this Slurm job's time limit ends; None outside Slurm or unlimited.

    Slurm sets no variable with the end time, so ask ``squeue``.
    """
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID")
    if not job_id or shutil.which("squeue") is None:
        return None
    try:
        answer = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%e %l"],
                                env={**os.environ, "SLURM_TIME_FORMAT": "%s"},
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    fields = answer.stdout.split()
    if answer.returncode != 0 or len(fields) != 2 or fields[1] == "UNLIMITED":
        return None
    try:
        return float(fields[0])
    except ValueError:
        return None
