"""`picas db create` and `picas views push`: the database and its design documents."""
from __future__ import annotations

import click

from .. import designdocs, errors
from ..database import Database
from .common import App, echo_json, pass_app


@click.group("db")
def db_group() -> None:
    """Create the database.

    \b
    Example:
      picas -u admin db create --member alice
    """


def _merge(security: dict, section: str, key: str, values: tuple[str, ...]) -> None:
    if values:
        entry = security.setdefault(section, {})
        entry[key] = list(dict.fromkeys([*entry.get(key, []), *values]))


def _report_views(reports: dict[str, designdocs.PushReport]) -> list[str]:
    lines = []
    for design, report in reports.items():
        parts = [f"{len(report.added)} added", f"{len(report.changed)} changed",
                 f"{len(report.unchanged)} unchanged"]
        names = [f"+{v}" for v in report.added] + [f"~{v}" for v in report.changed]
        lines.append(f"views {design}: {', '.join(parts)}"
                     + (f" ({' '.join(names)})" if names else ""))
    return lines


def _views_json(reports: dict[str, designdocs.PushReport]) -> dict:
    return {design: {"added": r.added, "changed": r.changed, "unchanged": r.unchanged}
            for design, r in reports.items()}


@db_group.command("create")
@click.option("--member", "members", multiple=True, metavar="NAME",
              help="User who may read and write tokens (repeatable).")
@click.option("--admin", "admins", multiple=True, metavar="NAME",
              help="User who may also change the design documents (repeatable).")
@click.option("--member-role", "member_roles", multiple=True, metavar="ROLE",
              help="Role whose users are members (repeatable).")
@click.option("--admin-role", "admin_roles", multiple=True, metavar="ROLE",
              help="Role whose users are database admins (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@pass_app
def create(app: App, members: tuple[str, ...], admins: tuple[str, ...],
           member_roles: tuple[str, ...], admin_roles: tuple[str, ...], as_json: bool) -> None:
    """Create the database, set who may use it, and push the views.

    Safe to run again: an existing database is kept, names are added to
    its _security, and only views that changed are written. Needs a server
    admin's credentials.

    \b
    Examples:
      picas -u admin db create
      picas -u admin -d project1 db create --member alice --member bob
    """
    settings = app.settings()
    if not settings.username:
        raise errors.ConfigError(
            "creating a database needs a server admin: give --username (or PICAS_USERNAME) "
            "and PICAS_PASSWORD, or store them with `picas init`")
    db = settings.open_database()
    created = db.create()
    security = None
    if members or admins or member_roles or admin_roles:
        security = db.security()
        _merge(security, "members", "names", members)
        _merge(security, "members", "roles", member_roles)
        _merge(security, "admins", "names", admins)
        _merge(security, "admins", "roles", admin_roles)
        db.set_security(security)
    reports = designdocs.push(db)
    if as_json:
        echo_json({"database": db.name, "created": created, "security": security,
                   "views": _views_json(reports)})
        return
    click.echo(f"{'created' if created else 'kept the existing'} database '{db.name}' "
               f"at {db.transport.url}")
    if security is not None:
        for section in ("admins", "members"):
            entry = security.get(section, {})
            click.echo(f"{section}: names {entry.get('names', [])}, roles {entry.get('roles', [])}")
    for line in _report_views(reports):
        click.echo(line)


@click.group("views")
def views_group() -> None:
    """Push the design documents (the Monitor and Pilot views).

    \b
    Example:
      picas views push
    """


@views_group.command("push")
@click.option("--json", "as_json", is_flag=True, help="Print what changed as JSON.")
@pass_app
def push(app: App, as_json: bool) -> None:
    """Make the database's views match this picas; write only what changed.

    An unchanged design document is not rewritten, so its indexes are not
    rebuilt. Views you added yourself are kept.

    \b
    Example:
      picas views push
    """
    db: Database = app.open_database()
    reports = designdocs.push(db)
    if as_json:
        echo_json(_views_json(reports))
        return
    for line in _report_views(reports):
        click.echo(line)


COMMANDS = [db_group, views_group]
