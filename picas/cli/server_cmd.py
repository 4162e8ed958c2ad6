"""`picas server start|stop|status`: the local pouchdb-server, for development.

It is a development and test server, not a production one: it enforces
less security than Apache CouchDB.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import click
import requests

from .. import errors, server
from .common import App, echo_json, pass_app

DEFAULT_PORT = 5984


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "picas" / "server"


def _data_dir_option(function):  # type: ignore[no-untyped-def]
    return click.option(
        "--data-dir", type=click.Path(file_okay=False, path_type=Path),
        envvar="PICAS_SERVER_DATA", show_envvar=True,
        help="Where the server keeps its databases [default: ~/.local/share/picas/server].",
    )(function)


def _fauxton(url: str) -> str:
    return f"{url}/_utils"


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@click.group("server")
def server_group() -> None:
    """Run the local development server (pouchdb-server).

    A development and test server, not a production one: use Apache
    CouchDB for real work.

    \b
    Examples:
      picas server start
      picas server status
      picas server stop
    """


@server_group.command("start")
@_data_dir_option
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port on 127.0.0.1 [default: the port of the configured URL when it is "
                   "local, else 5984].")
@pass_app
def start(app: App, data_dir: Path | None, port: int | None) -> None:
    """Start the local server on disk, under a supervisor that restarts it.

    It listens on 127.0.0.1 only. When the settings carry a username and
    password, that user is made the server's admin.

    \b
    Examples:
      picas server start
      picas server start --data-dir ./couch-data --port 5985
    """
    settings = app.settings()
    data_dir = data_dir or default_data_dir()
    if port is None:
        parts = urlsplit(settings.url)
        local = parts.hostname in ("127.0.0.1", "localhost")
        port = (parts.port or DEFAULT_PORT) if local else DEFAULT_PORT
    running = server.read_state(data_dir.resolve())
    if running is None and _port_in_use(port):
        raise errors.ConfigError(f"port {port} is in use by another program: choose one "
                                 "with --port")
    state = server.start_supervised(data_dir, port)
    url = state["url"]
    if settings.username and settings.password:
        try:
            server.ensure_admin(url, settings.username, settings.password)
        except requests.RequestException as exc:
            raise errors.ConnectionFailed(f"could not set up the admin on {url}: "
                                          f"{type(exc).__name__}") from None
    verb = "already running" if state.get("already_running") else "started"
    click.echo(f"server {verb} at {url} (pid {state['pid']}, data in {state['data_dir']})")
    click.echo(f"Fauxton: {_fauxton(url)}")
    if settings.url != url:
        click.echo(f"note: your settings point at {settings.url}; use --url {url} or "
                   f"PICAS_URL={url}", err=True)
    if not settings.username:
        click.echo("note: no admin configured; `picas -u admin init` then `picas server "
                   "start` again creates one", err=True)


def _local_port(url: str) -> int | None:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return parts.port or (443 if parts.scheme == "https" else 80)


def _find(app: App, data_dir: Path | None) -> tuple[Path, str]:
    """The data directory to act on, and how to name another one when it is not running.

    Without --data-dir, the server that picas started on the port of the
    configured URL; else the default data directory.
    """
    if data_dir is not None:
        return data_dir.resolve(), "name another with --data-dir"
    try:
        url = app.settings().url
    except errors.PicasError:
        url = None
    port = _local_port(url) if url else None
    found = server.registered(port) if port else None
    if found is not None:
        return found, ""
    where = f"no server that picas started listens on {url}, and " if port else ""
    return default_data_dir().resolve(), (
        f"{where}this is the default data directory: name another with --data-dir "
        "(or PICAS_SERVER_DATA)")


@server_group.command("stop")
@_data_dir_option
@pass_app
def stop(app: App, data_dir: Path | None) -> None:
    """Stop the local server: the one on the configured URL's port, or of --data-dir.

    \b
    Examples:
      picas server stop
      picas server stop --data-dir ./couch-data
    """
    data_dir, hint = _find(app, data_dir)
    if server.stop_supervised(data_dir):
        click.echo(f"stopped the server of {data_dir}")
    else:
        click.echo(f"no server is running for {data_dir}" + (f" ({hint})" if hint else ""))


@server_group.command("status")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the state as JSON.")
@pass_app
def server_status(app: App, data_dir: Path | None, as_json: bool) -> None:
    """Tell whether the local server runs (exit code 3 when it does not).

    Without --data-dir it looks for the server that picas started on the
    configured URL's port, then in the default data directory.

    \b
    Example:
      picas server status
    """
    data_dir, hint = _find(app, data_dir)
    state = server.read_state(data_dir)
    if as_json:
        echo_json({"running": state is not None, "data_dir": str(data_dir),
                   **({"pid": state["pid"], "url": state["url"],
                       "fauxton": _fauxton(state["url"])} if state else {})})
    elif state:
        click.echo(f"running at {state['url']} (pid {state['pid']}, data in {data_dir})")
        click.echo(f"Fauxton: {_fauxton(state['url'])}")
    else:
        click.echo(f"not running (looked in {data_dir}" + (f"; {hint})" if hint else ")"))
    if state is None:
        click.get_current_context().exit(3)


COMMANDS = [server_group]
