"""Views whose index is still being built: progress, stale reads, builds in the background.

A view's index is brought up to date when the view is queried, and the
query waits for it. After a million new tokens that takes minutes, and
CouchDB gives up on the query after its ``[fabric] request_timeout``
(HTTP 500 ``timeout``, 60 s) while the build goes on. So commands that
read views ask :func:`builds` how far a build is, read the rows the
index already has (``stale=ok``, see :meth:`Database.view`) meanwhile,
and :func:`start` begins a build without waiting for it, right after a
large write.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import designdocs, errors
from .database import Database

#: A view of each design document: querying one builds all of its views.
FIRST_VIEW = {designdocs.MONITOR: "overview_total"}


@dataclass(frozen=True)
class Build:
    """One design document's index being built (summed over the database's shards)."""

    design: str
    changes_done: int
    total_changes: int

    @property
    def percent(self) -> int:
        if self.total_changes <= 0:
            return 0
        return min(100, int(100 * self.changes_done / self.total_changes))

    def describe(self) -> str:
        return (f"{self.design} {self.percent}% ({self.changes_done:,} of "
                f"{self.total_changes:,} changes)")


def _of_database(task: dict, name: str) -> bool:
    """CouchDB names a shard ``shards/<range>/<name>.<suffix>``."""
    database = str(task.get("database", ""))
    return database == name or (database.startswith("shards/")
                                and database.split("/", 2)[-1].rsplit(".", 1)[0] == name)


def builds(db: Database) -> list[Build] | None:
    """The index builds running on ``db``; None when the server will not say
    (``_active_tasks`` is for server admins only)."""
    try:
        tasks = db.transport.request("GET", ["_active_tasks"])
    except errors.PermissionDenied:
        return None
    found: dict[str, list[int]] = {}
    for task in tasks if isinstance(tasks, list) else []:
        if task.get("type") != "indexer" or not _of_database(task, db.name):
            continue
        design = str(task.get("design_document", "")).removeprefix("_design/")
        done_total = found.setdefault(design, [0, 0])
        done_total[0] += int(task.get("changes_done") or 0)
        done_total[1] += int(task.get("total_changes") or 0)
    return [Build(design, done, total) for design, (done, total) in sorted(found.items())]


def start(db: Database, designs: tuple[str, ...] = tuple(FIRST_VIEW)) -> None:
    """Have the server bring these design documents' views up to date, without
    waiting for it (``stale=update_after`` answers at once, then builds).

    Apache CouchDB only: pouchdb-server's background build dies with the
    whole server when the database is deleted meanwhile (seen in CI), and
    it never times a view query out, so it needs no head start.
    """
    if not db.transport.is_apache_couchdb():
        return
    for design in designs:
        try:
            db.view(design, FIRST_VIEW[design], limit=0, stale="update_after")
        except errors.ViewNotFound:
            continue


def note(db: Database, building: list[Build] | None) -> str | None:
    """One line for people when views were (or are being) read stale; else None."""
    lagging = sorted(db.lagging)
    if not lagging:
        return None
    shown = [b.describe() for b in building or [] if b.design in db.lagging]
    progress = "; ".join(shown) if shown else ", ".join(lagging)
    return (f"views still being built ({progress}): the figures read from them lag "
            "behind; the build goes on in the server")


def follow(db: Database) -> list[Build] | None:
    """The builds on ``db``; design documents being built are read stale from now on."""
    building = builds(db)
    db.lagging.update(b.design for b in building or [])
    return building
