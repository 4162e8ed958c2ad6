"""What every ``picas`` command shares: settings, errors, output helpers.

Commands get an :class:`App` (``@pass_app``) that holds the group's
connection flags and turns them into :class:`picas.config.Settings`
on demand, so a command that needs no server never reads the config.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from .. import config
from ..config import Settings
from ..database import Database


@dataclass
class App:
    """The group's options; flags left out fall back to env, file, defaults."""

    config_path: Path | None = None
    profile: str | None = None
    url: str | None = None
    database: str | None = None
    username: str | None = None

    def flags(self) -> dict[str, Any]:
        return {"url": self.url, "database": self.database, "username": self.username}

    def settings(self, **overrides: Any) -> Settings:
        """The resolved settings; ``overrides`` (a command's own flags) win when not None."""
        return config.load(self.config_path, self.profile, **{**self.flags(), **{
            k: v for k, v in overrides.items() if v is not None}})

    #: databases this command opened, to say afterwards when views were read stale
    opened: list[Database] = field(default_factory=list)

    def open_database(self, **overrides: Any) -> Database:
        db = self.settings(**overrides).open_database()
        self.opened.append(db)
        return db


pass_app = click.make_pass_decorator(App, ensure=True)


class CliError(click.ClickException):
    """A user-facing failure: one ``error: ...`` line on stderr, exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _ClickHandler(logging.Handler):
    """Writes log records through click, so they reach whatever stderr is now."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)
        except Exception:  # noqa: BLE001 -- logging must never break the command
            self.handleError(record)


def setup_logging(verbosity: int) -> None:
    """The only place picas configures logging: warnings, ``-v`` info, ``-vv`` debug."""
    logger = logging.getLogger("picas")
    for handler in [h for h in logger.handlers if isinstance(h, _ClickHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_ClickHandler())
    logger.setLevel(logging.DEBUG if verbosity > 1 else
                    logging.INFO if verbosity == 1 else logging.WARNING)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive change; ``--yes`` answers for scripts."""
    if yes:
        return
    try:
        click.confirm(question, abort=True, err=True)
    except click.Abort:
        click.echo(err=True)
        raise CliError("not confirmed, so nothing was changed (--yes answers for "
                       "scripts)") from None


def duration(seconds: float | None) -> str:
    """``3h 02m``, ``4m 10s``, ``12s``: short and readable."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    seconds = abs(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours:02d}h"
    if hours:
        return f"{sign}{hours}h {minutes:02d}m"
    if minutes:
        return f"{sign}{minutes}m {secs:02d}s"
    return f"{sign}{secs}s"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in row]
                                           for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def shorten(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
