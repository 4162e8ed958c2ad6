"""The README's commands keep working: the docs cannot rot.

Every ``picas ...`` and ``picas-cli ...`` line in the README's shell blocks
must parse with the real command line (options and arguments as written;
tests/test_upstream_config.py runs the picas-cli ones); the demo runs end
to end; and the external-server path of the test suite works.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest
import requests

from picas import config, server
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


def block_after(marker: str) -> list[str]:
    """The command lines of the first ```sh block after ``marker`` in the README."""
    rest = README.split(marker, 1)[1]
    start = rest.index("```sh")
    return shell_lines(rest[:rest.index("```", start + 5) + 3])


#: What the README tells a new user to run right after the demo.
AFTER_DEMO = block_after("do what the demo says at the end:") + \
    block_after("Right after the demo")


def test_the_demo_and_then_the_readme_commands_run_as_written(tmp_path):
    """A new user's first steps: the demo, then the README's commands on its database."""
    demo_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICAS_")}
    env.update(PICAS_DEMO_DIR=str(demo_dir), PICAS_DEMO_PORT=str(server.free_port()))
    assert "scripts/demo.sh" in shell_lines(README)
    assert AFTER_DEMO[0] == ". .picas/env" and len(AFTER_DEMO) >= 10
    checkout = tmp_path / "checkout"  # the README's paths, without writing into ours
    checkout.mkdir()
    (checkout / "examples").symlink_to(ROOT / "examples")
    try:
        done = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        counts = dict(re.findall(r"^  (todo|locked|done|error)\s+(\d+)$", done.stdout, re.M))
        assert counts == {"todo": "0", "locked": "0", "done": "204", "error": "1"}, done.stdout
        assert oct((demo_dir / "conf.yml").stat().st_mode & 0o777) == "0o600"
        assert f"\n  . {demo_dir}/env\n" in done.stdout
        admin, pilot = (config.load(demo_dir / "conf.yml", profile) for profile in
                        ("default", "pilot"))
        check_the_demo_database(done.stdout, admin, pilot)
        said = {}
        for line in AFTER_DEMO[1:]:
            ran = subprocess.run(["bash", "-c", f". {demo_dir}/env && {line}"], env=env,
                                 cwd=checkout, capture_output=True, text=True, timeout=120)
            assert ran.returncode == 0, (line, ran.stdout, ran.stderr)
            said[line] = ran.stdout
        assert "#2 failed, exit code 3" in said["picas tokens show demo-fails"]
        assert said["picas logs demo-fails --stderr"] == "this one fails\n"
        assert json.loads(said["picas status --json"])["held"] == 1
        assert len((checkout / "tokens.jsonl").read_text().splitlines()) > 205
        assert "stopped the server" in said["picas server stop"]
    finally:
        subprocess.run([str(Path(sys.executable).parent / "picas"), "server", "stop",
                        "--data-dir", str(demo_dir / "data")],
                       env={**env, "PICAS_CONFIG": str(demo_dir / "conf.yml")}, timeout=60)
    assert server.read_state(demo_dir / "data") is None


def check_the_demo_database(output: str, admin: config.Settings,
                            pilot: config.Settings) -> None:
    """Only members may use it; the pilots' user is one, not an admin; Fauxton's
    link leads to a view with rows."""
    base = admin.url
    anonymous = requests.put(f"{base}/{admin.database}/anon-test", json={}, timeout=10)
    assert anonymous.status_code == 401, anonymous.text
    session = requests.get(f"{base}/_session", auth=(pilot.username, pilot.password),
                           timeout=10).json()["userCtx"]
    assert session == {"name": "pilot", "roles": []}
    security = requests.get(f"{base}/{admin.database}/_security",
                            auth=(admin.username, admin.password), timeout=10).json()
    assert security["members"]["names"] == ["pilot"]
    link = re.findall(r"^Fauxton: (\S+)$", output, re.M)[-1]  # the last: the view
    database, design, view = re.search(r"#database/([^/]+)/_design/([^/]+)/_view/([^/]+)$",
                                       link).groups()
    rows = requests.get(f"{base}/{database}/_design/{design}/_view/{view}",
                        auth=(admin.username, admin.password), timeout=60).json()["rows"]
    assert rows


@pytest.mark.parametrize("marker, check", [
    ("## Python functions as tokens", lambda said: re.search(
        r"^state\s+done$", said["picas tokens show hypot"], re.M)
        and re.search(r"^output\s+5(\.0)?$", said["picas tokens show hypot"], re.M)),
    ("## Data in and out", lambda said: said["picas logs sorted --name sorted.txt"]
        == "apple\npear\n"),
])
def test_the_function_and_data_examples_run_as_written(couch, db, tmp_path, marker, check):
    """Each line of the example in a shell of its own, on a new database."""
    env = {**os.environ, "PICAS_URL": couch.url, "PICAS_DATABASE": db.name,
           "PICAS_USERNAME": couch.username, "PICAS_PASSWORD": couch.password,
           "PICAS_CONFIG": str(tmp_path / "none.yml"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    said = {}
    lines = block_after(marker)
    assert any(line.startswith("picas pilot") for line in lines)
    for line in lines:
        ran = subprocess.run(["bash", "-c", line], env=env, cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert ran.returncode == 0, (line, ran.stdout, ran.stderr)
        said[line] = ran.stdout
    assert check(said), said


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


def python_block_after(marker: str) -> str:
    """The first ```python block after ``marker`` in the README."""
    rest = README.split(marker, 1)[1]
    return rest.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_futures_example_runs_while_a_pilot_works(db, pilot_env, tmp_path):
    """The futures section's pilot and Python example, as a user would run them."""
    from pilots import kill_group, start_pilot

    marker = "### Waiting for tokens from Python: futures"
    assert block_after(marker) == ["picas pilot --endless"]
    env = {**pilot_env, "PICAS_CONFIG": str(tmp_path / "none.yml")}
    pilot = start_pilot(env, "--endless", workdir=tmp_path / "work")
    try:
        done = subprocess.run([sys.executable, "-c", python_block_after(marker)], env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        kill_group(pilot, signal.SIGTERM)
        pilot.communicate(timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.startswith("finished: t-") for line in lines) == 3
    assert "hello from " in done.stdout
    sizes = {int(line.split()[0]) for line in lines if line.endswith(" bytes")}
    assert sizes == {Path(p).stat().st_size for p in ("/etc/hostname", "/etc/hosts")}


def test_the_workflow_section_runs_as_written(db, pilot_env, tmp_path):
    """Its commands, on a test database: everything runs, each token after its parents."""
    lines = block_after("## Workflows: tokens that wait for others")
    assert lines[0] == "picas tokens add examples/workflow.jsonl" and "picas pilot" in lines
    env = {**pilot_env, "PICAS_CONFIG": str(tmp_path / "conf.yml"), "TMPDIR": str(tmp_path),
           "PATH": str(Path(sys.executable).parent) + os.pathsep + pilot_env["PATH"]}
    said = {}
    for line in lines:
        ran = subprocess.run(["bash", "-c", line], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert ran.returncode == 0, (line, ran.stdout, ran.stderr)
        said[line.split()[1]] = ran.stdout
    assert said["tokens"].count("waiting for") == 6  # the list: 3 + the 3 extra tokens
    assert json.loads(said["status"])["done"] == 7
    merge = db.get("wf-merge")["attempts"][0]
    assert all(db.get(part)["attempts"][0]["end"] <= merge["start"]
               for part in ("wf-part-1", "wf-part-2"))
