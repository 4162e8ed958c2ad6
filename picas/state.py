"""The token state machine: the only place that knows how state is stored.

A token's state is derived from upstream PiCaS's fields, so that tokens
written by upstream pilots and the ``Monitor`` views keep their meaning:

=========  ===============================================  ==============
state      stored as                                        Monitor view
=========  ===============================================  ==============
todo       lock == 0, done == 0                             todo
locked     lock > 0, done == 0                              locked
done       lock > 0, done > 0, exit_code == 0               done
error      lock > 0, done > 0, exit_code != 0 (or 99/99)    error
held       lock == -1, done == 0                            held
cancelled  lock == -1, done == -1                           cancelled
waiting    lock == -1, done == -2                           waiting
=========  ===============================================  ==============

A waiting token names in ``waiting_for`` the tokens it still waits for
(of those it was added ``after``), and in ``blocked_by`` those of them
that ended in error or were cancelled. Its ``done`` is not 0, so neither
upstream's ``todo`` view nor a pilot's claim ever sees it as work; it
becomes todo by a write, when the last of its parents is done
(:func:`follow`, called by :mod:`picas.dependencies`).

The JavaScript in ``couchviews/Monitor`` mirrors :func:`classify`; a test
checks that the two agree on every state. Every transition below is a
pure function of a token dict: callers write the result with the
document's ``_rev``, so a concurrent change shows up as a conflict.
"""
from __future__ import annotations

import enum
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from . import jobid
from .errors import InvalidToken
from .token import Token

#: ``lock`` value of a token that no pilot may claim (held or cancelled).
NOT_CLAIMABLE = -1
#: ``done`` value of a cancelled token.
CANCELLED_DONE = -1
#: ``done`` value of a token waiting for others (with ``lock`` NOT_CLAIMABLE).
WAITING_DONE = -2
#: Upstream PiCaS marks errors with lock = done = 99.
UPSTREAM_ERROR = 99

DEFAULT_MAX_ATTEMPTS = 3
#: Infrastructure failures (lost leases, interruptions) retry more often,
#: but not forever: a token that kills its node every time must stop.
DEFAULT_MAX_INFRA_ATTEMPTS = 10


class TokenState(str, enum.Enum):
    TODO = "todo"
    LOCKED = "locked"
    DONE = "done"
    ERROR = "error"
    HELD = "held"
    CANCELLED = "cancelled"
    WAITING = "waiting"


