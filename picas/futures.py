"""Tokens as futures: submit work from a notebook or a driver script, and
wait for it while pilots run it on the cluster.

:class:`Pool` has the shape of :class:`concurrent.futures.Executor`::

    with Pool(db) as pool:
        future = pool.submit("sleep 1; echo hi")   # a command token
        print(future.result().stdout())
        print(list(pool.map(mymodule.square, range(10))))   # function tokens

Each :meth:`Pool.submit` adds a token through the same checks and
content-hash ids as ``picas tokens add``, and returns a :class:`TokenFuture`
(a real :class:`concurrent.futures.Future`, so ``as_completed`` and ``wait``
take it). All futures of a pool learn their tokens' fate from one changes
feed (:mod:`picas.watch`), not from a poll per token. A future resolves
once, at the first finished state it sees: done gives the result, error
raises :class:`errors.TokenFailed`, cancelled raises ``CancelledError``.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future, InvalidStateError, as_completed, wait
from dataclasses import dataclass, field, replace
from typing import Any

from . import adding, errors, operations, shaping, state
from .database import Database
from .sources import Record
from .state import TokenState
from .token import Token
from .update import update_many
from .watch import Watcher

__all__ = ["CancelledError", "CommandResult", "Pool", "TokenFuture", "as_completed",
           "function_name", "wait"]

log = logging.getLogger(__name__)

_FINISHED = (TokenState.DONE, TokenState.ERROR, TokenState.CANCELLED)


@dataclass(frozen=True)
class CommandResult:
    """What a finished command token gives: its exit code, its ``output``
    field, and its last attempt's logs (read when asked for)."""

    token_id: str
    exit_code: int
    #: the token's ``output`` field, as the task or pilot left it
    output: Any
    #: attempts recorded (retries included)
    attempts: int
    #: the last attempt's log attachments (``attempt-N.stdout`` ...)
    logs: tuple[str, ...]
    token: Token = field(repr=False, compare=False)
    db: Database = field(repr=False, compare=False)

    def stdout(self) -> str:
        """The last attempt's standard output (its tail, as the pilot kept it)."""
        return self._log("stdout")

    def stderr(self) -> str:
        return self._log("stderr")

    def _log(self, stream: str) -> str:
        name = next((n for n in self.logs if n.endswith("." + stream)), None)
        if name is None:
            return ""  # pilots store no empty streams
        return self.db.get_attachment(self.token_id, name).decode("utf-8", "replace")


class TokenFuture(Future):
    """The future of one token. ``token_id`` names it in the database."""

    def __init__(self, pool: Pool, token_id: str) -> None:
        super().__init__()
        self.token_id = token_id
        self._pool = pool

    def __repr__(self) -> str:
        return f"<TokenFuture {self.token_id} {self._state.lower()}>"

    def cancel(self) -> bool:
        """Cancel the token in the database if no pilot has taken it yet;
        False when it runs or ran (as :meth:`concurrent.futures.Future.cancel`)."""
        if self.cancelled():
            return True
        if self.running() or self.done():
            return False
        return self.token_id in self._pool._cancel_tokens([self.token_id])


def function_name(fn: Callable) -> str:
    """``"module:qualname"`` of a function that a pilot can import.

    Lambdas, functions defined inside functions, and functions of
    ``__main__`` (a script or notebook) cannot be imported elsewhere: they
    are refused here, not when a pilot fails to run them.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not callable(fn) or not module or not qualname:
        raise errors.InvalidToken(f"{fn!r} is not a function that a pilot can import")
    shown = f"{module}.{qualname}"
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise errors.InvalidToken(f"{shown} is a lambda or is defined inside a function, "
                                  "which a pilot cannot import: define it at the top level "
                                  "of a module")
    if module == "__main__":
        raise errors.InvalidToken(f"{qualname} is defined in __main__ (this script or "
                                  "notebook), which a pilot cannot import: move it into a "
                                  "module that the pilots can import")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if found is not fn:
        raise errors.InvalidToken(f"{shown} does not name this function when imported "
                                  "(a method, or a decorated or replaced function?): "
                                  "submit a plain module-level function")
    return f"{module}:{qualname}"


def _json(value: Any, what: str) -> Any:
    """``value`` as JSON would store it (tuples become lists), or a clear error."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise errors.InvalidToken(f"{what} must be JSON values (numbers, text, lists, "
                                  f"objects): {exc}") from None


