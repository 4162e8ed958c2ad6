"""The pilot of upstream PiCaS's documentation, shared by both driver scripts.

It imports whichever picas the running venv holds: this project's in
``ours_actor.py``, ``picas==1.1.2`` in ``upstream_actor.py``. So both
implementations run the very same actor, and only the counting differs.
"""
import os

from picas.actors import RunActor
from picas.clients import CouchDB
from picas.documents import Task
from picas.executers import execute
from picas.iterators import TaskViewIterator
from picas.modifiers import BasicTokenModifier


class ExampleActor(RunActor):
    """Runs each token's command through the shell and closes the token."""

    def __init__(self, db: CouchDB, modifier: BasicTokenModifier, view: str = "todo",
                 **view_params: object) -> None:
        super().__init__(db, iterator=TaskViewIterator(db, view, **view_params))
        self.modifier = modifier

    def process_task(self, token: Task) -> None:
        os.environ["PICAS_TOKEN_ID"] = token["_id"]
        out = execute(token["command"], shell=True)
        self.subprocess = out[0]
        token["exit_code"] = out[1]
        self.modifier.close(token)
