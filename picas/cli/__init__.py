"""The ``picas`` command.

Connection options are declared once, here, on the group; every
subcommand reads them through :class:`picas.cli.common.App`. Errors that
picas raises on purpose (and files that cannot be read) end the command
with one ``error: ...`` line and exit code 1, never a traceback; usage
mistakes keep click's exit code 2.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import click

from .. import __version__, config, indexing
from ..errors import DatabaseNotFound, PicasError
from .common import App, CliError, setup_logging

#: Which module defines each command. A command's module is imported only
#: when the command runs (or help lists it): every pilot starts a process,
#: and importing all of them would cost each pilot a tenth of a second.
COMMAND_MODULES = {
    "init": "config_cmd", "db": "db_cmd", "views": "db_cmd", "tokens": "tokens_cmd",
    "logs": "tokens_cmd", "export": "tokens_cmd", "status": "status_cmd",
    "server": "server_cmd", "pilot": "pilot_cmd", "recover": "pilot_cmd",
    "pilots": "slurm_cmd", "autopilot": "slurm_cmd", "errors": "errors_cmd",
    "report": "report_cmd",
}


class PicasGroup(click.Group):
    """Loads commands when needed; turns picas's errors into one line on stderr."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(f"{__name__}.{module_name}")
        return next(command for command in module.COMMANDS if command.name == cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            _say_if_stale(ctx.obj)
            return result
        except DatabaseNotFound as exc:
            raise CliError(f"{exc}{_defaults_note(ctx.obj)}") from None
        except PicasError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:
            if exc.filename is None:
                raise
            raise CliError(f"cannot read or write {exc.filename}: "
                           f"{exc.strerror or type(exc).__name__}") from None


def _say_if_stale(app: App | None) -> None:
    """Views read while their index was being built gave what they had: say so."""
    for db in app.opened if app is not None else []:
        note = indexing.note(db, None)
        if note:
            click.echo(f"warning: {note}", err=True)


def _defaults_note(app: App | None) -> str:
    """Why picas looked for that database, when no config file chose it."""
    if app is None or app.database or os.environ.get("PICAS_DATABASE"):
        return ""
    path = app.config_path or config.default_path()
    if path.exists():
        return ""
    return (f" (no config file at {path}, so picas used its defaults: write one with "
            "`picas init`, or after scripts/demo.sh run `. .picas/env`)")


@click.group(cls=PicasGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                "max_content_width": 100})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              envvar="PICAS_CONFIG", show_envvar=True,
              help="Config file [default: ~/.config/picas/conf.yml].")
@click.option("--profile", envvar="PICAS_PROFILE", show_envvar=True,
              help="Profile in the config file [default: its default_profile].")
@click.option("--url", envvar="PICAS_URL", show_envvar=True,
              help="CouchDB server URL [default: http://127.0.0.1:5984].")
@click.option("-d", "--database", envvar="PICAS_DATABASE", show_envvar=True,
              help="Database name [default: picas].")
@click.option("-u", "--username", envvar="PICAS_USERNAME", show_envvar=True,
              help="CouchDB user; the password comes from PICAS_PASSWORD or the config "
                   "file (see `picas init`).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debugging).")
@click.version_option(__version__, prog_name="picas")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, profile: str | None, url: str | None,
        database: str | None, username: str | None, verbose: int) -> None:
    """A CouchDB token pool for pilot jobs.

    Settings come from the options, then the environment (PICAS_URL,
    PICAS_DATABASE, PICAS_USERNAME, PICAS_PASSWORD), then the config file,
    then the defaults.

    \b
    Quick start on the local server:
      picas --username admin init --no-check
      picas server start
      picas db create
      picas tokens add --grid seed=1..100 --command 'echo {seed}'
      picas pilot &
      picas status --watch
    """
    setup_logging(verbose)
    ctx.obj = App(config_path, profile, url, database, username)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``picas`` console script."""
    cli.main(args=argv, prog_name="picas")
