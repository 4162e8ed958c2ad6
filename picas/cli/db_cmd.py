"""`picas db create` and `picas views push`: the database and its design documents."""
from __future__ import annotations

import click

from .. import designdocs, errors, security, storage
from ..database import Database
from .common import App, CliError, echo_json, pass_app


@click.group("db")
def db_group() -> None:
    """Create the database; see and shrink its size on disk.

    \b
    Examples:
      picas -u admin db create --member alice
      picas db size
      picas -u admin db compact
    """


def _report_views(reports: dict[str, designdocs.PushReport]) -> list[str]:
    lines = []
    for design, report in reports.items():
        if report.removed:
            lines.append(f"views {design}: retired design document removed (its views "
                         f"are in {designdocs.MONITOR} now)")
            continue
        parts = [f"{len(report.added)} added", f"{len(report.changed)} changed",
                 f"{len(report.unchanged)} unchanged"]
        names = [f"+{v}" for v in report.added] + [f"~{v}" for v in report.changed]
        lines.append(f"views {design}: {', '.join(parts)}"
                     + (f" ({' '.join(names)})" if names else ""))
    return lines


def _views_json(reports: dict[str, designdocs.PushReport]) -> dict:
    return {design: {"added": r.added, "changed": r.changed, "unchanged": r.unchanged,
                     "removed": r.removed} for design, r in reports.items()}


@db_group.command("create")
@click.option("--member", "members", multiple=True, metavar="NAME",
              help="User who may read and write tokens (repeatable) [default: you, when "
                   "the database has no members yet].")
@click.option("--admin", "admins", multiple=True, metavar="NAME",
              help="User who may also change the design documents (repeatable).")
@click.option("--member-role", "member_roles", multiple=True, metavar="ROLE",
              help="Role whose users are members (repeatable).")
@click.option("--admin-role", "admin_roles", multiple=True, metavar="ROLE",
              help="Role whose users are database admins (repeatable).")
@click.option("--public", is_flag=True,
              help="Leave the database open: anyone who reaches the server may read, "
                   "change and delete its tokens, without logging in.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@pass_app
def create(app: App, members: tuple[str, ...], admins: tuple[str, ...],
           member_roles: tuple[str, ...], admin_roles: tuple[str, ...], public: bool,
           as_json: bool) -> None:
    """Create the database, set who may use it, and push the views.

    Only members (and admins) may use the database: the users given with
    --member and --member-role, or, when it has none yet, you. --public
    leaves it open to everyone instead. Safe to run again: an existing
    database is kept, names are added to its _security, and only views
    that changed are written. Needs a server admin's credentials.

    \b
    Examples:
      picas -u admin db create
      picas -u admin -d project1 db create --member alice --member bob
      picas -u admin -d scratch db create --public
    """
    if public and (members or member_roles):
        raise click.UsageError("--public leaves the database open to everyone: do not "
                               "combine it with --member or --member-role")
    settings = app.settings()
    if not settings.username:
        raise errors.ConfigError(
            "creating a database needs a server admin: give --username (or PICAS_USERNAME) "
            "and PICAS_PASSWORD, or store them with `picas init`")
    db = settings.open_database()
    software = security.server_software(db.transport)
    user = security.whoami(db.transport)
    if not user.server_admin:
        raise CliError(f"creating a database and setting who may use it needs a server "
                       f"admin, and user '{settings.username}' is not one: ask a server admin "
                       f"to run `picas db create --member {settings.username}`")
    created = db.create()
    before = db.security()
    after = security.updated(before, members=members, member_roles=member_roles, admins=admins,
                             admin_roles=admin_roles, public=public,
                             default_member=settings.username)
    if after != before:
        db.set_security(after)
    reports = designdocs.push(db)
    if as_json:
        echo_json({"database": db.name, "created": created, "security": after,
                   "public": security.is_public(after), "server": software,
                   "views": _views_json(reports)})
        return
    click.echo(f"{'created' if created else 'kept the existing'} database '{db.name}' "
               f"at {db.transport.url}")
    for line in _report_security(db, before, after, created):
        click.echo(line)
    if software == security.POUCHDB_SERVER:
        click.echo("note: pouchdb-server does not enforce _security everywhere (_find and "
                   "_bulk_get ignore it): keep private data on Apache CouchDB", err=True)
    for line in _report_views(reports):
        click.echo(line)


def _report_security(db: Database, before: dict, after: dict, created: bool) -> list[str]:
    lines = [f"{section}: names {after.get(section, {}).get('names', [])}, "
             f"roles {after.get(section, {}).get('roles', [])}"
             for section in ("admins", "members")]
    if security.is_public(after):
        lines.append(f"database '{db.name}' is public: anyone who can reach "
                     f"{db.transport.url} may read, add, change and delete its tokens without "
                     "logging in (`picas db create --member NAME` closes it)")
    elif security.is_public(before) and not created:
        lines.append(f"database '{db.name}' was open to everyone; now only its members and "
                     "admins may use it")
    return lines


@click.group("views")
def views_group() -> None:
    """Push the design document (Monitor, with every view picas reads).

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
    rebuilt. Views you added yourself are kept. Writing design documents
    needs an admin of the database (or a server admin); members may not.

    \b
    Example:
      picas views push
    """
    db: Database = app.open_database()
    db.info()  # a user who may not read the database is told so first
    try:
        reports = designdocs.push(db)
    except (errors.PermissionDenied, errors.AuthenticationFailed):
        who = db.transport.username
        raise CliError(f"pushing views needs an admin of database '{db.name}' or a server "
                       f"admin, and {f'user {who!r}' if who else 'anonymous access'} is "
                       "neither: ask one to run `picas views push`") from None
    if as_json:
        echo_json(_views_json(reports))
        return
    for line in _report_views(reports):
        click.echo(line)


@db_group.command("size")
@click.option("--json", "as_json", is_flag=True, help="Print the sizes as JSON.")
@pass_app
def size(app: App, as_json: bool) -> None:
    """Show the database's size on disk, its live data, and bytes per document.

    The file holds every old revision until compaction: `picas db compact`.

    \b
    Example:
      picas db size --json
    """
    db = app.open_database()
    found = storage.sizes(db)
    if as_json:
        echo_json(found)
        return
    per_doc = found["bytes_per_document"]
    click.echo(f"database '{db.name}': {found['documents']:,} documents, "
               f"{_mib(found['file_bytes'])} on disk, {_mib(found['active_bytes'])} live"
               + (f", {per_doc:,} bytes per document on disk" if per_doc else ""))


def _mib(count: int) -> str:
    return f"{count / 2 ** 20:,.1f} MiB"


@db_group.command("compact")
@pass_app
def compact(app: App) -> None:
    """Start compacting the database and its views (needs a database admin).

    Compaction drops old revisions: after a drain, most of the file. It runs
    in the server; `picas db size` shows the result once it is done
    (CouchDB also compacts on its own, by its [smoosh] settings).

    \b
    Example:
      picas -u admin db compact
    """
    db = app.open_database()
    started = storage.compact(db)
    click.echo(f"compaction started on database '{db.name}': {', '.join(started)}")


COMMANDS = [db_group, views_group]
