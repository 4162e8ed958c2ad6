"""picas: a CouchDB token pool for pilot jobs.

Importing picas configures no logging; the ``picas`` command does.
"""
from .actors import RunActor
from .clients import CouchDB
from .documents import Document, Job, Task, User
from .errors import PicasError
from .iterators import (EndlessViewIterator, PrioritizedViewIterator, TaskViewIterator,
                        ViewIterator)

__version__ = "2.0.0.dev0"

__all__ = [
    "CouchDB", "Document", "EndlessViewIterator", "Job", "PicasError",
    "PrioritizedViewIterator", "RunActor", "Task", "TaskViewIterator", "User",
    "ViewIterator",
]
