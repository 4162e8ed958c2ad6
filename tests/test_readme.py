"""The README's commands keep working: the docs cannot rot.

Every ``picas ...`` and ``picas-cli ...`` line in the README's shell blocks
must parse with the real command line (options and arguments as written;
tests/test_upstream_config.py runs the picas-cli ones); the demo runs end
to end; and the external-server path of the test suite works.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
import requests

from picas import server
from picas.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def shell_lines(text: str) -> list[str]:
    """Command lines of the ```sh blocks and the ``$ `` lines of ```console
    blocks, continuation lines joined."""
    lines = []
    for kind, block in re.findall(r"```(sh|console)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if kind == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = line.split(" #")[0].strip().rstrip("&").strip()
            if line:
                lines.append(line)
    return lines


PICAS_LINES = [line for line in shell_lines(README) if line.startswith("picas ")]


def _unparsed(ctx: click.Context) -> list[str]:
    # click 8.2+ keeps a group's subcommand name apart from the other tokens.
    return [*getattr(ctx, "_protected_args", []), *ctx.args]


def parse(args: list[str]) -> None:
    """Parse like the real ``picas`` would, down to the last subcommand, without running it."""
    ctx = cli.make_context("picas", list(args))
    command: click.Command = cli
    rest = _unparsed(ctx)
    while isinstance(command, click.Group) and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, rest, parent=ctx)
        rest = _unparsed(ctx) if isinstance(command, click.Group) else []


def test_the_readme_shows_picas_commands():
    assert len(PICAS_LINES) >= 10


@pytest.mark.parametrize("line", PICAS_LINES)
def test_every_picas_command_in_the_readme_parses(line, monkeypatch, tmp_path):
    monkeypatch.setenv("PICAS_CONFIG", str(tmp_path / "conf.yml"))
    parse(shlex.split(line)[1:])


PICAS_CLI_LINES = [line for line in shell_lines(README) if line.startswith("picas-cli ")]


@pytest.mark.parametrize("line", PICAS_CLI_LINES)
def test_every_picas_cli_command_in_the_readme_parses(line):
    from picas.apps.picas_cli import parse_args
    parsed = parse_args().parse_args(shlex.split(line)[1:])
    assert callable(parsed.func)


def test_the_readme_shows_picas_cli_commands():
    assert {line.split()[1] for line in PICAS_CLI_LINES} == {"init", "passwd", "dump-config"}


def test_a_wrong_command_would_be_caught():
    with pytest.raises(click.UsageError):
        parse(["tokens", "list", "--no-such-option"])


def test_the_demo_runs_from_the_readme(tmp_path):
    demo_dir = tmp_path / "demo"
    env = {**os.environ, "PICAS_DEMO_DIR": str(demo_dir),
           "PICAS_DEMO_PORT": str(server.free_port())}
    assert "scripts/demo.sh" in shell_lines(README)
    try:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        counts = dict(re.findall(r"^  (todo|locked|done|error)\s+(\d+)$", done.stdout, re.M))
        assert counts == {"todo": "0", "locked": "0", "done": "204", "error": "1"}, done.stdout
        assert "/_utils/#database/demo/_design/Monitor/_view/todo" in done.stdout
        assert oct((demo_dir / "conf.yml").stat().st_mode & 0o777) == "0o600"
    finally:
        subprocess.run([str(Path(sys.executable).parent / "picas"), "server", "stop",
                        "--data-dir", str(demo_dir / "data")],
                       env={**env, "PICAS_CONFIG": str(demo_dir / "conf.yml")}, timeout=60)
    assert server.read_state(demo_dir / "data") is None


def test_the_suite_runs_against_an_external_server(couch):
    """PICAS_TEST_COUCHDB_URL, as the README shows it, pointed at our server."""
    env = {**os.environ, "PICAS_TEST_COUCHDB_URL": couch.admin_url}
    before = set(requests.get(couch.url + "/_all_dbs", auth=(couch.username, couch.password),
                              timeout=10).json())
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / "test_views.py")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout
    after = set(requests.get(couch.url + "/_all_dbs", auth=(couch.username, couch.password),
                             timeout=10).json())
    assert after - before == set()  # every test database was deleted
