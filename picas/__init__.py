"""picas: a CouchDB token pool for pilot jobs.

Importing picas configures no logging; the ``picas`` command does.

The names below load on first use (PEP 562): ``picas pilot`` imports this
package too, and a pilot job that never touches the upstream-style API
should not pay for importing it at every start.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "2.0.0.dev0"
#: Upstream PiCaS's name for the version.
VERSION = __version__

_EXPORTS = {
    "CouchDB": "clients", "Document": "documents", "Job": "documents", "Task": "documents",
    "User": "documents", "PicasError": "errors", "RunActor": "actors",
    "EndlessViewIterator": "iterators", "PrioritizedViewIterator": "iterators",
    "TaskViewIterator": "iterators", "ViewIterator": "iterators",
    # Not to be confused with the module picas.pool (the pool's priority setting).
    "Pool": "futures",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 -- the lazy names above, listed once


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'picas' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