class Outcome(str, enum.Enum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    LEASE_LOST = "lease_lost"
    CANCELLED = "cancelled"

    @property
    def is_application_failure(self) -> bool:
        """The task itself failed: counts against ``max_attempts``."""
        return self in (Outcome.FAILED, Outcome.TIMED_OUT)

    @property
    def is_infrastructure_failure(self) -> bool:
        """The pilot or node failed: must not use up the task's retries."""
        return self in (Outcome.INTERRUPTED, Outcome.LEASE_LOST)


def _number(value: Any) -> float:
    """JavaScript's number conversion, as the views apply it to ``lock``/``done``.

    Upstream fields may be ints, floats, strings or missing; a missing field
    compares false with everything, as ``undefined`` does in the views.
    """
    if value is None:
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        try:
            return float(text)
        except ValueError:
            return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def exit_code_is_zero(value: Any) -> bool:
    """Mirror of the views' ``parseInt(doc.exit_code) === 0``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value == 0
    if isinstance(value, str):
        match = _LEADING_INT.match(value)
        return match is not None and int(match.group(0)) == 0
    return False


_LEADING_INT = re.compile(r"\s*[+-]?\d+")


def is_token(doc: Token) -> bool:
    return doc.get("type") == "token" and not str(doc.get("_id", "")).startswith("_design/")


def classify(doc: Token) -> TokenState | None:
    """The state of a token document, or None for documents in no state."""
    if not is_token(doc):
        return None
    lock, done = _number(doc.get("lock")), _number(doc.get("done"))
    if lock == 0 and done == 0:
        return TokenState.TODO
    if lock > 0 and done == 0:
        return TokenState.LOCKED
    if lock > 0 and done > 0:
        upstream_error = lock == UPSTREAM_ERROR and done == UPSTREAM_ERROR
        if exit_code_is_zero(doc.get("exit_code")) and not upstream_error:
            return TokenState.DONE
        return TokenState.ERROR
    if lock == NOT_CLAIMABLE and done == 0:
        return TokenState.HELD
    if lock == NOT_CLAIMABLE and done == CANCELLED_DONE:
        return TokenState.CANCELLED
    if lock == NOT_CLAIMABLE and done == WAITING_DONE:
        return TokenState.WAITING
    return None


def require(doc: Token, *states: TokenState) -> TokenState:
    state = classify(doc)
    if state not in states:
        wanted = " or ".join(s.value for s in states)
        raise InvalidToken(
            f"token '{doc.get('_id')}' is {state.value if state else 'not a token'}, "
            f"not {wanted}")
    return state


@dataclass(frozen=True)
class Holder:
    """Who claims: recorded on the token so that people and pilots can tell."""

    pilot_id: str
    hostname: str
    job_id: tuple[str, str | None] | None = None

    @classmethod
    def here(cls, pilot_id: str | None = None, hostname: str | None = None) -> Holder:
        import socket
        import uuid
        return cls(pilot_id=pilot_id or uuid.uuid4().hex[:12],
                   hostname=hostname or socket.gethostname(),
                   job_id=jobid.current_job_id())


def attempts(doc: dict) -> list[dict]:
    """The recorded attempts that count (late results excluded)."""
    return [a for a in doc.get("attempts", []) if not a.get("late")]


def _since_reset(doc: dict) -> list[dict]:
    """Attempts that count against the budgets: a reset starts them afresh."""
    return attempts(doc)[int(doc.get("retry_base") or 0):]


def _blames_the_task(attempt: Token) -> bool:
    """A failure of the task itself, not one put down to a broken host (:func:`blame_host`)."""
    return Outcome(attempt["outcome"]).is_application_failure and not attempt.get("host_failure")


def application_failures(doc: Token) -> int:
    return sum(1 for a in _since_reset(doc) if _blames_the_task(a))


def infrastructure_failures(doc: Token) -> int:
    return sum(1 for a in _since_reset(doc)
               if Outcome(a["outcome"]).is_infrastructure_failure or a.get("host_failure"))


def max_attempts(doc: Token, default: int = DEFAULT_MAX_ATTEMPTS) -> int:
    value = doc.get("max_attempts")
    return int(value) if isinstance(value, (int, float)) and value >= 1 else default


# -- transitions ---------------------------------------------------------------

def _copy(value: Any) -> Any:
    """A deep copy of a JSON value, several times faster than copy.deepcopy:
    a token goes through a few transitions every time it runs."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def lock(doc: Token, holder: Holder, lease_seconds: float,
         now: float | None = None) -> Token:
    """todo -> locked: a copy of ``doc`` held by ``holder`` until the lease ends."""
    require(doc, TokenState.TODO)
    now = time.time() if now is None else now
    token = _copy(doc)
    jobid.remove_job_id(token)
    token.update(lock=max(int(now), 1), done=0, hostname=holder.hostname)
    if holder.job_id:
        token[holder.job_id[0]] = holder.job_id[1]
    token["lease"] = {
        "id": f"{holder.pilot_id}-{int(now * 1000)}",
        "pilot": holder.pilot_id,
        "host": holder.hostname,
        "job_id": holder.job_id[1] if holder.job_id else None,
        "attempt": len(attempts(doc)) + 1,
        "claimed": now,
        "expires": now + lease_seconds,
    }
    return token


def lease_id(doc: Token) -> str | None:
    lease = doc.get("lease") or {}
    return lease.get("id")


def held_under(doc: Token, lease: str | None) -> bool:
    """Whether ``doc`` is still locked under the lease ``lease``: the one
    test of "is this token still ours" for renewals and results."""
    return classify(doc) is TokenState.LOCKED and lease_id(doc) == lease


