"""Running one token's command: its own process group, its own folder.

The command runs through a shell when it is a string and directly when it
is a list, with the token's ``env`` on top of the pilot's environment, in
an empty working directory. A token that names a Python function runs
as a command too (see :mod:`picas.functions`). The token's inputs are
placed in the folder first and its outputs gathered after a successful
run (see :mod:`picas.staging`). Output goes to files (so background
children cannot block us); only the tail of each stream, up to a cap, is kept.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from . import functions, procgroup, provenance, staging
from .errors import InputUnavailable, InvalidToken

DEFAULT_LOG_CAP = 1 << 20
NOT_FOUND = 127


@dataclass(frozen=True)
class RunOptions:
    log_cap: int = DEFAULT_LOG_CAP
    grace: float = procgroup.DEFAULT_GRACE
    limits: staging.Limits = field(default_factory=staging.Limits)


@dataclass
class Run:
    """What happened when a command ran."""

    #: None when the command never started (see ``failure``)
    exit_code: int | None
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
    #: why the attempt failed, when no exit code says it (an input missing, say)
    failure: str | None = None
    #: what a function token's function returned, or what it raised
    output: Any = None
    exception: dict | None = None
    #: output files to attach (name -> (content type, bytes)), and those left
    #: out with the reason (None: the token declares no outputs)
    outputs: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    outputs_skipped: list[dict] | None = None

    @property
    def succeeded(self) -> bool:
        return self.stopped is None and self.failure is None and self.exit_code == 0


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


@dataclass(frozen=True)
class SideFiles:
    """Files the pilot hands a command beside its folder, so that they are
    neither in its way nor taken for its outputs: the token's ``input``,
    and for a function token the call and what came of it."""

    input: Path
    call: Path
    result: Path

    @classmethod
    def beside(cls, folder: Path) -> SideFiles:
        return cls(*(folder.with_name(f"{folder.name}.{kind}.json")
                     for kind in ("input", "call", "result")))

    def remove(self) -> None:
        for path in (self.input, self.call, self.result):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def run(token: dict, workspace: Workspace, options: RunOptions,
        timeout: float | None = None,
        should_stop: Callable[[], str | None] | None = None,
        read_attachment: Callable[[str], bytes] = staging.no_attachments) -> Run:
    """Run the token's command (or function) until it ends, times out or must stop.

    A token without a usable command or function, or with a malformed
    env, inputs, outputs or stdin, raises InvalidToken before anything is
    started. An input that cannot be read fails the attempt unstarted.
    """
    call = functions.call_of(token)
    command, shell = command_of(token) if call is None else (call["function"], False)
    stdin_name = staging.check_declared(token)
    env = workspace.environment(token)
    out, err = workspace.outputs()
    workdir = workspace.folder(token.get("_id"))
    side = SideFiles.beside(workdir)
    env[staging.INPUT_FILE_ENV] = str(side.input)
    made = provenance.record(token, command, call["function"] if call else None)
    inputs, outputs = provenance.declared_files(token)
    failure, exit_code, stopped, usage = None, None, None, None
    start = time.time()
    try:
        with contextlib.ExitStack() as stack:
            try:
                staging.write_input(token, side.input)
                staging.place(token, workdir, read_attachment)
                stdin = _open_stdin(stack, stdin_name, workdir)
                if call is not None:
                    functions.write_call(call, side.call)
                    command = functions.command(side.call, side.result)
            except InputUnavailable as exc:
                failure = str(exc)
            if inputs:
                made["inputs"] = provenance.checksums(inputs, workdir)
            if failure is None:
                exit_code, stopped, usage = _execute(command, shell, stdin, out, err, workdir,
                                                     env, options, timeout, should_stop)
        end = time.time()
        if outputs:
            made["outputs"] = provenance.checksums(outputs, workdir)
        (stdout, cut_out), (stderr, cut_err) = workspace.collect(options.log_cap)
        done = Run(exit_code, stopped, start, end, _mark_cut(stdout, cut_out),
                   _mark_cut(stderr, cut_err), _notes(stdout, cut_out, stderr, cut_err),
                   provenance.usage(usage), made, failure)
        if call is not None and failure is None:
            _returned(done, side.result)
        if done.succeeded:
            _keep(done, token, workdir, options.limits, function=call is not None)
    finally:
        side.remove()
        workspace.tidy()
    return done


def _notes(stdout: bytes, cut_out: int, stderr: bytes, cut_err: int) -> dict:
    """What the attempt says about its logs: cut, or not UTF-8."""
    notes: dict = {}
    for name, data, cut in (("stdout", stdout, cut_out), ("stderr", stderr, cut_err)):
        if cut:
            notes[f"{name}_truncated_bytes"] = cut
        if not _is_utf8(data, cut_start=bool(cut)):
            notes[f"{name}_not_utf8"] = True
    return notes


def _open_stdin(stack: contextlib.ExitStack, name: str | None, folder: Path) -> IO[bytes] | None:
    """The token's ``stdin`` file, open; relative names are in its folder."""
    if name is None:
        return None
    try:
        return stack.enter_context(open(folder / name, "rb"))
    except OSError as exc:
        raise InputUnavailable(f"stdin {name!r}: {exc.strerror}") from None


def _execute(command: str | list[str], shell: bool, stdin: IO[bytes] | None, out: IO[bytes],
             err: IO[bytes], workdir: Path, env: dict[str, str], options: RunOptions,
             timeout: float | None, should_stop: Callable[[], str | None] | None,
             ) -> tuple[int, str | None, Any]:
    """Start the command and wait for it: exit code, why it was stopped, resource use."""
    try:
        proc = procgroup.start(command, shell=shell, stdin=stdin, stdout=out, stderr=err,
                               cwd=workdir, env=env)
    except (FileNotFoundError, PermissionError) as exc:
        os.write(err.fileno(), f"picas: cannot run {command[0]!r}: {exc.strerror}\n".encode())
        return NOT_FOUND, None, None
    stopped, usage = procgroup.wait_measured(proc, timeout=timeout, grace=options.grace,
                                             should_stop=should_stop)
    return proc.returncode, stopped, usage


def _returned(done: Run, result_file: Path) -> None:
    """What a function token's child wrote: its return value, or the exception."""
    returned = functions.read_result(result_file)
    if returned is None:
        if done.stopped is None and done.exit_code == 0:
            done.failure = "the function's process ended without saying what it returned"
    elif returned.exception is not None:
        done.exception = returned.exception
        done.failure = functions.describe(returned.exception)
    else:
        done.output = returned.output


def _keep(done: Run, token: dict, folder: Path, limits: staging.Limits,
          function: bool) -> None:
    """After a successful run: what the token keeps of its return value and output
    files, within ``limits``. A return value that does not fit fails the attempt."""
    if not function and "outputs" not in token:
        return
    used = staging.token_size(token) + len(done.stdout) + len(done.stderr)
    if function:
        size = len(json.dumps(done.output))
        if used + size > limits.max_token_size:
            done.failure = (f"the function returned {size} bytes of JSON, more than the token "
                            f"may hold ({max(0, limits.max_token_size - used)} of "
                            f"--max-token-size {limits.max_token_size} were left): return "
                            "less, or write files and declare them in 'outputs'")
            done.output = None
            return
        used += size
    if "outputs" in token:
        done.outputs, done.outputs_skipped = staging.gather(token, folder, limits, used)


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
