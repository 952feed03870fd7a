"""One request rate for every process that asks Yahoo: a GCRA bucket kept in PostgreSQL.

Yahoo sustains about one request a second per IP and answers bursts with 429 or with silent empty
frames. Dagster runs every step (and every run) in its own process, so a limiter in memory would
protect nothing: the bucket lives in `quotes.rate_buckets` (sql/010_quote_governance.sql) and
each request reserves its slot there with one statement, on the database's clock.

GCRA ("virtual scheduling") keeps one timestamp per bucket, the theoretical arrival time of the
next request. A request may leave at `tat - (burst - 1) / rate`; reserving moves `tat` one
emission interval on. Slots are handed out in reservation order and never overlap, so P processes
together send at the configured rate, not P times it. `stock-assets bench ratelimit` measures
this bucket against pyrate-limiter's PostgreSQL bucket; the figures (stock_assets/tooling/bench/ratelimit.py)
are why this one is kept: within 0.6 % of the rate with zero 429s where pyrate's was 3-23 % slow,
unfair between processes, and drew 429s.

A 429 with Retry-After holds the whole bucket (`hold`): every process waits, not only the one
that was told. `LocalRateLimiter` is the same algorithm in memory, for a client without a
database (the replay in a notebook, unit tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine, text


@dataclass(frozen=True)
class RateLimit:
    """`rate_per_s` <= 0 means unlimited. `guard_s` trims the burst tolerance so that jitter
    between a slot and the request reaching the upstream cannot exceed the upstream's own burst."""

    rate_per_s: float
    burst: int = 1
    guard_s: float = 0.0

    @property
    def unlimited(self) -> bool:
        return self.rate_per_s <= 0

    @property
    def tolerance_s(self) -> float:
        return max((max(self.burst, 1) - 1) / self.rate_per_s - self.guard_s, 0.0)


class RateLimiter(Protocol):
    limit: RateLimit

    def acquire(self) -> float:
        """Block until this request may leave; returns the seconds waited."""

    def hold(self, seconds: float) -> None:
        """Send nothing (from any process sharing the bucket) for `seconds`."""


class PostgresRateLimiter:
    """The shared bucket `name` in `quotes.rate_buckets`."""

    def __init__(self, engine: Engine, name: str, limit: RateLimit,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.engine, self.name, self.limit, self._sleep = engine, name, limit, sleep

    def acquire(self) -> float:
        if self.limit.unlimited:
            return 0.0
        waited = 0.0
        while True:
            with self.engine.begin() as conn:
                wait = conn.execute(
                    text("SELECT quotes.reserve_slot(:name, :rate, :burst, :guard)"),
                    {"name": self.name, "rate": self.limit.rate_per_s, "burst": self.limit.burst,
                     "guard": self.limit.guard_s},
                ).scalar_one()
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait
            # A 429 may have arrived (elsewhere) while we slept: its hold outranks our slot.
            with self.engine.connect() as conn:
                held = conn.execute(text("SELECT quotes.hold_remaining(:name)"), {"name": self.name}).scalar_one()
            if held <= 0:
                return waited
            self._sleep(held)
            waited += held

    def hold(self, seconds: float) -> None:
        if self.limit.unlimited or seconds <= 0:
            return
        with self.engine.begin() as conn:
            conn.execute(
                text("SELECT quotes.hold_bucket(:name, :rate, :burst, :seconds)"),
                {"name": self.name, "rate": self.limit.rate_per_s, "burst": self.limit.burst, "seconds": seconds},
            )


class LocalRateLimiter:
    """The same GCRA bucket in this process only."""

    def __init__(self, limit: RateLimit, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self._sleep, self._clock = limit, sleep, clock
        self._lock = threading.Lock()
        self._tat = float("-inf")
        self._hold_until = float("-inf")

    def acquire(self) -> float:
        if self.limit.unlimited:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                slot = max(now, self._tat - self.limit.tolerance_s, self._hold_until)
                self._tat = max(self._tat, slot) + 1.0 / self.limit.rate_per_s
            wait = slot - now
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait
            with self._lock:
                held = self._hold_until - self._clock()
            if held <= 0:
                return waited
            self._sleep(held)
            waited += held

    def hold(self, seconds: float) -> None:
        if self.limit.unlimited or seconds <= 0:
            return
        with self._lock:
            until = self._clock() + seconds
            self._hold_until = max(self._hold_until, until)
            self._tat = max(self._tat, until + (max(self.limit.burst, 1) - 1) / self.limit.rate_per_s)