def renew(doc: Token, lease_seconds: float, now: float | None = None) -> Token:
    """A copy of a locked token with its lease extended from now."""
    require(doc, TokenState.LOCKED)
    now = time.time() if now is None else now
    token = _copy(doc)
    token["lease"] = {**token.get("lease", {}), "expires": now + lease_seconds}
    return token


def withdraw(doc: Token) -> Token:
    """A lock whose write a cluster could not confirm, marked *in doubt*.

    A conflicting lock may hold the quorum, so the pilot must not run the
    token. The mark tells everyone that this lock never ran: its lease is
    over at once, and when branches are resolved it gives way to any
    other (see :mod:`picas.conflicts`).
    """
    require(doc, TokenState.LOCKED)
    token = _copy(doc)
    lease = token.setdefault("lease", {})
    lease.update(in_doubt=True, expires=lease.get("claimed", 0))
    return token


def in_doubt(doc: Token) -> bool:
    """Whether a locked token's lock was never confirmed (see :func:`withdraw`)."""
    return bool((doc.get("lease") or {}).get("in_doubt")) and classify(doc) is TokenState.LOCKED


def merge_branches(kept: Token, others: list[Token]) -> Token:
    """``kept`` with what the other branches of the same token know as well:
    their attempts, and, for the same lease, a cancel request and the
    latest renewal. Equal to ``kept`` when they add nothing."""
    token = _copy(kept)
    seen = {_attempt_key(a) for a in token.get("attempts", [])}
    added = False
    for other in others:
        for attempt in other.get("attempts", []):
            if _attempt_key(attempt) not in seen:
                seen.add(_attempt_key(attempt))
                token.setdefault("attempts", []).append(_copy(attempt))
                added = True
        same_lease = (classify(token) is TokenState.LOCKED and lease_id(token) is not None
                      and lease_id(other) == lease_id(token))
        if same_lease:
            if other.get("cancel_requested"):
                token["cancel_requested"] = True
            expires = (other.get("lease") or {}).get("expires")
            if isinstance(expires, (int, float)) and expires > token["lease"].get("expires", 0):
                token["lease"]["expires"] = expires
    if added:
        token["attempts"].sort(key=lambda a: (a.get("end") or 0, a.get("n") or 0))
    return token


def _attempt_key(attempt: dict) -> tuple:
    return (attempt.get("lease"), attempt.get("n"), attempt.get("outcome"),
            bool(attempt.get("late")))


def lease_expired(doc: Token, now: float | None = None) -> bool:
    """True for a locked token whose lease ran out (tokens without one never expire)."""
    lease = doc.get("lease")
    if classify(doc) is not TokenState.LOCKED or not lease or "expires" not in lease:
        return False
    return float(lease["expires"]) < (time.time() if now is None else now)


def new_attempt(doc: dict, outcome: Outcome, *, start: float | None = None,
                end: float | None = None, exit_code: int | None = None,
                logs: list[str] | None = None, **extra: Any) -> dict:
    """The attempt record of the lease ``doc`` carries."""
    lease = doc.get("lease") or {}
    end = time.time() if end is None else end
    start = lease.get("claimed", end) if start is None else start
    record = {
        "n": lease.get("attempt", len(attempts(doc)) + 1),
        "lease": lease.get("id"),
        "host": lease.get("host", doc.get("hostname", "")),
        "pilot": lease.get("pilot"),
        "job_id": lease.get("job_id"),
        "start": start,
        "end": end,
        "duration": round(end - start, 3),
        "exit_code": exit_code,
        "outcome": outcome.value,
        "logs": list(logs or []),
    }
    record.update(extra)
    return record


def _back_to_todo(token: Token) -> Token:
    token.update(lock=0, done=0)
    token["scrub_count"] = int(token.get("scrub_count") or 0) + 1
    token.pop("lease", None)
    token.pop("cancel_requested", None)
    jobid.remove_job_id(token)
    return token