class Pool:
    """Submit tokens and wait for them, as with :class:`concurrent.futures.Executor`.

    ``priority``, ``max_attempts`` and ``tags`` go on every token submitted
    (as the same options of ``picas tokens add``). ``notify(future)`` runs
    when any of this pool's tokens finishes, in the pool's feed thread:
    keep it short. Nothing is sent before the first submit.
    """

    def __init__(self, db: Database, *, priority: float | None = None,
                 max_attempts: int | None = None, tags: Iterable[str] = (),
                 notify: Callable[[TokenFuture], Any] | None = None) -> None:
        self.db = db
        self.shape = shaping.Shape(priority=priority, max_attempts=max_attempts,
                                   tags=tuple(tags))
        self.notify = notify
        self._lock = threading.Lock()
        #: futures not yet resolved, by token id (a token submitted twice has two)
        self._pending: dict[str, list[TokenFuture]] = {}
        self._closed = False
        self._watcher = Watcher(db, self._on_token, self._on_failure)

    def __repr__(self) -> str:
        return f"<Pool {self.db.name}: {len(self._pending)} pending>"

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        # Leaving the block by an exception (^C in a notebook) must not wait for the cluster.
        self.shutdown(wait=kind is None)

    # -- submitting -----------------------------------------------------------
    def submit(self, fn: Callable | str | list[str], /, *args: Any,
               **kwargs: Any) -> TokenFuture:
        """A token for ``fn(*args, **kwargs)``, or for a command; its future.

        A command is a string (run by a shell) or a list (run directly).
        With keyword arguments, they are the token's fields (as in a line of
        ``picas tokens add`` input) and a string command is a template
        filled from them: ``submit("run.sh {path}", path="a.dat")``.
        Submitting the same work again gives a future of the same token.
        """
        return self._submit([self._token(fn, args, kwargs)])[0]

    def map(self, fn: Callable | str, *iterables: Iterable[Any],
            timeout: float | None = None) -> Iterator[Any]:
        """Results of ``fn`` over the iterables, in order, as
        :meth:`concurrent.futures.Executor.map`; all tokens are added in bulk
        first. For a command template, give one iterable of field mappings.
        """
        end = None if timeout is None else time.monotonic() + timeout
        if isinstance(fn, (str, list)):
            if len(iterables) != 1:
                raise TypeError("map(COMMAND, records): give one iterable of field mappings")
            tokens = [self._token(fn, (), dict(fields)) for fields in iterables[0]]
        else:
            tokens = [self._token(fn, args, {}) for args in zip(*iterables, strict=False)]
        futures = self._submit(tokens)

        def results() -> Iterator[Any]:
            left = list(futures)
            try:
                while left:
                    wait_for = None if end is None else max(0.0, end - time.monotonic())
                    yield left[0].result(wait_for)
                    left.pop(0)
            finally:
                self._cancel_tokens([f.token_id for f in left if not f.done()])
        return results()

    def watch(self, token_ids: Iterable[str]) -> list[TokenFuture]:
        """Futures of tokens that exist already (added by ``picas tokens add``,
        say); :class:`errors.NotFound` names any that do not."""
        ids = list(token_ids)
        operations.select(self.db, ids)
        return self._register(ids)

    def _token(self, fn: Callable | str | list[str], args: tuple, kwargs: dict) -> Token:
        if isinstance(fn, (str, list)):
            if args:
                raise TypeError("a command takes keyword fields, not positional arguments: "
                                "submit('run.sh {path}', path='a.dat')")
            if isinstance(fn, str) and kwargs:
                return shaping.shape(Record(kwargs, "submit"), replace(self.shape, command=fn))
            return shaping.shape(Record({**kwargs, "command": fn}, "submit"), self.shape)
        name = function_name(fn)
        token = shaping.shape(Record({}, "submit"), replace(self.shape, require_command=False))
        token.update(function=name, args=_json(list(args), f"the arguments of {name}"),
                     kwargs=_json(kwargs, f"the keyword arguments of {name}"))
        token["_id"] = shaping.token_id(token)
        return token

    def _submit(self, tokens: list[Token]) -> list[TokenFuture]:
        if self._closed:
            raise RuntimeError("cannot submit to a pool that was shut down")
        report = adding.add(self.db, tokens)
        if report.stopped_by is not None:
            raise report.stopped_by
        if report.failed:
            token_id, reason = report.failed[0]
            raise errors.PicasError(f"{len(report.failed)} token(s) could not be added; "
                                    f"'{token_id}': {reason}")
        return self._register([token["_id"] for token in tokens])

    def _register(self, ids: list[str]) -> list[TokenFuture]:
        futures = [TokenFuture(self, token_id) for token_id in ids]
        if self.notify is not None:
            for future in futures:
                future.add_done_callback(self._notify)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a pool that was shut down")
            for future in futures:
                self._pending.setdefault(future.token_id, []).append(future)
        self._watcher.watch(ids)
        return futures

    def _notify(self, future: Future) -> None:
        assert self.notify is not None and isinstance(future, TokenFuture)
        try:
            self.notify(future)
        except Exception:
            log.exception("the notify callback failed for token %s", future.token_id)

    # -- cancelling and shutting down ----------------------------------------
    def _cancel_tokens(self, ids: list[str]) -> set[str]:
        """Cancel those of ``ids`` that no pilot has taken; return those that are cancelled."""
        cancelled: set[str] = set()

        def change(doc: Token | None) -> Token | None:
            if doc is None:
                return None
            found = state.classify(doc)
            if found is TokenState.CANCELLED:
                cancelled.add(doc["_id"])  # by someone else already
            if found not in (TokenState.TODO, TokenState.HELD):
                return None  # taken, finished, or cancelled already: left alone
            return state.cancel(doc)

        if ids:
            answered, _ = update_many(self.db, list(dict.fromkeys(ids)), change)
            cancelled.update(doc["_id"] for doc, result in answered if "error" not in result)
        for token_id in cancelled:
            self._resolve({"_id": token_id, **_CANCELLED})
        return cancelled

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop following tokens, as :meth:`concurrent.futures.Executor.shutdown`.

        ``wait`` first waits for every future; ``cancel_futures`` first
        cancels the tokens that no pilot has taken. Futures still pending
        then raise :class:`errors.PoolClosed`; the tokens stay in the
        database, and another pool can :meth:`watch` them.
        """
        with self._lock:
            self._closed = True
            pending = [f for futures in self._pending.values() for f in futures]
        if cancel_futures:
            self._cancel_tokens([f.token_id for f in pending if not f.running()])
        if wait:
            concurrent.futures.wait(pending)
        self._watcher.stop()
        self._fail_all(errors.PoolClosed("the pool was shut down before this token finished: "
                                         "Pool.watch() it to wait again"))

    # -- the feed thread ------------------------------------------------------
    def _on_token(self, doc: Token) -> None:
        found = state.classify(doc)
        if found is TokenState.LOCKED:
            with self._lock:
                futures = list(self._pending.get(doc["_id"], []))
            for future in futures:
                if not future.running() and not future.done():
                    future.set_running_or_notify_cancel()
        elif found in _FINISHED or doc.get("_deleted"):
            self._resolve(doc)

    def _resolve(self, doc: Token) -> None:
        """Settle every future of this finished (or deleted) token, once."""
        with self._lock:
            futures = self._pending.pop(doc["_id"], [])
        if not futures:
            return
        self._watcher.unwatch([doc["_id"]])
        cancelled = state.classify(doc) is TokenState.CANCELLED
        outcome = None if cancelled else _outcome(doc, self.db)
        for future in futures:
            if cancelled and Future.cancel(future):
                continue  # base cancel: the token is cancelled already
            error = CancelledError(f"token {doc['_id']} was cancelled") if cancelled \
                else outcome if isinstance(outcome, BaseException) else None
            try:
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(outcome)
            except InvalidStateError:
                pass  # settled meanwhile (cancelled by its caller)

    def _on_failure(self, exc: Exception) -> None:
        self._fail_all(exc)

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            futures = [f for pending in self._pending.values() for f in pending]
            self._pending.clear()
        for future in futures:
            with contextlib.suppress(InvalidStateError):
                future.set_exception(exc)


#: The fields that make a token cancelled, for resolving a future at once.
_CANCELLED = {"type": "token", "lock": state.NOT_CLAIMABLE, "done": state.CANCELLED_DONE}


def _outcome(doc: Token, db: Database) -> Any:
    """What a future of this finished token gives: its result, or the
    exception to raise."""
    token_id = doc["_id"]
    if doc.get("_deleted"):
        return errors.TokenFailed(f"token {token_id} was deleted before it finished", token_id)
    tried = state.attempts(doc)
    last = tried[-1] if tried else {}
    if state.classify(doc) is TokenState.ERROR:
        why = last.get("error") or last.get("signature") or last.get("outcome") or "no attempt"
        return errors.TokenFailed(
            f"token {token_id} failed with exit code {doc.get('exit_code')} after "
            f"{len(tried)} attempt(s): {why}", token_id, doc.get("exit_code"), len(tried), doc)
    if "function" in doc:
        return doc.get("output")
    return CommandResult(token_id, int(doc.get("exit_code") or 0), doc.get("output"),
                         len(tried), tuple(last.get("logs") or ()), doc, db)
