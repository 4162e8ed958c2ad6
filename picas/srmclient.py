"""Upstream PiCaS's older SRM download helpers, on top of :mod:`picas.srm`."""
from __future__ import annotations

import logging
import queue

from . import srm


def download(files: dict, threads: int = 10) -> None:
    """Download the SRM paths that are the values of ``files``, ``threads`` at once."""
    srm._run_downloaders(files.values(), Downloader, threads)


class Downloader(srm.Downloader):
    """A download thread with upstream's older retry count and logger name."""

    attempts = 10

    def __init__(self, q: queue.Queue) -> None:
        super().__init__(q, logging.getLogger("Pindel"))
