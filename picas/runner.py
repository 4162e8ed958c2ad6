"""Running one token's command: its own process group, its own folder.

The command runs through a shell when it is a string and directly when it
is a list, with the token's ``env`` on top of the pilot's environment, in
a fresh working directory. Output goes to files (so background children
cannot block us); only the tail of each stream, up to a cap, is kept.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import executers
from .errors import InvalidToken

DEFAULT_LOG_CAP = 1 << 20
NOT_FOUND = 127


@dataclass(frozen=True)
class RunOptions:
    workdir_base: Path
    log_cap: int = DEFAULT_LOG_CAP
    grace: float = executers.DEFAULT_GRACE
    keep_workdir: bool = False


@dataclass
class Run:
    """What happened when a command ran."""

    exit_code: int
    #: None when the command ended by itself, else why it was stopped
    stopped: str | None
    start: float
    end: float
    stdout: bytes
    stderr: bytes
    notes: dict = field(default_factory=dict)


def command_of(token: dict) -> tuple[str | list[str], bool]:
    """The token's command and whether it needs a shell; InvalidToken if unusable."""
    command = token.get("command")
    if isinstance(command, str) and command.strip():
        return command, True
    if isinstance(command, list) and command and all(isinstance(a, str) for a in command):
        return command, False
    if command is None:
        raise InvalidToken("the token has no 'command': add one (a string for the shell, "
                           "or a list of arguments), e.g. picas tokens add --command '...'")
    raise InvalidToken("the token's 'command' must be a non-empty string or a list of strings")


def environment_of(token: dict) -> dict[str, str]:
    env = token.get("env") or {}
    if not isinstance(env, dict):
        raise InvalidToken("the token's 'env' must be an object of names to values")
    merged = dict(os.environ)
    merged.update({str(k): str(v) for k, v in env.items()})
    merged["PICAS_TOKEN_ID"] = str(token.get("_id", ""))
    return merged


def tail(path: Path, cap: int) -> tuple[bytes, int]:
    """The last ``cap`` bytes of ``path`` and how many bytes were cut before them."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size > cap:
            handle.seek(size - cap)
        return handle.read(), max(0, size - cap)


def run(token: dict, options: RunOptions, timeout: float | None = None,
        should_stop: Callable[[], str | None] | None = None) -> Run:
    """Run the token's command until it ends, times out or must stop.

    A token without a usable command or env raises InvalidToken before
    anything is started.
    """
    command, shell = command_of(token)
    env = environment_of(token)
    options.workdir_base.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{_safe(token.get('_id'))}-", dir=options.workdir_base))
    out_path, err_path = workdir.with_suffix(".stdout"), workdir.with_suffix(".stderr")
    start = time.time()
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = executers.start(command, shell=shell, stdout=out, stderr=err,
                                       cwd=workdir, env=env)
            except (FileNotFoundError, PermissionError) as exc:
                err.write(f"picas: cannot run {command[0]!r}: {exc.strerror}\n".encode())
                exit_code, stopped = NOT_FOUND, None
            else:
                stopped = executers.wait(proc, timeout=timeout, grace=options.grace,
                                         should_stop=should_stop)
                exit_code = proc.returncode
        end = time.time()
        stdout, cut_out = tail(out_path, options.log_cap)
        stderr, cut_err = tail(err_path, options.log_cap)
    finally:
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
        if not options.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    notes: dict = {}
    for name, data, cut in (("stdout", stdout, cut_out), ("stderr", stderr, cut_err)):
        if cut:
            notes[f"{name}_truncated_bytes"] = cut
        if not _is_utf8(data, cut_start=bool(cut)):
            notes[f"{name}_not_utf8"] = True
    if options.keep_workdir:
        notes["workdir"] = str(workdir)
    return Run(exit_code, stopped, start, end, _mark_cut(stdout, cut_out),
               _mark_cut(stderr, cut_err), notes)


def _mark_cut(data: bytes, cut: int) -> bytes:
    if not cut:
        return data
    return f"[picas: the first {cut} bytes were cut; the last {len(data)} are kept]\n".encode() + data


def _is_utf8(data: bytes, cut_start: bool = False) -> bool:
    if cut_start:
        # The cap may have cut a multi-byte character: skip its continuation bytes.
        data = data[next((i for i, b in enumerate(data[:4]) if not 0x80 <= b <= 0xBF), 0):]
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _safe(name: object) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))[:60] or "token"
