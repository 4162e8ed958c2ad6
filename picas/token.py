"""What a token is: its type, its fields, and a new one's starting values.

A token is a CouchDB document, so it is a dict. It is not a TypedDict
because upstream PiCaS scripts put any field they like on their tokens
(and a pilot's job id goes in a field named after the batch system), and
no type can list those. ``Token`` names the dicts that are tokens, and
the fields picas itself reads or writes are listed here once.
"""
from __future__ import annotations

import copy
from typing import Any

#: A token document. Fields, by who writes them:
#:
#: * CouchDB: ``_id``, ``_rev``, ``_attachments`` (logs), ``_conflicts``, ``_deleted``
#: * upstream PiCaS (and the views): ``type`` ("token"), ``lock`` and ``done``
#:   (the state, as epoch seconds or markers), ``hostname``, ``scrub_count``,
#:   ``input``, ``exit_code``, ``output``, ``uploads``, ``error``
#: * ``picas tokens add``: ``command`` (or ``function`` with ``args`` and
#:   ``kwargs``), ``env``, ``priority``, ``tags``, ``max_attempts``,
#:   ``expected_runtime``, ``files``, ``inputs``, ``outputs``, ``stdin``,
#:   ``after`` (ids it waits for) and, on its parents, ``dependents``
#: * releases (:mod:`picas.dependencies`): ``waiting_for``, ``blocked_by``
#: * pilots and state changes: ``lease`` (id, pilot, host, job_id, attempt,
#:   claimed, expires, in_doubt), ``attempts`` (one record per lease),
#:   ``cancel_requested``, ``retry_base``, ``outputs_skipped``, and a job id field
#:   (:data:`picas.jobid.JOB_ID_FIELDS`)
Token = dict[str, Any]

#: The fields a new token starts with: upstream's, so that its views and
#: scripts see a token they know.
BLANK: Token = {
    "type": "token",
    "lock": 0,
    "done": 0,
    "hostname": "",
    "scrub_count": 0,
    "input": {},
    "exit_code": "",
    "output": {},
    "uploads": {},
    "error": [],
}


def blank(**fields: Any) -> Token:
    """A new todo token: :data:`BLANK` (copied) with ``fields`` on top."""
    return {**copy.deepcopy(BLANK), **fields}
