"""A pilot written against upstream PiCaS 1.1.2, the way its documentation shows.

It runs in the benchmark's own venv, which holds ``picas==1.1.2`` from PyPI
and never this project's picas. The benchmark needs two numbers that
upstream does not keep, so this script counts them from outside upstream's
code, without changing what upstream sends:

* HTTP requests: every call of ``couchdb.http.Session.request``, the one
  place where CouchDB-Python sends a request (a redirect is a call of its own).
* claim conflicts: a ``ResourceConflict`` raised by ``CouchDB.save`` while
  the iterator claims a task (``TaskViewIterator.claim_task``, whose loop
  saves the locked token and tries another on a conflict). A conflict on the
  actor's own result write is counted apart, as a result conflict.

Connection settings come from PICAS_URL, PICAS_DATABASE, PICAS_USERNAME and
PICAS_PASSWORD. The token's command reads its id from PICAS_TOKEN_ID, which
this script sets before running it (upstream has no such variable). One JSON
line goes to stdout at the end.
"""
import importlib.metadata
import json
import logging
import os
import sys
import time

import couchdb.http
from couchdb.http import ResourceConflict
from example_actor import ExampleActor

import picas
from picas.clients import CouchDB
from picas.documents import Task
from picas.iterators import TaskViewIterator
from picas.modifiers import BasicTokenModifier

# upstream's actors module calls logging.basicConfig(level=INFO) on import and
# its own logger has a handler: keep only errors, so the benchmark stays readable.
logging.disable(logging.WARNING)

COUNTS = {"requests": 0, "claim_conflicts": 0, "result_conflicts": 0}
CLAIMING = [False]

_send = couchdb.http.Session.request
_save = CouchDB.save
_claim = TaskViewIterator.claim_task


def counted_request(self: couchdb.http.Session, *args: object, **kwargs: object) -> object:
    COUNTS["requests"] += 1
    return _send(self, *args, **kwargs)


def counted_save(self: CouchDB, doc: Task) -> Task:
    try:
        return _save(self, doc)
    except ResourceConflict:
        COUNTS["claim_conflicts" if CLAIMING[0] else "result_conflicts"] += 1
        raise


def flagged_claim(self: TaskViewIterator) -> Task:
    CLAIMING[0] = True
    try:
        return _claim(self)
    finally:
        CLAIMING[0] = False


couchdb.http.Session.request = counted_request
CouchDB.save = counted_save
TaskViewIterator.claim_task = flagged_claim


def main() -> int:
    if not os.path.abspath(picas.__file__).startswith(os.path.abspath(sys.prefix)):
        sys.exit(f"expected upstream picas inside {sys.prefix}, imported {picas.__file__}")
    started = time.monotonic()
    client = CouchDB(url=os.environ["PICAS_URL"], db=os.environ["PICAS_DATABASE"],
                     username=os.environ["PICAS_USERNAME"], password=os.environ["PICAS_PASSWORD"])
    actor = ExampleActor(client, BasicTokenModifier())
    failure = ""
    try:
        actor.run()
    except OSError as exc:  # upstream gives up after 10 conflicts in a row
        failure = str(exc)
    print(json.dumps({"implementation": "upstream", "version": importlib.metadata.version("picas"),
                      "processed": actor.tasks_processed, "requests": COUNTS["requests"],
                      "conflicts": COUNTS["claim_conflicts"],
                      "result_conflicts": COUNTS["result_conflicts"], "failure": failure,
                      "seconds": round(time.monotonic() - started, 3)}))
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
