"""Upstream PiCaS's ``CouchDBLogger``: a logging handler that stores records in CouchDB.

Each record becomes a document of ``type: "log"`` with upstream's fields
(``lvl``, ``msg``, ``created``, ``func``, ``host``, ``trance_nr`` [sic],
spelled as upstream spells them so that its views keep working). Unlike
upstream, the handler connects on the first record rather than in its
constructor, gives every record its own id (upstream's ids, host and
second, collide within a second), and reports a failed write through
``logging``'s own ``handleError`` instead of printing and sleeping.
"""
from __future__ import annotations

import logging
import random
import socket
import threading
import uuid

from . import errors
from .database import Database
from .picaslogger import formatter as default_log_formatter
from .transport import Transport

__all__ = ["CouchDBLogger", "default_log_formatter"]


class CouchDBLogger(logging.Handler):
    """Writes each log record as a document to database ``db`` at ``url``.

    Credentials go in the URL (``https://user:password@host:6984``), as
    with upstream.
    """

    def __init__(self, url: str, db: str) -> None:
        super().__init__()
        self.database = Database(Transport(url), db)
        self.hostname = socket.gethostname()
        self.trace_nr = random.randrange(100000)
        # urllib3 logs while a record is written: on the root logger, this
        # handler would otherwise be called again for those records, forever.
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._busy, "value", False):
            return
        self._busy.value = True
        try:
            self.database.put({
                "_id": f"{self.hostname}:{int(record.created)}:{uuid.uuid4().hex[:8]}",
                "type": "log", "lvl": record.levelno, "msg": record.getMessage(),
                "created": record.created, "func": record.funcName, "host": self.hostname,
                "trance_nr": self.trace_nr})
        except errors.PicasError:
            self.handleError(record)
        finally:
            self._busy.value = False
