"""Which batch job is this? Read from the batch system's environment.

Layered systems (gLite on CREAM on PBS) set several variables; the
outermost one is the id users look up, so it wins. As in upstream PiCaS,
a gLite WMS job whose id is not a URL still counts as one: its id is
recorded as None, and the systems beneath it are not asked.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

#: Token fields that hold a job id, one per batch system.
JOB_ID_FIELDS = ("dirac_job_id", "wms_job_id", "cream_job_id", "pbs_job_id", "slurm_job_id")


def current_job_id(environ: Mapping[str, str] | None = None) -> tuple[str, str | None] | None:
    """``(field, id)`` for the batch job we run in, or None outside one."""
    env = os.environ if environ is None else environ
    if env.get("DIRACJOBID"):
        return "dirac_job_id", env["DIRACJOBID"]
    if "GLITE_WMS_JOBID" in env:
        wms = env["GLITE_WMS_JOBID"]
        return "wms_job_id", wms if wms.startswith("http") else None
    if env.get("CREAM_JOBID"):
        return "cream_job_id", env["CREAM_JOBID"]
    if env.get("PBS_JOBID"):
        return "pbs_job_id", env["PBS_JOBID"]
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return "slurm_job_id", f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if env.get("SLURM_JOB_ID"):
        return "slurm_job_id", env["SLURM_JOB_ID"]
    return None


def add_job_id(doc: MutableMapping, environ: Mapping[str, str] | None = None) -> None:
    """Record the current batch job id on ``doc`` (upstream PiCaS field names)."""
    found = current_job_id(environ)
    if found is not None:
        doc[found[0]] = found[1]


def remove_job_id(doc: MutableMapping) -> None:
    """Forget every batch job id recorded on ``doc``."""
    for field in JOB_ID_FIELDS:
        doc.pop(field, None)
