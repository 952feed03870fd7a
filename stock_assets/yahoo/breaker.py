"""A circuit breaker shared by every process: stop asking Yahoo while it is down, then probe once.

After `threshold` consecutive transient failures (5xx, timeouts, truncated bodies, requests still
refused after every retry) the breaker opens for `cooldown_s`: every request, in every process,
fails at once with a message naming the cause, instead of adding load to an upstream that is
already failing. When the cool-down is over exactly one request, the probe, goes through
(half-open); its outcome closes the breaker or opens it for another cool-down.

Why not pybreaker: its storage abstraction (memory, Redis) stores the state and the counter as
separate get/set calls, and the half-open transition happens in whichever caller notices the
timeout first, so two processes can both decide they are the probe. Single-probe semantics across
processes need the check and the transition in one atomic step, which is one row lock in
PostgreSQL (`quotes.breaker_admit` in sql/010_quote_governance.sql). The state machine is small
enough to keep in that one place; `LocalBreaker` mirrors it in memory for database-less clients.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection, Engine, text

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_QUIET = text("SELECT state, failures FROM quotes.breakers WHERE name = :name")


@dataclass(frozen=True)
class BreakerPolicy:
    threshold: int = 5
    cooldown_s: float = 60.0
    # A probe that never reports back (its process died) is handed to someone else after this.
    probe_timeout_s: float = 60.0


@dataclass(frozen=True)
class Admission:
    """A request the breaker let through; `probe` is True for the single half-open probe. `quiet`:
    the breaker was closed with no failure counted when it let the request through, so a success
    has nothing to reset."""

    probe: bool = False
    quiet: bool = False


class CircuitOpenError(RuntimeError):
    """Requests to the upstream are suspended; the message says why and for how long."""

    def __init__(self, name: str, state: str, retry_in_s: float, cause: str | None) -> None:
        self.name, self.state, self.retry_in_s, self.cause = name, state, retry_in_s, cause
        if state == OPEN:
            what = f"open for another {retry_in_s:.0f} s after consecutive transient failures"
        else:
            what = "half-open: a probe request is deciding whether the upstream has recovered"
        super().__init__(
            f"Circuit breaker {name!r} is {what}; last failure: {cause or 'unknown'}. "
            "No request was sent upstream."
        )

    def __reduce__(self):
        # Raised in a worker process and re-raised in the step: rebuilt from its parts, with the
        # report the fetch attached to it.
        return (type(self), (self.name, self.state, self.retry_in_s, self.cause), self.__dict__)


class Breaker(Protocol):
    name: str
    policy: BreakerPolicy

    def admit(self, via: Connection | None = None) -> Admission:
        """Let a request through, or raise CircuitOpenError. `via`: a connection already open for
        this request (the response cache's), for the common closed case's read."""

    def record(self, admission: Admission, ok: bool, cause: str | None = None) -> str:
        """The outcome of an admitted request; returns the state afterwards."""

    def record_failure(self, cause: str) -> str:
        """A failure not tied to one admitted attempt (a request still refused after its retries)."""

    def state(self) -> str: ...


class PostgresBreaker:
    """The breaker `name` in `quotes.breakers`."""

    def __init__(self, engine: Engine, name: str, policy: BreakerPolicy) -> None:
        self.engine, self.name, self.policy = engine, name, policy

    def admit(self, via: Connection | None = None) -> Admission:
        if via is not None:
            # The common case, closed with nothing counted, is a plain read on the request's own
            # connection; anything else takes the row lock in a transaction of its own, so a
            # half-open probe is never held by the (long) transaction of a cache fill.
            row = via.execute(_QUIET, {"name": self.name}).one_or_none()
            if row is None or (row.state == CLOSED and row.failures == 0):
                return Admission(quiet=True)
        with self.engine.begin() as conn:
            row = conn.execute(
                text("SELECT * FROM quotes.breaker_admit(:name, :probe_timeout)"),
                {"name": self.name, "probe_timeout": self.policy.probe_timeout_s},
            ).one()
        if not row.allowed:
            raise CircuitOpenError(self.name, row.state, row.retry_in_s, row.cause)
        return Admission(probe=row.probe)

    def record(self, admission: Admission, ok: bool, cause: str | None = None) -> str:
        if ok and admission.quiet:
            # Nothing to reset. (A failure another process counted since the admission stays
            # counted: consecutive means without a success seen at admission.)
            return CLOSED
        with self.engine.begin() as conn:
            return conn.execute(
                text("SELECT quotes.breaker_record(:name, :ok, :probe, :cause, :threshold, :cooldown)"),
                {"name": self.name, "ok": ok, "probe": admission.probe, "cause": cause,
                 "threshold": self.policy.threshold, "cooldown": self.policy.cooldown_s},
            ).scalar_one()

    def record_failure(self, cause: str) -> str:
        return self.record(Admission(), ok=False, cause=cause)

    def state(self) -> str:
        with self.engine.connect() as conn:
            state = conn.execute(
                text("SELECT state FROM quotes.breakers WHERE name = :name"), {"name": self.name}
            ).scalar_one_or_none()
        return state or CLOSED


class LocalBreaker:
    """The same state machine in this process only."""

    def __init__(self, name: str, policy: BreakerPolicy) -> None:
        self.name, self.policy = name, policy
        self._lock = threading.Lock()
        self._state, self._failures = CLOSED, 0
        self._open_until = self._probe_started = 0.0
        self._cause: str | None = None

    def admit(self, via: Connection | None = None) -> Admission:
        with self._lock:
            now = time.monotonic()
            if self._state == CLOSED:
                return Admission()
            if self._state == OPEN and now < self._open_until:
                raise CircuitOpenError(self.name, OPEN, self._open_until - now, self._cause)
            probe_deadline = self._probe_started + self.policy.probe_timeout_s
            if self._state == HALF_OPEN and now < probe_deadline:
                raise CircuitOpenError(self.name, HALF_OPEN, probe_deadline - now, self._cause)
            self._state, self._probe_started = HALF_OPEN, now
            return Admission(probe=True)

    def record(self, admission: Admission, ok: bool, cause: str | None = None) -> str:
        with self._lock:
            if ok:
                if self._state == CLOSED or (admission.probe and self._state == HALF_OPEN):
                    self._state, self._failures = CLOSED, 0
                return self._state
            self._cause = cause
            if (self._state == CLOSED and self._failures + 1 >= self.policy.threshold) or (
                self._state == HALF_OPEN and admission.probe
            ):
                self._state, self._failures = OPEN, self._failures + 1
                self._open_until = time.monotonic() + self.policy.cooldown_s
            elif self._state == CLOSED:
                self._failures += 1
            return self._state

    def record_failure(self, cause: str) -> str:
        return self.record(Admission(), ok=False, cause=cause)

    def state(self) -> str:
        with self._lock:
            return self._state
