"""The pilot: claim tokens, run their commands, record every attempt.

Execution is at-least-once: a token whose pilot vanished runs again once
its lease has expired. Results are written in bulk (one request for many
quick tokens), prefetching is bounded, and tokens prefetched but never
started are handed back when the pilot stops.
"""
from __future__ import annotations

import functools
import logging
import math
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from . import (
    claim,
    designdocs,
    errors,
    lease,
    operations,
    pool,
    results,
    runner,
    shutdown,
    staging,
    state,
    triage,
)
from .database import Database
from .state import Holder, Outcome
from .token import Token

log = logging.getLogger(__name__)

#: Seconds between checks whether the pool has started using priorities.
PRIORITY_CHECK = 10.0
#: The automatic batch claims about this many seconds of work at a time...
BATCH_SECONDS = 2.0
#: ...but never more tokens than this, and it grows at most this fast.
MAX_AUTO_BATCH = 100
BATCH_GROWTH = 4
#: Claims in a row in which the cluster confirmed no lock but left some in
#: doubt: a quorum of nodes is missing, not merely a race lost.
NO_QUORUM_CLAIMS = 10
#: Failures in a row, of different tokens, after which a pilot takes its host for broken.
DEFAULT_BLACK_HOLE = 5

@dataclass(frozen=True)
class PilotOptions:
    max_tasks: int | None = None
    max_time: float | None = None
    max_token_time: float | None = None
    lease: float = claim.DEFAULT_LEASE
    #: tokens per claim; None sizes claims from how long tokens take
    batch: int | None = None
    endless: bool = False
    #: claim from this view (strict priority order) instead of the changes feed
    view: str | None = None
    design_doc: str = designdocs.MONITOR
    #: claim only tokens with this tag (from Monitor/by_tag)
    tag: str | None = None
    #: epoch seconds when the allocation ends (walltime), if known
    end_time: float | None = None
    #: stop claiming when less than this is left before ``end_time``
    margin: float = 60.0
    default_max_attempts: int = state.DEFAULT_MAX_ATTEMPTS
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "picas-work")
    spool: Path | None = None
    log_cap: int = runner.DEFAULT_LOG_CAP
    grace: float = 5.0
    #: the most a token may hold, and any one attachment: outputs past these are left out
    max_token_size: int = staging.DEFAULT_MAX_TOKEN_SIZE
    max_attachment_size: int = staging.DEFAULT_MAX_ATTACHMENT_SIZE
    #: write buffered results at least this often (seconds)
    flush_interval: float = 2.0
    #: longest sleep between polls of an empty todo view with ``endless``
    poll_max: float = 60.0
    #: how long to keep retrying a failed result write before spooling it
    retry_for: float = 60.0
    #: stop after this many failures in a row of different tokens (None: never);
    #: see :class:`HostWatch`
    black_hole: int | None = DEFAULT_BLACK_HOLE

    def __post_init__(self) -> None:
        if self.batch is not None and self.batch < 1:
            raise errors.ConfigError("--batch must be at least 1")
        if self.lease < 1:
            raise errors.ConfigError("--lease must be at least 1 second")
        if self.black_hole is not None and self.black_hole < 1:
            raise errors.ConfigError("--black-hole must be at least 1 (0 on the command line "
                                     "turns it off)")


