"""Upstream PiCaS's ``TokenGenerator``: the fields of a new, empty token."""
from __future__ import annotations

from typing import Any


class TokenGenerator:
    """Makes empty tokens: todo, never scrubbed, with no host yet."""

    @staticmethod
    def get_empty_token() -> dict[str, Any]:
        """A new token dict, without an id; each call gives a fresh one."""
        return {"type": "token", "lock": 0, "done": 0, "hostname": "", "scrub_count": 0}
