"""Helpers shared by the tests."""
from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip for a missing part on a developer's machine; fail under CI."""
    if IN_CI:
        pytest.fail(f"{what} is missing, and CI must provide it (CI=true)")
    pytest.skip(f"{what} is missing")
