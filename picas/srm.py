"""Upstream PiCaS's SRM helpers: copy files to and from grid storage with dCache's tools.

They run ``srmls``, ``srmcp`` and ``srmrm``, which come with dCache's SRM
client and are installed on grid worker nodes, not with picas. When one
is missing, the call says so in an ``EnvironmentError`` rather than
failing with an exit code. As upstream, the module-level ``download``,
``upload`` and ``upload_many`` are not implemented: use :class:`SRMClient`.
"""
from __future__ import annotations

import logging
import queue
import shutil
import threading
from collections.abc import Iterable
from os import path
from typing import Any

from .executers import execute
from .picaslogger import picaslogger

DEFAULT_HOST = "srm://srm.grid.sara.nl/"


def download(remotefile: str) -> None:
    raise NotImplementedError("download is not implemented: use SRMClient.download")


def upload(localfile: str) -> None:
    raise NotImplementedError("upload is not implemented: use SRMClient.upload")


def upload_many(files: Iterable[str], poolsize: int = 10) -> None:
    raise NotImplementedError("upload_many is not implemented: use SRMClient.upload")


def download_many(files: Iterable[str], poolsize: int = 10,
                  logger: logging.Logger | None = None) -> None:
    """Download ``files`` (paths on the SRM) with ``poolsize`` threads at once.

    Mind the storage: many parallel transfers can flood it. Raises an
    ``EnvironmentError`` naming the files that failed after all retries.
    """
    _run_downloaders(files, lambda q: Downloader(q, logger), poolsize)


def _run_downloaders(files: Iterable[str], make: Any, count: int) -> None:
    work: queue.Queue = queue.Queue()
    for name in files:
        work.put(name)
    threads = [make(work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = sorted(name for thread in threads for name in thread.failed)
    if failed:
        raise OSError(f"download failed of: {', '.join(failed)}")


class Downloader(threading.Thread):
    """A thread that downloads files from a queue until it is empty, retrying each."""

    attempts = 25

    def __init__(self, q: queue.Queue, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.q = q
        self.logger = logger or logging.getLogger("SRM")
        self.srm = SRMClient(self.logger)
        self.failed: list[str] = []

    def run(self) -> None:
        while True:
            try:
                name = self.q.get_nowait()
            except queue.Empty:
                return
            try:
                self._download(name)
            finally:
                self.q.task_done()

    def _download(self, name: str) -> None:
        for _ in range(self.attempts):
            try:
                self.srm.download(name)
                return
            except ToolMissing as exc:
                self.logger.error("download of %s failed: %s", name, exc)
                break
            except OSError:
                continue
        else:
            self.logger.error("download of %s failed after %d tries", name, self.attempts)
        self.failed.append(name)


class ToolMissing(EnvironmentError):
    """One of dCache's SRM tools is not installed here."""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} is not installed (or not on PATH): the SRM client "
                          "needs dCache's SRM tools (srmls, srmcp, srmrm)")
    return found


class SRMClient:
    """Down- and uploads single files to and from an SRM storage."""

    def __init__(self, logger: logging.Logger, host: str = DEFAULT_HOST) -> None:
        self.logger = logger
        self.srm_host = host

    def _run(self, *args: str) -> tuple[int, str]:
        command = [_tool(args[0]), *args[1:]]
        picaslogger.info(" ".join(command))
        _, returncode, out, err = execute(command)
        if err:
            self.logger.debug("%s: %s", args[0], err.decode(errors="replace").strip())
        return returncode, out.decode(errors="replace")

    def remote_exists(self, loc: str) -> bool:
        """True if ``loc`` (a path on the SRM) exists."""
        returncode, out = self._run("srmls", self.srm_host + loc)
        return returncode == 0 and any(path.basename(loc) in line for line in out.splitlines())

    def upload(self, local_file: str, srm_dir: str, check: bool = False) -> str:
        """Copy ``local_file`` into ``srm_dir``; its SRM URL.

        ``check`` first makes sure the local file exists and the remote one does not.
        """
        srm_file = path.join(srm_dir, path.basename(local_file))
        srm_url = self.srm_host + srm_file
        if check:
            if not path.isfile(local_file):
                raise OSError(10, "File not found.", local_file)
            if self.remote_exists(srm_file):
                raise OSError(11, "File exists on srm.", srm_url)
        returncode, _ = self._run("srmcp", "-2", "-server_mode=passive",
                                  "file:///" + local_file, srm_url)
        if returncode != 0:
            raise OSError(f"upload failed of {local_file} to {srm_url}")
        return srm_url

    def download(self, srm_file: str, local_dir: str = "./", check: bool = False) -> str:
        """Copy ``srm_file`` (a path on the SRM) into ``local_dir``; the local path."""
        local_file = path.join(local_dir, path.basename(srm_file))
        srm_url = self.srm_host + srm_file
        if check and not self.remote_exists(srm_file):
            raise OSError(10, "File not found.", srm_url)
        self.logger.info("Downloading: %s", local_file)
        returncode, _ = self._run("srmcp", "-2", "-server_mode=passive",
                                  srm_url, "file:///" + local_file)
        if returncode != 0:
            self.logger.error("Download failed of: %s", srm_file)
            raise OSError(f"download failed of {srm_url}")
        return local_file

    def remove(self, srm_file: str) -> bool:
        """Delete ``srm_file`` from the SRM; True, or an EnvironmentError."""
        returncode, _ = self._run("srmrm", self.srm_host + srm_file)
        if returncode != 0:
            self.logger.error("Removal failed of: %s", srm_file)
            raise OSError(f"remove failed of {srm_file}")
        return True
