"""Running one token's command: its own process group, its own folder.

The command runs through a shell when it is a string and directly when it
is a list, with the token's ``env`` on top of the pilot's environment, in
an empty working directory. Output goes to files (so background children
cannot block us); only the tail of each stream, up to a cap, is kept.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from . import procgroup, provenance
from .errors import InvalidToken

DEFAULT_LOG_CAP = 1 << 20
NOT_FOUND = 127


@dataclass(frozen=True)
class RunOptions:
    log_cap: int = DEFAULT_LOG_CAP
    grace: float = procgroup.DEFAULT_GRACE


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
    #: CPU seconds and peak memory (see :func:`picas.provenance.usage`)
    usage: dict = field(default_factory=dict)
    #: what ran (see :func:`picas.provenance.record`), with checksums of declared files
    provenance: dict = field(default_factory=dict)


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


class Workspace:
    """Where a pilot runs its commands: a folder per token, two output files.

    For a short task, making and removing a folder and two files costs
    more than the task itself. So the output files are made once and
    emptied after each command, and a folder that its command left empty
    is renamed for the next token instead of being removed and made anew:
    every token still starts in an empty folder named after it. The
    pilot's environment is copied once, too. Construction does no I/O.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self._folder: Path | None = None
        self._outputs: tuple[IO[bytes], IO[bytes]] | None = None
        self._environ: dict[str, str] | None = None

    def environment(self, token: dict) -> dict[str, str]:
        """The pilot's environment with the token's ``env`` on top."""
        env = token.get("env") or {}
        if not isinstance(env, dict):
            raise InvalidToken("the token's 'env' must be an object of names to values")
        if self._environ is None:
            self._environ = dict(os.environ)
        merged = dict(self._environ)
        merged.update({str(k): str(v) for k, v in env.items()})
        merged["PICAS_TOKEN_ID"] = str(token.get("_id", ""))
        return merged

    def folder(self, token_id: object) -> Path:
        """An empty folder named after the token."""
        name = f"{_safe(token_id)}-{secrets.token_hex(4)}"
        if self._folder is not None:
            try:
                self._folder = self._folder.rename(self._folder.with_name(name))
                return self._folder
            except OSError:  # removed behind our back since: make a new one
                self._folder = None
        self.base.mkdir(parents=True, exist_ok=True)
        self._folder = self.base / name
        self._folder.mkdir(mode=0o700)
        return self._folder

    def outputs(self) -> tuple[IO[bytes], IO[bytes]]:
        """Files for stdout and stderr, empty (unnamed: nothing to clean up after a crash)."""
        if self._outputs is None:
            self.base.mkdir(parents=True, exist_ok=True)
            # Open for the whole run (the child writes to them); close() closes them.
            self._outputs = (tempfile.TemporaryFile(dir=self.base),  # noqa: SIM115
                             tempfile.TemporaryFile(dir=self.base))  # noqa: SIM115
        return self._outputs

    def collect(self, cap: int) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
        """The tail of each output, ``(data, bytes cut)``, and empty the files again."""
        out, err = self.outputs()
        return _take_tail(out, cap), _take_tail(err, cap)

    def tidy(self) -> None:
        """After a command: keep its folder for the next one only if it was left empty
        (and is still there, and readable: commands do odd things to their folder)."""
        if self._folder is None:
            return
        try:
            with os.scandir(self._folder) as entries:
                empty = next(entries, None) is None
        except OSError:
            empty = False
        if not empty:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def close(self) -> None:
        """Remove the folder and the output files."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        if self._outputs is not None:
            for handle in self._outputs:
                handle.close()
            self._outputs = None


def _take_tail(handle: IO[bytes], cap: int) -> tuple[bytes, int]:
    """Read the last ``cap`` bytes written to ``handle``, then empty it."""
    fd = handle.fileno()
    size = os.fstat(fd).st_size
    cut = max(0, size - cap)
    chunks, offset = [], cut
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    # The command's descriptors share the file offset: rewind it for the next one.
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return b"".join(chunks), cut


def run(token: dict, workspace: Workspace, options: RunOptions,
        timeout: float | None = None,
        should_stop: Callable[[], str | None] | None = None) -> Run:
    """Run the token's command until it ends, times out or must stop.

    A token without a usable command or env raises InvalidToken before
    anything is started.
    """
    command, shell = command_of(token)
    env = workspace.environment(token)
    out, err = workspace.outputs()
    workdir = workspace.folder(token.get("_id"))
    made = provenance.record(token, command)
    inputs, outputs = provenance.declared_files(token)
    if inputs:
        made["inputs"] = provenance.checksums(inputs, workdir)
    usage = None
    start = time.time()
    try:
        try:
            proc = procgroup.start(command, shell=shell, stdout=out, stderr=err,
                                   cwd=workdir, env=env)
        except (FileNotFoundError, PermissionError) as exc:
            os.write(err.fileno(), f"picas: cannot run {command[0]!r}: {exc.strerror}\n".encode())
            exit_code, stopped = NOT_FOUND, None
        else:
            stopped, usage = procgroup.wait_measured(proc, timeout=timeout, grace=options.grace,
                                                     should_stop=should_stop)
            exit_code = proc.returncode
        end = time.time()
        if outputs:
            made["outputs"] = provenance.checksums(outputs, workdir)
        (stdout, cut_out), (stderr, cut_err) = workspace.collect(options.log_cap)
    finally:
        workspace.tidy()
    notes: dict = {}
    for name, data, cut in (("stdout", stdout, cut_out), ("stderr", stderr, cut_err)):
        if cut:
            notes[f"{name}_truncated_bytes"] = cut
        if not _is_utf8(data, cut_start=bool(cut)):
            notes[f"{name}_not_utf8"] = True
    return Run(exit_code, stopped, start, end, _mark_cut(stdout, cut_out),
               _mark_cut(stderr, cut_err), notes, provenance.usage(usage), made)


def _mark_cut(data: bytes, cut: int) -> bytes:
    if not cut:
        return data
    note = f"[picas: the first {cut} bytes were cut; the last {len(data)} are kept]\n"
    return note.encode() + data


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