def finish(doc: dict, attempt: dict, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
           max_infra_attempts: int = DEFAULT_MAX_INFRA_ATTEMPTS,
           now: float | None = None, fatal: bool = False) -> Token:
    """locked -> done, error or (to retry) todo, recording ``attempt``.

    Application failures go back to todo until ``max_attempts`` is used up;
    infrastructure failures have their own, larger budget. ``fatal`` sends
    a failure straight to error: retrying a token that has no command, say,
    cannot help.
    """
    require(doc, TokenState.LOCKED)
    now = time.time() if now is None else now
    token = _copy(doc)
    token.setdefault("attempts", []).append(attempt)
    outcome = Outcome(attempt["outcome"])
    if attempt.get("exit_code") is not None:
        token["exit_code"] = attempt["exit_code"]
    if outcome is Outcome.SUCCEEDED:
        token.update(done=max(int(now), 1), exit_code=0)
    elif outcome is Outcome.CANCELLED:
        token.update(lock=NOT_CLAIMABLE, done=CANCELLED_DONE)
    elif not fatal and _may_retry(token, outcome, default_max_attempts, max_infra_attempts):
        return _back_to_todo(token)
    else:
        token["done"] = max(int(now), 1)
        if exit_code_is_zero(token.get("exit_code")) or token.get("exit_code") in (None, ""):
            token["exit_code"] = attempt.get("exit_code") or _failure_code(outcome)
    token.pop("lease", None)
    token.pop("cancel_requested", None)
    return token


def _may_retry(token: Token, outcome: Outcome, default_max_attempts: int,
               max_infra_attempts: int) -> bool:
    if outcome.is_application_failure:
        return application_failures(token) < max_attempts(token, default_max_attempts)
    if outcome.is_infrastructure_failure:
        return infrastructure_failures(token) < max_infra_attempts
    return False


def _failure_code(outcome: Outcome) -> int:
    """A non-zero exit code for failures that have none (kept in the error view)."""
    return {Outcome.TIMED_OUT: 124, Outcome.INTERRUPTED: 143}.get(outcome, 1)


def blame_host(doc: Token, pilot: str, default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
               max_infra_attempts: int = DEFAULT_MAX_INFRA_ATTEMPTS) -> Token:
    """The token's failures under ``pilot``, which found its host broken, become
    infrastructure failures: they no longer use up the task's retries, and a
    token they sent to error goes back to todo. InvalidToken if there are none.
    """
    token = _copy(doc)
    blamed = [a for a in token.get("attempts", [])
              if a.get("pilot") == pilot and _blames_the_task(a)]
    if not blamed:
        raise InvalidToken(f"token '{doc.get('_id')}' has no failure under pilot {pilot}")
    for attempt in blamed:
        attempt["host_failure"] = True
    if (classify(token) is TokenState.ERROR
            and application_failures(token) < max_attempts(token, default_max_attempts)
            and infrastructure_failures(token) < max_infra_attempts):
        token = _back_to_todo(token)
        token["exit_code"] = ""
    return token


def release(doc: Token) -> Token:
    """locked -> todo for a prefetched token that never started: no attempt counted."""
    require(doc, TokenState.LOCKED)
    token = _copy(doc)
    token.update(lock=0, done=0)
    token.pop("lease", None)
    jobid.remove_job_id(token)
    return token


def expire(doc: Token, now: float | None = None) -> Token:
    """A locked token whose lease ran out: record the lost attempt, retry it.

    A lock in doubt never ran: it goes back to todo with nothing recorded.
    """
    if in_doubt(doc):
        return release(doc)
    attempt = new_attempt(doc, Outcome.LEASE_LOST, end=now)
    return finish(doc, attempt, now=now)


def add_late_attempt(doc: dict, attempt: dict) -> dict:
    """Record a result that arrived after its lease was taken over.

    The state is left alone: the newer attempt owns the token now.
    """
    token = _copy(doc)
    token.setdefault("attempts", []).append({**attempt, "late": True})
    return token


