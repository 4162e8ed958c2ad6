"""Design documents: read from ``couchviews/`` files, pushed idempotently.

An unchanged view is never rewritten, because rewriting a design document
makes CouchDB rebuild every index in it.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from . import errors
from .database import Database
from .update import update

#: The one design document: CouchDB hands every written document to each
#: design document's JavaScript in a pass of its own, whatever its number of
#: views, so one holds them all (measured with bench/views.py).
MONITOR = "Monitor"
#: Design documents of earlier versions, whose views now live in ``Monitor``:
#: left in place, they would be indexed on every write for nobody.
RETIRED = ("Pilot", "Triage")
#: Writes of one design document tried before giving up on conflicts.
TRIES = 5


def source_dir() -> Path:
    """Where the ``couchviews`` files are: the installed package or a checkout."""
    try:
        installed = Path(str(resources.files("picas.couchviews")))
        if (installed / MONITOR).is_dir():
            return installed
    except ModuleNotFoundError:
        pass
    checkout = Path(__file__).resolve().parent.parent / "couchviews"
    if (checkout / MONITOR).is_dir():
        return checkout
    raise errors.ConfigError("picas is installed without its couchviews/: reinstall picas")


def load(root: Path | None = None) -> dict[str, dict]:
    """Every design document under ``root``, as ``{name: {"views": ...}}``."""
    root = source_dir() if root is None else root
    designs: dict[str, dict] = {}
    for design_dir in sorted(p for p in root.iterdir() if (p / "views").is_dir()):
        views = {}
        for view_dir in sorted(p for p in (design_dir / "views").iterdir() if p.is_dir()):
            view = {"map": (view_dir / "map.js").read_text().strip()}
            if (view_dir / "reduce.js").exists():
                view["reduce"] = (view_dir / "reduce.js").read_text().strip()
            elif (view_dir / "reduce.builtin").exists():
                view["reduce"] = (view_dir / "reduce.builtin").read_text().strip()
            views[view_dir.name] = view
        designs[design_dir.name] = {"language": "javascript", "views": views}
    return designs


@dataclass
class PushReport:
    """What a push changed, per design document."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    #: views of a retired design document that was deleted
    removed: list[str] = field(default_factory=list)

    @property
    def wrote(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def push_views(db: Database, design: str, views: dict[str, dict],
               keep_others: bool = True) -> PushReport:
    """Make ``_design/design`` contain ``views``; write only if something differs.

    Views already in the design document but not in ``views`` are kept
    (users add their own), unless ``keep_others`` is False.
    """
    doc_id = f"_design/{design}"
    report = PushReport()
    missing = 0

    def merge(current: dict | None) -> dict | None:
        nonlocal report, missing
        if current is None:
            current = {"_id": doc_id, "language": "javascript", "views": {}}
            missing += 1
        existing = current.setdefault("views", {})
        report = _compare(existing, views)
        if not report.wrote and (keep_others or set(existing) == set(views)):
            return None
        new_views = {**existing, **views} if keep_others else dict(views)
        return {**current, "language": "javascript", "views": new_views}

    try:
        update(db, doc_id, merge, tries=TRIES, read=_read_design)
    except errors.Conflict:
        if missing == TRIES:
            # Not a race: no one can keep creating a document that is never there.
            raise errors.Conflict(
                f"{db.transport.url}/{db.name} says {doc_id} does not exist, yet refuses to "
                "create it: does the URL lead to the server itself (not to a database or a "
                "proxy that rewrites paths)?") from None
        raise errors.Conflict(
            f"{doc_id} was changed by someone else {TRIES} times while pushing views "
            "(another `picas views push` or `picas db create` at the same time?): "
            "try again when it has finished") from None
    return report


def _read_design(db: Database, doc_id: str) -> dict | None:
    try:
        return db.get(doc_id)
    except errors.DatabaseNotFound:
        raise
    except errors.NotFound:  # also a proxy's 404 that names no document
        return None


def _compare(existing: dict[str, dict], views: dict[str, dict]) -> PushReport:
    report = PushReport()
    for name, view in sorted(views.items()):
        if name not in existing:
            report.added.append(name)
        elif existing[name] != view:
            report.changed.append(name)
        else:
            report.unchanged.append(name)
    return report


def push(db: Database, designs: Iterable[str] | None = None) -> dict[str, PushReport]:
    """Push picas's own design documents, and remove retired ones; return what
    changed in each."""
    loaded = load()
    names = list(loaded) if designs is None else list(designs)
    reports = {name: push_views(db, name, loaded[name]["views"]) for name in names}
    if designs is None:
        for name in RETIRED:
            removed = _retire(db, name, set(loaded[MONITOR]["views"]))
            if removed:
                reports[name] = PushReport(removed=removed)
    return reports


def _retire(db: Database, design: str, known: set[str]) -> list[str]:
    """Delete ``_design/design`` when it holds only views picas moved to
    ``Monitor`` (one with a user's own views stays); return its views."""
    current = _read_design(db, f"_design/{design}")
    views = sorted((current or {}).get("views") or {})
    if not current or not set(views) <= known:
        return []
    try:
        db.delete(current["_id"], current["_rev"])
    except errors.Conflict:
        return []  # changed meanwhile: the next push looks again
    return views
