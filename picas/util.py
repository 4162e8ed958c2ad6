"""Small helpers that upstream PiCaS scripts import from ``picas.util``."""
from __future__ import annotations

import time
from copy import deepcopy


def seconds() -> int:
    """Now, as whole seconds since the epoch: the unit of lock and done."""
    return int(time.time())


def merge_dicts(dict1: dict, dict2: dict) -> dict:
    """A deep copy of ``dict1`` updated with ``dict2``."""
    merged = deepcopy(dict1)
    merged.update(dict2)
    return merged


class Timer:
    """Wall-clock time since creation or the last reset."""

    def __init__(self) -> None:
        self.t = time.time()

    def elapsed(self) -> float:
        return time.time() - self.t

    def reset(self) -> float:
        """Restart the timer; return the time that had elapsed."""
        now = time.time()
        elapsed, self.t = now - self.t, now
        return elapsed


def time_elapsed(timer: Timer, max: float = 30.0) -> bool:
    """True once ``timer`` has run longer than ``max`` seconds (a stop function)."""
    return timer.elapsed() > max

