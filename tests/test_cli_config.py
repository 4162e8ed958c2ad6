"""`picas init` and how every command resolves its settings."""
from __future__ import annotations

import json
import stat

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from picas.cli import cli

UNSET = dict.fromkeys(("PICAS_URL", "PICAS_DATABASE", "PICAS_USERNAME", "PICAS_PASSWORD",
                       "PICAS_PROFILE", "PICAS_MAX_ATTEMPTS", "PICAS_LEASE"))


@pytest.fixture
def conf(tmp_path):
    return tmp_path / "picas" / "conf.yml"


def picas(conf, *args: str, input: str | None = None, **env: str | None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input,
                              env={**UNSET, "PICAS_CONFIG": str(conf), **env})


def test_init_prompts_without_echo_and_writes_a_private_file(couch, db, conf):
    result = picas(conf, "--url", couch.url, "-d", db.name, "-u", couch.username, "init",
                   input=couch.password + "\n")
    assert result.exit_code == 0, result.output
    assert couch.password not in result.output
    assert f"Password for {couch.username} at {couch.url}" in result.stderr
    assert f"connected; database '{db.name}' holds" in result.stdout
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    profile = yaml.safe_load(conf.read_text())["profiles"]["default"]
    assert profile == {"url": couch.url, "database": db.name, "username": couch.username,
                       "password": couch.password}
    # Every command now works from the file alone.
    status = picas(conf, "status", "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["database"] == db.name


def test_init_reads_the_password_from_stdin_or_environment(couch, db, conf):
    piped = picas(conf, "--url", couch.url, "-d", db.name, "-u", couch.username, "init",
                  "--password-stdin", "--no-check", input="from-stdin\n")
    assert piped.exit_code == 0, piped.output
    assert "Password" not in piped.output
    assert yaml.safe_load(conf.read_text())["profiles"]["default"]["password"] == "from-stdin"
    from_env = picas(conf, "init", "--no-check", PICAS_PASSWORD="from-env")
    assert from_env.exit_code == 0, from_env.output
    profile = yaml.safe_load(conf.read_text())["profiles"]["default"]
    assert (profile["password"], profile["database"]) == ("from-env", db.name)


def test_init_enter_keeps_the_stored_password(conf):
    picas(conf, "-u", "me", "init", "--no-check", input="first\n")
    again = picas(conf, "-d", "other", "init", "--no-check", input="\n")
    assert again.exit_code == 0 and "Enter keeps the stored one" in again.stderr
    profile = yaml.safe_load(conf.read_text())["profiles"]["default"]
    assert (profile["password"], profile["database"]) == ("first", "other")


def test_init_warns_when_the_settings_do_not_work(couch, db, conf, stranger):
    result = picas(conf, "--url", couch.url, "-d", db.name, "-u", stranger, "init",
                   input="wrong-password\n")
    assert result.exit_code == 0
    assert "warning: the settings were saved, but do not work yet" in result.stderr
    assert "check the username and password" in result.stderr
    assert "wrong-password" not in result.output


def test_there_is_no_password_option(conf):
    result = picas(conf, "init", "--password", "x")
    assert result.exit_code == 2 and "No such option" in result.stderr


def test_profiles_select_databases(couch, db, conf):
    common = ["--url", couch.url, "-u", couch.username]
    assert picas(conf, *common, "-d", db.name, "--profile", "work", "init", "--no-check",
                 PICAS_PASSWORD=couch.password).exit_code == 0
    assert picas(conf, *common, "-d", "elsewhere", "--profile", "other", "init",
                 "--no-check", PICAS_PASSWORD=couch.password).exit_code == 0
    assert yaml.safe_load(conf.read_text())["default_profile"] == "work"
    default = picas(conf, "status", "--json")
    assert json.loads(default.stdout)["database"] == db.name
    other = picas(conf, "--profile", "other", "status")
    assert other.exit_code == 1 and "database 'elsewhere' does not exist" in other.stderr
    missing = picas(conf, "--profile", "nope", "status")
    assert missing.exit_code == 1
    assert "error: no profile 'nope'" in missing.stderr and "(it has: other, work)" in \
        missing.stderr


def test_flags_beat_environment_beat_file(couch, db, conf):
    conf.parent.mkdir()
    conf.write_text(yaml.safe_dump({"profiles": {"default": {
        "url": "http://127.0.0.1:1", "database": "from_file",
        "username": couch.username, "password": couch.password}}}))
    env_wins = picas(conf, "status", "--json", PICAS_URL=couch.url, PICAS_DATABASE=db.name)
    assert json.loads(env_wins.stdout)["database"] == db.name
    flag_wins = picas(conf, "-d", "from_flag", "status", PICAS_URL=couch.url,
                      PICAS_DATABASE=db.name)
    assert "database 'from_flag' does not exist" in flag_wins.stderr


def test_upstream_config_works_with_a_password_from_the_environment(couch, db, conf):
    conf.parent.mkdir()
    conf.write_text(yaml.safe_dump({"host_url": couch.url, "database": db.name,
                                    "username": couch.username,
                                    "encrypted_password": "gAAAAB-not-readable"}))
    needs = picas(conf, "status")
    assert needs.exit_code == 1 and "Traceback" not in needs.output
    assert needs.stderr.startswith(f"error: {conf}:2: encrypted_password: cannot read the key")
    works = picas(conf, "status", "--json", PICAS_PASSWORD=couch.password)
    assert works.exit_code == 0 and json.loads(works.stdout)["database"] == db.name


def test_malformed_config_is_one_line_with_file_and_line(conf):
    conf.parent.mkdir()
    conf.write_text("profiles:\n  default:\n    url: [http://x\n")
    result = picas(conf, "status")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith(f"error: {conf}:4: ")


def test_bad_url_is_a_config_error(conf):
    result = picas(conf, "--url", "localhost:5984", "status")
    assert result.exit_code == 1
    assert "is not a CouchDB URL" in result.stderr


def test_verbose_logging_never_shows_the_password(conf):
    result = picas(conf, "-v", "-u", "me", "init", "--no-check", input="hunter2\n")
    assert result.exit_code == 0
    assert "info: wrote profile 'default'" in result.stderr
    assert "hunter2" not in result.output


def test_every_command_has_an_example_in_its_help():
    def walk(group, path):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            yield [*path, name], command
            if isinstance(command, click.Group):
                yield from walk(command, [*path, name])

    for path, _command in walk(cli, []):
        if path[0] in ("pilot", "recover", "pilots", "autopilot"):
            continue  # not written here
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, path
        text = result.output.split("Options:")[0]
        examples = [line.strip() for line in text.split("Example")[-1].splitlines()
                    if line.strip().startswith("picas ")]
        assert any(" ".join(path) in line for line in examples), path


def test_every_command_module_is_mapped_to_exactly_its_commands():
    import importlib

    from picas.cli import COMMAND_MODULES
    for module_name in set(COMMAND_MODULES.values()):
        module = importlib.import_module(f"picas.cli.{module_name}")
        mapped = {name for name, owner in COMMAND_MODULES.items() if owner == module_name}
        assert {command.name for command in module.COMMANDS} == mapped, module_name


def test_a_missing_database_without_a_config_file_says_where_picas_looked(couch, conf):
    result = picas(conf, "--url", couch.url, "-u", couch.username, "status",
                   PICAS_PASSWORD=couch.password)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: database 'picas' does not exist at {couch.url}: create it with `picas db "
        f"create` (or check the name) (no config file at {conf}, so picas used its defaults: "
        "write one with `picas init`, or after scripts/demo.sh run `. .picas/env`)\n")