class BatchSizer:
    """How many tokens to claim next: a fixed number, or None for automatic.

    Automatic claims take one token at first, as nothing is known yet about
    how long tokens take, then grow (by BATCH_GROWTH at most per claim)
    towards BATCH_SECONDS of work at the smoothed run time seen so far. So
    a million one-second tokens need few requests, while hour-long tokens
    are still claimed one at a time and none waits in a queue while
    another pilot is idle.
    """

    def __init__(self, fixed: int | None = None) -> None:
        self.fixed = fixed
        self.size = 1
        #: smoothed wall time of a token's run, once one has run
        self.token_seconds: float | None = None
        self.last_seconds = 0.0

    def ran(self, seconds: float) -> None:
        self.last_seconds = seconds
        if self.token_seconds is None:
            self.token_seconds = seconds
        else:
            self.token_seconds += (seconds - self.token_seconds) / 4

    def queue_limit(self) -> int | None:
        """How many claimed tokens may wait to start, now that more is known
        about how long they take (None: no limit beyond the claim's own).

        A claim sized for short tokens holds far too much work once tokens
        turn out long; the surplus is handed back for other pilots. The
        last run counts at once, so one long token is enough.
        """
        if self.fixed is not None or self.token_seconds is None:
            return None
        worst = max(self.token_seconds, self.last_seconds, 1e-3)
        return math.floor(2 * BATCH_SECONDS / worst)

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.token_seconds is not None:
            fits = math.ceil(BATCH_SECONDS / max(self.token_seconds, 1e-3))
            self.size = max(1, min(fits, self.size * BATCH_GROWTH, MAX_AUTO_BATCH))
        return self.size


class HostWatch:
    """Tells a broken host (a "black hole") from bad tokens.

    The rule: ``limit`` failures in a row on this pilot, of different
    tokens, none of which had failed on another host, while tokens succeed
    on other hosts (one reduced view query, made only once the streak is
    long enough). A success ends the streak; tokens that failed elsewhere
    too say nothing about this host and are passed over. A pool in which
    every host fails alike (a broken task) stops no pilot.
    """

    def __init__(self, db: Database, holder: Holder, limit: int | None) -> None:
        self.db = db
        self.holder = holder
        self.limit = limit
        #: the tokens of the current streak, in order
        self.streak: dict[str, None] = {}
        self._checked_at = 0

    def saw(self, token_id: str, token: dict, outcome: Outcome) -> None:
        if outcome is Outcome.SUCCEEDED:
            self.streak.clear()
            self._checked_at = 0
        elif outcome.is_application_failure and not any(
                a.get("host") != self.holder.hostname
                and Outcome(a["outcome"]).is_application_failure
                for a in state.attempts(token)):
            self.streak[token_id] = None

    def broken(self) -> bool:
        if self.limit is None or len(self.streak) < self.limit:
            return False
        if len(self.streak) < self._checked_at + self.limit:
            return False  # asked already: ask again once the streak has grown by as much
        self._checked_at = len(self.streak)
        return self._others_succeed()

    def _others_succeed(self) -> bool:
        try:
            by_host = triage.host_attempts(self.db)
        except errors.ViewNotFound:  # views from before picas knew of black holes
            return False
        return any(outcomes.get(Outcome.SUCCEEDED.value) for host, outcomes in by_host.items()
                   if host != self.holder.hostname)


@dataclass
class PilotReport:
    """What a pilot did, for its exit message and for benchmarks."""

    pilot_id: str = ""
    started: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    claimed: int = 0
    conflicts: int = 0
    in_doubt: int = 0
    released: int = 0
    recovered: int = 0
    late: int = 0
    spooled: int = 0
    requests: int = 0
    stopped_because: str = ""
    #: why the pilot took its host for broken, when it did (see :class:`HostWatch`)
    black_hole: str = ""

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1


def _kept(token: Token, done: runner.Run) -> dict:
    """The fields a run sets on its token: a function's return value as
    ``output``, and which declared outputs were left out (and why)."""
    fields: dict = {}
    if done.succeeded and "function" in token:
        fields["output"] = done.output
    if done.outputs_skipped is not None:
        fields["outputs_skipped"] = done.outputs_skipped
    return fields


