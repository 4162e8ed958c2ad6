"""Upstream PiCaS's token modifiers, for scripts that use them.

They change a token dict in place and return it; the caller saves it.
New code can use :mod:`picas.state`, which also checks the state.
"""
from __future__ import annotations

import socket
from typing import Any

from . import jobid, state
from .util import seconds


class TokenModifier:
    """The interface of a token modifier."""

    def __init__(self, timeout: int = 86400) -> None:
        self.timeout = timeout

    def lock(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("lock is not implemented")

    def unlock(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("unlock is not implemented")

    def close(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("close is not implemented")

    def unclose(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("unclose is not implemented")

    def add_output(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("add_output is not implemented")

    def scrub(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("scrub is not implemented")

    def set_error(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("set_error is not implemented")


class BasicTokenModifier(TokenModifier):
    """Lock, close, scrub or fail a token, the upstream way."""

    def __init__(self, timeout: int = 86400) -> None:
        super().__init__(timeout)

    def lock(self, token: Any) -> Any:
        jobid.add_job_id(token)
        token.update({"hostname": socket.gethostname(), "lock": seconds()})
        return token

    def unlock(self, token: Any) -> Any:
        jobid.remove_job_id(token)
        token.update({"hostname": socket.gethostname(), "lock": 0})
        return token

    def close(self, token: Any) -> Any:
        token.update({"done": seconds()})
        return token

    def unclose(self, token: Any) -> Any:
        token.update({"done": 0})
        jobid.remove_job_id(token)
        return token

    def add_output(self, token: Any, output: dict) -> Any:
        token.update(output)
        return token

    def scrub(self, token: Any) -> Any:
        token["scrub_count"] = int(token.get("scrub_count") or 0) + 1
        return self.unlock(token)

    def set_error(self, token: Any) -> Any:
        token["lock"] = state.UPSTREAM_ERROR
        token["done"] = state.UPSTREAM_ERROR
        return token


class NestedTokenModifier(TokenModifier):
    """Modify a token nested inside a record, found by key or by key path.

    ``ref`` is a key, or a list whose first element names the record and
    whose remaining elements are the path to the token inside it.
    """

    def __init__(self, timeout: int = 86400) -> None:
        super().__init__(timeout)
        self.tokenmodifier = BasicTokenModifier()

    def get_token(self, ref: Any, record: Any) -> Any:
        if isinstance(ref, list):
            token = record
            for key in ref[1:]:
                token = token[key]
            return token
        return record[ref]

    def _update_record(self, ref: Any, record: Any, token: Any) -> Any:
        if isinstance(ref, list):
            parent = record
            for key in ref[1:-1]:
                parent = parent[key]
            parent[ref[-1]] = token
        else:
            record[ref] = token
        return record

    def _apply(self, method: str, ref: Any, record: Any, *args: Any) -> Any:
        token = getattr(self.tokenmodifier, method)(self.get_token(ref, record), *args)
        return self._update_record(ref, record, token)

    def lock(self, ref: Any, record: Any) -> Any:
        return self._apply("lock", ref, record)

    def unlock(self, ref: Any, record: Any) -> Any:
        return self._apply("unlock", ref, record)

    def close(self, ref: Any, record: Any) -> Any:
        return self._apply("close", ref, record)

    def unclose(self, ref: Any, record: Any) -> Any:
        return self._apply("unclose", ref, record)

    def add_output(self, ref: Any, record: Any, output: dict) -> Any:
        return self._apply("add_output", ref, record, output)

    def scrub(self, ref: Any, record: Any) -> Any:
        return self._apply("scrub", ref, record)

    def set_error(self, ref: Any, record: Any) -> Any:
        return self._apply("set_error", ref, record)
