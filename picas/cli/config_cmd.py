"""`picas init`: write the connection settings to the config file."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from .. import config, errors
from .common import App, pass_app


def _password(settings: config.Settings, from_stdin: bool) -> str | None:
    """The password to store: stdin, PICAS_PASSWORD, or a hidden prompt.

    Never a command-line argument, which other users could read in ``ps``.
    """
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.UsageError("--password-stdin: no password on stdin")
        return line
    if os.environ.get("PICAS_PASSWORD"):
        return os.environ["PICAS_PASSWORD"]
    if settings.username is None:
        return None
    stored = settings.password
    keep = " (Enter keeps the stored one)" if stored else ""
    answer = click.prompt(f"Password for {settings.username} at {settings.url}{keep}",
                          hide_input=True, default="", show_default=False, err=True)
    return answer or stored


@click.command("init")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input.")
@click.option("--max-attempts", type=click.IntRange(min=1),
              help="Default number of tries per token [default: 3].")
@click.option("--lease", type=click.FloatRange(min=0, min_open=True),
              help="Default lease of a claimed token, in seconds [default: 600].")
@click.option("--verify/--no-verify", default=None,
              help="Check the server's TLS certificate [default: verify].")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Try the new settings on the server.")
@pass_app
def init(app: App, password_stdin: bool, max_attempts: int | None, lease: float | None,
         verify: bool | None, check: bool) -> None:
    """Write the connection settings to the config file (mode 0600).

    Takes the group's --url, --database, --username (or PICAS_* variables,
    or what the profile already holds). The password is prompted for,
    without echo, unless it comes from --password-stdin or PICAS_PASSWORD.

    \b
    Examples:
      picas --url https://couch.example.org:6984 -d mydb -u me init
      echo "$SECRET" | picas -u me init --password-stdin
      picas --profile test --url http://127.0.0.1:5985 init --no-check
    """
    flags = {**app.flags(), "max_attempts": max_attempts, "lease": lease, "verify": verify}
    current = config.resolve(app.config_path, app.profile,
                             {k: v for k, v in flags.items() if v is not None},
                             require_profile=False)
    password = _password(current, password_stdin)
    fields: dict[str, Any] = {"url": current.url, "database": current.database,
                              "username": current.username, "password": password}
    fields.update({k: v for k, v in (("max_attempts", max_attempts), ("lease", lease),
                                     ("verify", verify)) if v is not None})
    path = current.config_path or config.default_path()
    backup = config.write(path, fields, current.profile)
    if backup is not None:
        click.echo(f"kept upstream PiCaS's config as {backup}")
    who = f" as {current.username}" if current.username else ""
    click.echo(f"wrote profile '{current.profile}' to {path} (readable by you only): "
               f"database '{current.database}' at {current.url}{who}")
    if check:
        _check(app)


def _check(app: App) -> None:
    """Tell whether the new settings work; the file is kept either way."""
    settings = app.settings()
    db = settings.open_database()
    try:
        info = db.info()
    except errors.DatabaseNotFound:
        click.echo(f"connected; database '{settings.database}' does not exist yet: "
                   "create it with `picas db create`")
    except errors.PicasError as exc:
        click.echo(f"warning: the settings were saved, but do not work yet: {exc}", err=True)
    else:
        click.echo(f"connected; database '{settings.database}' holds "
                   f"{info.get('doc_count', 0)} documents")


COMMANDS = [init]