class Pilot:
    """One pilot process's work loop. Construction does no I/O."""

    def __init__(self, db: Database, options: PilotOptions, holder: Holder | None = None) -> None:
        self.db = db
        self.options = options
        self.holder = holder or Holder.here()
        self.keeper = lease.LeaseKeeper(db, options.lease)
        spool = options.spool or options.workdir / "spool"
        self.writer = results.ResultWriter(db, spool, options.default_max_attempts,
                                           options.retry_for)
        self.queue: deque[str] = deque()
        self.report = PilotReport(pilot_id=self.holder.pilot_id)
        self.started_at = time.monotonic()
        self.changes = claim.ChangesSource()
        self.by_priority = claim.PrioritySource(self.changes)
        self.workspace = runner.Workspace(options.workdir)
        self.run_options = runner.RunOptions(
            options.log_cap, options.grace,
            staging.Limits(options.max_token_size, options.max_attachment_size))
        self.batch = BatchSizer(options.batch)
        self._priorities_checked: float | None = None
        self._priorities = False
        self._unconfirmed = 0
        self._unreachable_since: float | None = None
        self.host_watch = HostWatch(db, self.holder, options.black_hole)

    # -- stop conditions ------------------------------------------------------
    def _stop_reason(self) -> str | None:
        opts = self.options
        if shutdown.requested.is_set():
            return "signal"
        if opts.max_tasks is not None and self.report.started >= opts.max_tasks:
            return "max-tasks"
        if opts.max_time is not None and time.monotonic() - self.started_at >= opts.max_time:
            return "max-time"
        if opts.end_time is not None and opts.end_time - time.time() < opts.margin:
            return "walltime"
        if self.host_watch.broken():
            return "black-hole"
        return None

    def _fits(self, doc: Token) -> bool:
        """Whether the token's expected runtime fits in the walltime left."""
        if self.options.end_time is None:
            return True
        expected = doc.get("expected_runtime")
        left = self.options.end_time - time.time() - self.options.margin
        return not isinstance(expected, (int, float)) or expected <= left

    # -- the loop ---------------------------------------------------------------
    def run(self) -> PilotReport:
        shutdown.install()
        self._push_spool()
        self.keeper.start()
        idle = 0.5
        try:
            while True:
                if self._stopping():
                    break
                if not self.queue:
                    self.writer.flush()
                    if not self._fill_riding_out_outages():
                        if not self.options.endless:
                            self.report.stopped_because = "no-work"
                            break
                        shutdown.requested.wait(idle)
                        idle = min(idle * 2, self.options.poll_max)
                        continue
                    idle = 0.5
                if not self.queue:
                    continue  # lost every race for now: others are busy, work is left
                self._run_next()
                self._shed()
                if self.writer.age() >= self.options.flush_interval:
                    self.writer.flush()
        finally:
            self._wind_down()
        return self.report

    def _push_spool(self) -> None:
        """Write the results an earlier pilot with this folder could not."""
        if self.writer.spool_dir is not None:
            pushed = results.push_spool(self.db, self.writer.spool_dir,
                                        self.options.default_max_attempts)
            if pushed:
                log.info("pushed %d spooled result(s)", pushed)

    def _stopping(self) -> bool:
        """Whether a stop condition holds; records why (and blames a broken host)."""
        reason = self._stop_reason()
        if reason:
            self.report.stopped_because = reason
            if reason == "black-hole":
                self._blame_host()
        return bool(reason)

    def _fill(self) -> bool:
        """Claim a batch into the queue; True when there may be something to run
        (claimed, or lost to other pilots, which shows that work is left)."""
        limit = self.batch.next_size()
        if self.options.max_tasks is not None:
            limit = min(limit, self.options.max_tasks - self.report.started)
        accept = self._fits if self.options.end_time is not None else None
        source = self._source()
        started = time.monotonic()
        got = claim.claim(self.db, self.holder, limit=limit, lease_seconds=self.options.lease,
                          source=source, accept=accept)
        log.debug("claim at %.3f: %d of %d token(s) in %.1f ms, %d conflict(s)", time.time(),
                  len(got.tokens), limit, 1000 * (time.monotonic() - started), got.conflicts)
        self.report.claimed += len(got.tokens)
        self.report.conflicts += got.conflicts
        self.report.in_doubt += got.in_doubt
        self.report.recovered += got.recovered
        self._unconfirmed = self._unconfirmed + 1 if got.in_doubt and not got.tokens else 0
        if self._unconfirmed >= NO_QUORUM_CLAIMS:
            raise errors.NoQuorum(
                f"CouchDB confirmed none of this pilot's locks in {self._unconfirmed} claims "
                "in a row (HTTP 202: stored on fewer replicas than a quorum): too few of "
                "the cluster's nodes are up; stopped claiming rather than risk running a "
                "token twice")
        if not got.tokens and isinstance(source, claim.ViewSource) and self._recover():
            return self._fill()
        self.keeper.hold(got.tokens)
        self.queue.extend(token["_id"] for token in got.tokens)
        return bool(got.tokens or got.conflicts or got.in_doubt)

    def _fill_riding_out_outages(self) -> bool:
        """:meth:`_fill`, riding out a server that cannot be reached for up to
        ``retry_for`` seconds: a node that restarts behind a load balancer, or
        a network blip, should not end a pilot and orphan its leases."""
        try:
            found = self._fill()
        except (errors.ConnectionFailed, errors.ServerError) as exc:
            now = time.monotonic()
            self._unreachable_since = self._unreachable_since or now
            if now - self._unreachable_since > self.options.retry_for:
                raise
            log.warning("claiming failed (%s); trying again", exc)
            shutdown.requested.wait(1.0)
            return True
        self._unreachable_since = None
        return found

    def _shed(self) -> None:
        """Hand back the queued tokens that the batch size no longer allows."""
        keep = self.batch.queue_limit()
        if keep is not None and len(self.queue) > keep:
            self._release([self.queue.pop() for _ in range(len(self.queue) - keep)])

    def _source(self) -> claim.Source:
        """The view asked for; else the changes feed, or the priority view once
        the pool uses priorities (checked now and then)."""
        if self.options.tag is not None:
            return claim.ViewSource(designdocs.MONITOR, "by_tag", reduce=False,
                                    key=[self.options.tag, "todo"])
        if self.options.view is not None:
            return claim.ViewSource(self.options.design_doc, self.options.view)
        now = time.monotonic()
        if self._priorities_checked is None or now - self._priorities_checked > PRIORITY_CHECK:
            self._priorities = pool.uses_priorities(self.db)
            self._priorities_checked = now
        return self.by_priority if self._priorities else self.changes

    def _recover(self) -> int:
        """With a view as source, expired leases are found through their own view."""
        recovered = lease.recover_expired(self.db)
        self.report.recovered += recovered
        return recovered

    def _run_next(self) -> None:
        token_id = self.queue.popleft()
        token = self.keeper.get(token_id)
        if token is None or token_id in self.keeper.lost:
            self.keeper.take(token_id)  # taken over before it started: nothing to record
            return
        if token_id in self.keeper.cancel_requested or token.get("cancel_requested"):
            self._record(token_id, Outcome.CANCELLED, None)
            return
        if not self._fits(token):
            self._release([token_id])
            return
        self.report.started += 1

        def should_stop() -> str | None:
            if token_id in self.keeper.cancel_requested:
                return "cancelled"
            if token_id in self.keeper.lost:
                return "lease_lost"
            return None

        try:
            done = runner.run(token, self.workspace, self.run_options,
                              timeout=self._token_timeout(), should_stop=should_stop,
                              read_attachment=functools.partial(self.db.get_attachment,
                                                                token_id))
        except errors.InvalidToken as exc:
            # Raised before anything started: a defect of the token, not a run.
            log.warning("token %s: %s", token_id, exc)
            self._record(token_id, Outcome.FAILED, None, error=str(exc), fatal=True)
            return
        self.batch.ran(done.end - done.start)
        outcome = {
            None: Outcome.SUCCEEDED if done.succeeded else Outcome.FAILED,
            "timeout": Outcome.TIMED_OUT,
            "shutdown": Outcome.INTERRUPTED,
            "cancelled": Outcome.CANCELLED,
            "lease_lost": Outcome.LEASE_LOST,
        }[done.stopped]
        self._record(token_id, outcome, done)

    def _token_timeout(self) -> float | None:
        limits = []
        if self.options.max_token_time is not None:
            limits.append(self.options.max_token_time)
        if self.options.end_time is not None:
            limits.append(max(1.0, self.options.end_time - time.time() - self.options.margin / 2))
        return min(limits) if limits else None

    def _record(self, token_id: str, outcome: Outcome, done: runner.Run | None,
                error: str | None = None, fatal: bool = False) -> None:
        current = self.keeper.take(token_id)
        if current is None:
            return
        n = (current.get("lease") or {}).get("attempt", len(state.attempts(current)) + 1)
        attachments: dict[str, tuple[str, bytes]] = {}
        extra: dict = {}
        fields: dict = {}
        if done is not None:
            # Empty streams are not stored: nothing to read, and attachments
            # are the costliest part of a write.
            attachments = {f"attempt-{n}.{name}": ("text/plain", data)
                           for name, data in (("stdout", done.stdout), ("stderr", done.stderr))
                           if data}
            extra = {**done.notes, **done.usage, "provenance": done.provenance}
            fields = _kept(current, done)
            error = error or done.failure
            if done.exception is not None:
                extra["exception"] = done.exception
        if error:
            extra["error"] = error
        if outcome.is_application_failure:
            # Computed now, so that `picas errors` groups by reading a view.
            extra["signature"] = triage.signature(done.stderr if done else b"", outcome, error)
        attempt = state.new_attempt(
            current, outcome,
            start=done.start if done else None, end=done.end if done else None,
            exit_code=done.exit_code if done else None,
            logs=sorted(attachments), **extra)
        if error:
            fields["error"] = [*(current.get("error") or []),
                               {"time": int(time.time()), "message": error}]
        self.writer.add(current, results.Result(token_id, state.lease_id(current), attempt,
                                                attachments, fatal, fields,
                                                done.outputs if done else {}))
        self.report.count(outcome)
        self.host_watch.saw(token_id, current, outcome)
        if outcome is not Outcome.SUCCEEDED:
            # Failures, interruptions and cancels are written at once: people look for them.
            self.writer.flush()

    def _blame_host(self) -> None:
        """This host is broken: its failures must not use up the tokens' retries."""
        self.writer.flush()
        blamed = operations.apply(self.db, list(self.host_watch.streak), functools.partial(
            state.blame_host, pilot=self.holder.pilot_id,
            default_max_attempts=self.options.default_max_attempts))
        self.report.black_hole = (
            f"this host ({self.holder.hostname}) failed {len(self.host_watch.streak)} "
            f"different tokens in a row that did not fail on other hosts, while other hosts "
            f"ran tokens well; their failures here no longer count against their retries "
            f"({blamed.changed} changed)")
        log.info("black hole: %s", self.report.black_hole)

    def _release(self, token_ids: list[str]) -> None:
        tokens = [t for t in (self.keeper.take(i) for i in token_ids) if t is not None]
        if tokens:
            self.report.released += claim.release(self.db, tokens)

    def _wind_down(self) -> None:
        """Hand back unstarted tokens and write every result, whatever happened."""
        try:
            self.keeper.stop()
            try:
                self._release(list(self.queue))
            except errors.PicasError as exc:
                # Unreleased tokens come back when their lease runs out.
                log.warning("could not hand back %d queued token(s): %s", len(self.queue), exc)
            self.queue.clear()
            self.writer.flush()
        finally:
            self.workspace.close()
            self.report.late = self.writer.late
            self.report.spooled = self.writer.spooled
            self.report.requests = self.db.transport.request_count
