"""``picas errors``: error tokens grouped by cause."""
from __future__ import annotations

import click

from .. import triage
from .common import App, CliError, confirm, echo_json, pass_app, plural, shorten

SIGNATURE_WIDTH = 90


def render(groups: list[triage.ErrorGroup], database: str) -> str:
    """One block per group: id, count, exit code, hosts, sample, signature."""
    if not groups:
        return f"no error tokens in database '{database}'"
    total = sum(g.count for g in groups)
    lines = [f"{plural(total, 'error token')} in {plural(len(groups), 'group')} "
             f"(by exit code and the last lines of stderr):"]
    for group in groups:
        hosts = ", ".join(f"{host} {count}" for host, count in
                          sorted(group.hosts.items(), key=lambda item: -item[1]))
        code = "(none)" if group.exit_code in (None, "") else group.exit_code
        lines.append(f"  group {group.id}  {group.count:>6}  exit code {code}  "
                     f"hosts: {hosts}  e.g. {group.sample}")
        lines.append(f"      {shorten(group.signature or '(no signature)', SIGNATURE_WIDTH)}")
    lines.append("put one group back in todo with `picas errors --reset GROUP`")
    return "\n".join(lines)


@click.command("errors")
@click.option("--json", "as_json", is_flag=True, help="Print the groups as JSON.")
@click.option("--reset", "reset_group", metavar="GROUP",
              help="Put the tokens of this group back in todo (its id, or a prefix of it).")
@click.option("-y", "--yes", is_flag=True, help="With --reset: do not ask for confirmation.")
@pass_app
def errors_command(app: App, as_json: bool, reset_group: str | None, yes: bool) -> None:
    """Group the error tokens by exit code and cause, with their hosts.

    The cause is a signature of the last lines of the failed attempt's
    stderr, with numbers, paths and hex values taken out, so that the
    same fault on different inputs falls into one group. It is computed
    when a pilot writes the result; the grouping reads one view, so it
    stays quick at 100,000 tokens.

    \b
    Examples:
      picas errors
      picas errors --json | jq '.[0].sample'
      picas errors --reset 3f2a9c1e --yes
    """
    db = app.open_database()
    if reset_group is None:
        groups = triage.error_groups(db)
        if as_json:
            echo_json([g.as_dict() for g in groups])
        else:
            click.echo(render(groups, db.name))
        return
    group = triage.find_group(db, reset_group)
    if group is None:
        raise CliError(f"no group '{reset_group}' of error tokens (or more than one starts "
                       "so): see `picas errors` for the ids")
    confirm(f"reset {plural(group.count, 'token')} of group {group.id} "
            f"({shorten(group.signature, 60)}) to todo?", yes)
    report = triage.reset_group(db, group)
    if as_json:
        echo_json({"group": group.id, **report.as_dict()})
    else:
        click.echo(f"reset {plural(report.changed, 'token')} of group {group.id} to todo")
    if report.conflicts:
        raise CliError(f"{plural(report.conflicts, 'token')} kept changing while we wrote "
                       "them: run the command again")


COMMANDS = [errors_command]