def hold(doc: Token) -> Token:
    """todo -> held: kept out of every pilot's reach until released."""
    require(doc, TokenState.TODO)
    return {**_copy(doc), "lock": NOT_CLAIMABLE, "done": 0}


def unhold(doc: Token) -> Token:
    """held -> todo."""
    require(doc, TokenState.HELD)
    return {**_copy(doc), "lock": 0, "done": 0}


def cancel(doc: Token) -> Token:
    """todo/held/waiting -> cancelled; a locked token is asked to stop instead.

    The pilot running it sees ``cancel_requested`` at its next heartbeat,
    kills the task, and records a cancelled attempt.
    """
    state = require(doc, TokenState.TODO, TokenState.HELD, TokenState.LOCKED,
                    TokenState.WAITING)
    token = _copy(doc)
    if state is TokenState.LOCKED:
        token["cancel_requested"] = True
    else:
        token.update(lock=NOT_CLAIMABLE, done=CANCELLED_DONE)
    return token


def reset(doc: Token) -> Token:
    """locked, error, done or cancelled -> todo, by a person's decision.

    Upstream's "scrub": ``scrub_count`` goes up. Attempts stay as history;
    the retry budget starts afresh from here. A token cancelled while it
    waited for others goes back to waiting for them.
    """
    require(doc, TokenState.LOCKED, TokenState.ERROR, TokenState.DONE,
            TokenState.CANCELLED, TokenState.HELD)
    token = _back_to_todo(_copy(doc))
    token["exit_code"] = ""
    token["retry_base"] = len(attempts(token))
    if token.get("gate"):  # it has nothing to run: it waits for its parents again
        token["waiting_for"] = list(token.get("after") or [])
    if token.get("waiting_for"):
        token.update(lock=NOT_CLAIMABLE, done=WAITING_DONE)
    return token


# -- dependencies --------------------------------------------------------------

def wait(doc: Token, parents: list[str]) -> Token:
    """A new token that waits until every one of ``parents`` is done."""
    token = _copy(doc)
    token.update(lock=NOT_CLAIMABLE, done=WAITING_DONE, after=list(parents),
                 waiting_for=list(parents))
    return token


def gate(gate_id: str, parents: list[str]) -> Token:
    """A token with nothing to run that stands for ``parents`` to those waiting
    for all of them: done, not todo, once they are (see picas.dependencies)."""
    return wait({"_id": gate_id, "type": "token", "lock": 0, "done": 0, "gate": True,
                 "input": {}, "exit_code": ""}, parents)


#: What a parent's state means for a token waiting for it.
_BLOCKING = (TokenState.ERROR, TokenState.CANCELLED, None)


def follow(doc: Token, parents: dict[str, TokenState | None]) -> Token | None:
    """A waiting token after its ``parents`` reached the given states (None:
    the parent is gone); None when that changes nothing.

    A done parent is waited for no more, and the token becomes todo once
    none is left (a gate becomes done); an errored, cancelled or missing one blocks it (named in
    ``blocked_by``) until the parent is reset and done after all. Applying
    the same news twice changes nothing, so a retried or repeated release
    is harmless.
    """
    if classify(doc) is not TokenState.WAITING:
        return None
    before = list(doc.get("waiting_for") or [])
    done = {p for p, s in parents.items() if s is TokenState.DONE}
    waiting = [p for p in before if p not in done]
    still = set(waiting)
    failed = {p for p, s in parents.items() if s in _BLOCKING and p in still}
    cleared = set(parents) - failed
    old = list(doc.get("blocked_by") or [])
    blocked = [p for p in old if p not in cleared and p in still]
    blocked += sorted(failed - set(blocked))
    if waiting == before and blocked == old:
        return None
    token = _copy(doc)
    token["waiting_for"] = waiting
    token["blocked_by"] = blocked
    if not blocked:
        token.pop("blocked_by")
    if not waiting:
        token.pop("waiting_for")
        if token.get("gate"):
            now = max(int(time.time()), 1)
            token.update(lock=now, done=now, exit_code=0)
        else:
            token.update(lock=0, done=0)
    return token
