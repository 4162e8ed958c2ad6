"""Keeping a large pool's database small: compaction, and finished tokens
moved out into a file.

Every write of a token leaves its old revision on disk until the database
is compacted, and a drain writes each token a few times (lock, renewals,
result). CouchDB compacts on its own when its ``[smoosh]`` thresholds are
reached; :func:`compact` asks for it at once. Finished tokens that only
matter as a record can leave the database altogether: :func:`purge`
writes them (attachments included) to a JSON Lines file, makes sure the
file is on disk, and only then removes them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO

from . import designdocs, errors
from .database import Database

#: Tokens read, written out and removed per round.
PURGE_BATCH = 500


def compact(db: Database) -> list[str]:
    """Start compacting the database and each design document's views, and drop
    index files of views that are gone; return what was started."""
    started = []
    db.transport.request("POST", [db.name, "_compact"], json={}, database=db.name)
    started.append("database")
    for design in designdocs.load():
        try:
            db.transport.request("POST", [db.name, "_compact", design], json={},
                                 database=db.name)
            started.append(f"views of {design}")
        except (errors.NotFound, errors.RequestRejected):
            continue  # not there, or a server that compacts views with the database
    db.transport.request("POST", [db.name, "_view_cleanup"], json={}, database=db.name)
    return started


def sizes(db: Database) -> dict:
    """Bytes on disk (``file``), in live data (``active``) and per token document."""
    info = db.info()
    found = info.get("sizes") or {}
    docs = int(info.get("doc_count") or 0)
    file_size = int(found.get("file") or info.get("disk_size") or 0)
    return {"documents": docs, "file_bytes": file_size,
            "active_bytes": int(found.get("active") or 0),
            "bytes_per_document": round(file_size / docs) if docs else None}


@dataclass
class PurgeReport:
    written: int = 0
    removed: int = 0
    #: tokens changed after they were read: written to the file, but kept
    changed: list[str] = field(default_factory=list)


def purge(db: Database, ids: list[str], out: IO[str],
          progress: Callable[[int], None] | None = None) -> PurgeReport:
    """Write the tokens ``ids`` to ``out`` as JSON Lines, then remove them.

    A batch is removed only once its lines are flushed and synced to disk,
    and only in the revision written out: a token that changed meanwhile
    stays. Apache CouchDB purges them (nothing is left); servers without
    ``_purge`` get deletions (a small tombstone each).
    """
    report = PurgeReport()
    couchdb = db.transport.is_apache_couchdb()
    for start in range(0, len(ids), PURGE_BATCH):
        rows = db.all_docs(keys=ids[start:start + PURGE_BATCH], include_docs=True,
                           attachments=True)["rows"]
        docs = [row["doc"] for row in rows if row.get("doc")]
        for doc in docs:
            out.write(json.dumps(doc, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())
        report.written += len(docs)
        removed = _purge(db, docs) if couchdb else _delete(db, docs)
        report.removed += len(removed)
        report.changed.extend(doc["_id"] for doc in docs if doc["_id"] not in removed)
        if progress is not None:
            progress(len(docs))
    return report


def _purge(db: Database, docs: Iterable[dict]) -> set[str]:
    answer = db.transport.request("POST", [db.name, "_purge"],
                                  json={doc["_id"]: [doc["_rev"]] for doc in docs},
                                  database=db.name)
    return {doc_id for doc_id, revs in (answer.get("purged") or {}).items() if revs}


def _delete(db: Database, docs: Iterable[dict]) -> set[str]:
    tombstones = [{"_id": doc["_id"], "_rev": doc["_rev"], "_deleted": True} for doc in docs]
    return {doc["_id"] for doc, result in zip(tombstones, db.bulk_docs(tombstones), strict=True)
            if "error" not in result}
