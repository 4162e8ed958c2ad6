"""``picas-cli``: upstream PiCaS's command for its config file.

``init`` writes ``~/.config/picas/conf.yml`` with the password encrypted
(and the key file, if there is none), ``passwd`` changes the password on
the server and in the file, and ``dump-config`` (or ``dump``) prints a
plain-text ``picasconfig.py``. The files are upstream's formats, so
upstream PiCaS reads what this writes and the other way round; both are
written readable by their owner only.

The command keeps upstream's argparse interface (``parse_args`` and the
three functions it dispatches to), so scripts that drive it still work.
The password is asked for without echo, or read from standard input
(``--password-stdin``) or, for ``init``, ``PICAS_PASSWORD``.
``--password`` still works, because upstream's scripts pass it, but
other users can read it in ``ps``: picas-cli says so each time.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from .. import config, crypto, errors
from ..picas_config import DEFAULT_CONFIG_PATH, PicasConfig

ARGV_WARNING = ("warning: a password on the command line can be read by other users "
                "(ps, shell history): leave it out to be asked for it, or use --password-stdin")


class CommandError(Exception):
    """A mistake the user can fix: shown as one ``error:`` line, exit code 1."""


def parse_args() -> argparse.ArgumentParser:
    """The parser of ``picas-cli`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="picas-cli", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Upstream PiCaS's config command.\n\nExamples:\n"
                    "  picas-cli init --host-url https://couch.example.org:6984 "
                    "--database mydb --username me\n"
                    "  picas-cli passwd\n"
                    "  picas-cli dump-config -o picasconfig.py")
    parser.add_argument("--config", dest="config_path", default=None,
                        help=f"the config file (default: $PICAS_CONFIG or {DEFAULT_CONFIG_PATH})")
    commands = parser.add_subparsers(metavar="{init,passwd,dump-config}")

    init = commands.add_parser("init", help="write the config file, password encrypted")
    init.set_defaults(func=initialize_picas_configuration)
    init.add_argument("--host-url", dest="host_url", default="http://localhost:5984",
                      help="the CouchDB server (default: %(default)s)")
    init.add_argument("--database", default="mypicasdb",
                      help="the database that holds the tokens (default: %(default)s)")
    init.add_argument("--username", required=True, help="the CouchDB user")
    init.add_argument("--password", default=None,
                      help="the password (others can read it in ps: better leave it out)")
    init.add_argument("--password-stdin", action="store_true",
                      help="read the password from the first line of standard input")

    passwd = commands.add_parser("passwd", help="change the password on the server and here")
    passwd.set_defaults(func=change_picas_password)
    # --password too: upstream's tutorial passes the new password with it.
    passwd.add_argument("--new-password", "--password", dest="new_password", default=None,
                        help="the new password (others can read it in ps: better leave it out)")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the new password from the first line of standard input")

    for name in ("dump-config", "dump"):
        dump = commands.add_parser(name, help="print the settings as a plain picasconfig.py"
                                   if name == "dump-config" else "the same as dump-config")
        dump.set_defaults(func=dump_picas_config)
        dump.add_argument("--config", dest="dump_config_path", default=None,
                          help="the config file (as the --config before the command)")
        dump.add_argument("-o", "--output", dest="output_file", default=None,
                          help="write to this file (readable by you only), not to stdout")
    return parser


def _password(given: str | None, from_stdin: bool, prompt: str,
              environment: bool = False) -> str:
    if given is not None:
        print(ARGV_WARNING, file=sys.stderr)
        return given
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CommandError("--password-stdin: no password on standard input")
        return line
    if environment and os.environ.get("PICAS_PASSWORD"):
        return os.environ["PICAS_PASSWORD"]
    return getpass.getpass(prompt)


def initialize_picas_configuration(parsed_args: argparse.Namespace, *args: Any,
                                   **kwargs: Any) -> None:
    """``init``: encrypt the password (making the key if missing) and write the file."""
    parsed_args.password = _password(
        parsed_args.password, getattr(parsed_args, "password_stdin", False),
        f"Password for {parsed_args.username} at {parsed_args.host_url}: ", environment=True)
    picas_config = PicasConfig(parsed_args.config_path, load=False)
    picas_config.save_config(parsed_args)
    print(f"wrote {picas_config.config_path} with the password encrypted with the key in "
          f"{crypto.CRYPTO_KEY_PATH} (both readable by you only)")


def change_picas_password(parsed_args: argparse.Namespace, *args: Any, **kwargs: Any) -> None:
    """``passwd``: change the password on the server, then in the file."""
    picas_config = PicasConfig(parsed_args.config_path)
    parsed_args.new_password = _password(
        parsed_args.new_password, getattr(parsed_args, "password_stdin", False),
        f"New password for {picas_config.config['username']}: ")
    picas_config.change_password(parsed_args)
    print(f"changed the password of {picas_config.config['username']} at "
          f"{picas_config.config['host_url']} and in {picas_config.config_path}")


def dump_picas_config(parsed_args: argparse.Namespace, *args: Any, **kwargs: Any) -> None:
    """``dump-config``: the settings as a plain-text ``picasconfig.py``, password included."""
    path = getattr(parsed_args, "dump_config_path", None) or parsed_args.config_path
    values = PicasConfig(path).config
    password = crypto.decrypt_password(values["encrypted_password"]).decode("utf-8")
    script = (f"# Written by picas-cli dump-config from {path or DEFAULT_CONFIG_PATH}\n"
              f"PICAS_HOST_URL = {values['host_url']!r}\n"
              f"PICAS_DATABASE = {values['database']!r}\n"
              f"PICAS_USERNAME = {values['username']!r}\n"
              f"PICAS_PASSWORD = {password!r}\n")
    output = getattr(parsed_args, "output_file", None)
    if output is None:
        sys.stdout.write(script)
        return
    target = Path(output).expanduser()
    try:
        config.write_private(target, script)
    except OSError as exc:
        raise CommandError(f"cannot write {target}: {exc.strerror}") from None
    print(f"wrote {target} (readable by you only)")


def main() -> None:
    parser = parse_args()
    parsed = parser.parse_args()
    if not hasattr(parsed, "func"):
        parser.print_help()
        return
    try:
        parsed.func(parsed)
    except (CommandError, errors.ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"error: {str(exc).rstrip('.')}", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, EOFError):
        print(file=sys.stderr)
        sys.exit(130)
