"""The shared governance state in the real PostgreSQL: rate limit, circuit breaker, response cache.

Two SQLAlchemy engines stand in for two processes: whatever they agree on, they agree on through
the database, not through memory. Time-dependent assertions use the waits the limiter computes
(recorded by a fake sleep), never wall-clock speed.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import create_engine, text

from stock_assets.database.resource import PostgresResource
from stock_assets.database.urls import with_driver
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.testing.yahoo_emulator import YahooEmulator, history_as_known_on
from stock_assets.yahoo.archive import PriceArchive
from stock_assets.yahoo.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerPolicy,
    CircuitOpenError,
    LocalBreaker,
    PostgresBreaker,
)
from stock_assets.yahoo.cache import PostgresResponseCache
from stock_assets.yahoo.http_calls import parse_retry_after
from stock_assets.yahoo.limiter import LocalRateLimiter, PostgresRateLimiter, RateLimit
from stock_assets.yahoo.transport import Governance, GovernancePolicy, GovernedAdapter


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def engines(database):
    """Two independent engines on the pipeline database (the schema is applied by `database`)."""
    database.engine  # noqa: B018 - applies sql/ including 010_quote_governance.sql
    made = [create_engine(with_driver(database.resolved_url, "psycopg"), pool_size=8) for _ in range(2)]
    for engine in made:  # connected before any timing matters
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    yield made
    for engine in made:
        engine.dispose()


# -- rate limit ------------------------------------------------------------------------------------


def test_slots_follow_rate_and_burst_across_processes(engines):
    name, limit = _name(), RateLimit(rate_per_s=10.0, burst=3, guard_s=0.0)
    waits: list[float] = []
    limiters = [PostgresRateLimiter(engine, name, limit, sleep=waits.append) for engine in engines]
    began = time.monotonic()
    spans = []  # each slot was granted between its call's start and its return (plus the wait it was told)
    for i in range(8):
        called = time.monotonic() - began
        limiters[i % 2].acquire()
        wait = waits.pop() if waits else 0.0
        spans.append((called + wait, time.monotonic() - began + wait))
    # The first three go at once (burst 3); then one every 1/rate = 0.1 s, whichever "process" asks.
    # Measured from the first slot, each slot lies within what the calls' own durations allow (a
    # loaded machine widens the window; it cannot move the schedule).
    expected = [0.0, 0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    (first_lo, first_hi) = spans[0]
    for (lo, hi), slot in zip(spans, expected):
        assert lo - first_hi - 0.03 <= slot <= hi - first_lo + 0.03, (spans, expected)


def test_a_retry_after_hold_stops_every_process_even_with_a_slot_already_reserved(engines):
    name, limit = _name(), RateLimit(rate_per_s=10.0, burst=1)
    other = PostgresRateLimiter(engines[1], name, limit)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # while we wait for our slot, another process is told "Retry-After: 0.3"
            other.hold(0.3)
        time.sleep(seconds)

    limiter = PostgresRateLimiter(engines[0], name, limit, sleep=sleep)
    limiter.acquire()  # first request: no wait
    assert slept == []
    limiter.acquire()  # reserved 0.1 s ahead, then found the hold and waited it out
    assert slept[0] == pytest.approx(0.1, abs=0.03)
    assert sum(slept) == pytest.approx(0.3, abs=0.05)  # the hold's end, not the slot, decided
    with engines[0].connect() as conn:
        tat, hold = conn.execute(text("SELECT tat, hold_until FROM quotes.rate_buckets WHERE name = :n"),
                                 {"n": name}).one()
    assert tat > hold  # the next slot is after the hold, at the sustained rate


def test_unlimited_rate_never_touches_the_database(engines):
    limiter = PostgresRateLimiter(engines[0], _name(), RateLimit(rate_per_s=0))
    assert limiter.acquire() == 0.0
    with engines[0].connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM quotes.rate_buckets WHERE name = :n"),
                            {"n": limiter.name}).scalar_one() == 0


def test_local_limiter_grants_the_same_schedule():
    waits: list[float] = []
    clock = [0.0]
    limiter = LocalRateLimiter(RateLimit(10.0, 3), sleep=waits.append, clock=lambda: clock[0])
    for _ in range(6):
        limiter.acquire()
    assert waits == pytest.approx([0.1, 0.2, 0.3])


# -- circuit breaker -------------------------------------------------------------------------------


@pytest.fixture(params=["postgres", "local"])
def make_breaker(request, engines):
    """Two handles on one breaker: two processes (postgres) or two threads of one (local)."""
    name = _name()

    def make(policy: BreakerPolicy):
        if request.param == "postgres":
            return [PostgresBreaker(engine, name, policy) for engine in engines]
        local = LocalBreaker(name, policy)
        return [local, local]

    return make


def test_opens_after_consecutive_transient_failures_and_fails_fast_naming_the_cause(make_breaker):
    first, second = make_breaker(BreakerPolicy(threshold=3, cooldown_s=60))
    for _ in range(2):
        first.record(first.admit(), ok=False, cause="AAPL 2020-01-02..2020-01-31: HTTP 503 Service Unavailable")
    second.record(second.admit(), ok=True)  # a success in between resets the count
    for _ in range(2):
        second.record(second.admit(), ok=False, cause="MSFT 2020-01-02..2020-01-31: HTTP 503 Service Unavailable")
    assert first.state() == CLOSED
    assert first.record(first.admit(), ok=False, cause="XOM: ReadTimeout: read timed out") == OPEN
    with pytest.raises(CircuitOpenError) as raised:
        second.admit()
    assert raised.value.state == OPEN
    assert "XOM: ReadTimeout" in str(raised.value) and "No request was sent upstream" in str(raised.value)
    assert 59 < raised.value.retry_in_s <= 60


def test_admission_read_on_the_requests_own_connection_sees_every_other_process(engines):
    # A cached request asks the breaker on the connection that holds its cache key's lock: the
    # closed-and-quiet case is one read there, and must still see what other processes recorded.
    policy = BreakerPolicy(threshold=3, cooldown_s=60)
    name = _name()
    here, elsewhere = (PostgresBreaker(engine, name, policy) for engine in engines)
    with engines[0].connect() as request_connection:
        quiet = here.admit(via=request_connection)
        assert quiet.quiet and here.record(quiet, ok=True) == CLOSED

        for _ in range(2):
            elsewhere.record(elsewhere.admit(), ok=False, cause="HTTP 503")
        counted = here.admit(via=request_connection)
        assert not counted.quiet  # failures are counted: a success must reset them
        here.record(counted, ok=True)
        with engines[1].connect() as conn:
            assert conn.execute(text("SELECT failures FROM quotes.breakers WHERE name = :n"), {"n": name}).scalar() == 0

        for _ in range(3):
            elsewhere.record(elsewhere.admit(), ok=False, cause="XOM: ReadTimeout")
        with pytest.raises(CircuitOpenError) as raised:
            here.admit(via=request_connection)
        assert raised.value.state == OPEN and "XOM: ReadTimeout" in str(raised.value)


def test_after_the_cooldown_exactly_one_probe_goes_through(make_breaker):
    handles = make_breaker(BreakerPolicy(threshold=1, cooldown_s=0.2, probe_timeout_s=30))
    handles[0].record(handles[0].admit(), ok=False, cause="HTTP 502 Bad Gateway")
    time.sleep(0.25)
    start = threading.Barrier(8)

    def admit(i: int):
        start.wait()
        try:
            return handles[i % 2].admit()
        except CircuitOpenError as err:
            return err

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(admit, range(8)))
    probes = [o for o in outcomes if not isinstance(o, CircuitOpenError)]
    assert len(probes) == 1 and probes[0].probe
    assert all(o.state == HALF_OPEN for o in outcomes if isinstance(o, CircuitOpenError))
    assert handles[1].record(probes[0], ok=True) == CLOSED
    assert not handles[0].admit().probe


def test_a_failed_probe_reopens_and_a_vanished_probe_is_handed_over(make_breaker):
    first, second = make_breaker(BreakerPolicy(threshold=1, cooldown_s=0.1, probe_timeout_s=0.2))
    first.record(first.admit(), ok=False, cause="HTTP 500")
    time.sleep(0.15)
    probe = first.admit()
    assert first.record(probe, ok=False, cause="HTTP 503 again") == OPEN
    with pytest.raises(CircuitOpenError, match="HTTP 503 again"):
        second.admit()
    time.sleep(0.15)
    assert second.admit().probe  # this probe's process "dies": it never reports
    with pytest.raises(CircuitOpenError):
        first.admit()
    time.sleep(0.25)
    assert first.admit().probe


# -- response cache --------------------------------------------------------------------------------


def _governed(engine, scope: str, emulator: YahooEmulator) -> GovernedAdapter:
    governance = Governance(
        GovernancePolicy(scope=scope, max_retries=0),
        PostgresRateLimiter(engine, scope, RateLimit(0)),
        PostgresBreaker(engine, scope, BreakerPolicy()),
        PostgresResponseCache(engine),
    )
    return GovernedAdapter(emulator.adapter(), governance)


def _chart_url(symbol: str, start: dt.date, end: dt.date) -> str:
    stamps = [int(dt.datetime.combine(day, dt.time(0), dt.timezone.utc).timestamp()) for day in (start, end)]
    return (f"https://query2.finance.yahoo.com/v8/finance/chart/{symbol}?period1={stamps[0]}&period2={stamps[1]}"
            "&interval=1d&includePrePost=False&events=div%2Csplits%2CcapitalGains")


def test_concurrent_requests_for_one_key_make_one_upstream_call(engines):
    emulator = YahooEmulator(rate_per_s=1000, burst=100, latency_s=0.2)  # slow enough to overlap
    scope = _name()
    adapters = [_governed(engine, scope, emulator) for engine in engines]
    url = _chart_url("AAPL", dt.date(2019, 1, 2), dt.date(2019, 7, 1))
    start = threading.Barrier(6)

    def get(i: int) -> bytes:
        session = requests.Session()
        session.mount("https://", adapters[i % 2])
        start.wait()
        # The crumb differs per caller and is not part of the key.
        return session.get(f"{url}&crumb=c{i}", timeout=10).content

    with ThreadPoolExecutor(6) as pool:
        bodies = list(pool.map(get, range(6)))
    assert len(emulator.requests_of("history")) == 1
    assert len(set(bodies)) == 1 and b'"timestamp"' in bodies[0]
    assert sum(adapter.totals.cache_hits for adapter in adapters) == 5


def test_cache_lifetime_depends_on_how_recent_the_range_is(engines):
    emulator, scope = YahooEmulator(rate_per_s=1000, burst=100), _name()
    adapter = _governed(engines[0], scope, emulator)
    session = requests.Session()
    session.mount("https://", adapter)
    today = dt.datetime.now(dt.timezone.utc).date()
    session.get(_chart_url("MSFT", dt.date(2020, 3, 2), dt.date(2020, 4, 1)), timeout=10)
    # A window touching today: the emulator (frozen in 2020) answers it, and it is kept briefly.
    session.get(_chart_url("MSFT", dt.date(2020, 10, 1), today + dt.timedelta(days=1)), timeout=10)
    with engines[0].connect() as conn:
        lifetimes = conn.execute(text(
            "SELECT extract(epoch FROM expires_at - fetched_at) FROM quotes.response_cache"
            " WHERE scope = :scope ORDER BY range_end"), {"scope": scope}).scalars().all()
    assert lifetimes == pytest.approx([30 * 86400, 300], abs=1)
    session.get(_chart_url("MSFT", dt.date(2020, 3, 2), dt.date(2020, 4, 1)), timeout=10)
    assert adapter.totals.cache_hits == 1 and len(emulator.requests_of("history")) == 2


def _governed_session(engine, scope: str) -> tuple[YahooEmulator, GovernedAdapter, requests.Session]:
    """A session whose requests go through the governance of `scope`, to an emulated Yahoo."""
    emulator = YahooEmulator(rate_per_s=1000, burst=100)
    adapter = _governed(engine, scope, emulator)
    session = requests.Session()
    session.mount("https://", adapter)
    return emulator, adapter, session


def test_answers_stored_compressed_by_an_earlier_version_are_still_served(engines):
    scope = _name()
    emulator, adapter, session = _governed_session(engines[0], scope)
    url = _chart_url("XOM", dt.date(2018, 5, 1), dt.date(2018, 6, 1))
    answer = session.get(url, timeout=10).content
    with engines[0].begin() as conn:
        (stored,) = conn.execute(text("SELECT body FROM quotes.response_cache WHERE scope = :s"), {"s": scope}).one()
        assert bytes(stored).startswith(b"\x28\xb5\x2f\xfd")  # a Zstandard frame
        # The same answer as an earlier version stored it: zlib.
        conn.execute(text("UPDATE quotes.response_cache SET body = :body WHERE scope = :s"),
                     {"s": scope, "body": zlib.compress(answer, 1)})
    assert session.get(url, timeout=10).content == answer
    assert adapter.totals.cache_hits == 1 and len(emulator.requests_of("history")) == 1


def test_an_expired_answer_is_asked_again(engines):
    scope = _name()
    emulator, adapter, session = _governed_session(engines[0], scope)
    url = _chart_url("XOM", dt.date(2018, 5, 1), dt.date(2018, 6, 1))
    session.get(url, timeout=10)
    with engines[0].begin() as conn:
        conn.execute(text("UPDATE quotes.response_cache SET expires_at = clock_timestamp() WHERE scope = :s"),
                     {"s": scope})
    session.get(url, timeout=10)
    assert len(emulator.requests_of("history")) == 2 and adapter.totals.cache_hits == 0


def test_a_refetch_after_a_split_bypasses_the_cache_and_refills_it(database):
    # Yahoo's history before AAPL's 4:1 split of 2020-08-31, then after it: the same past window,
    # with different prices. The cache trusts a past window for 30 days; a refresh must not.
    emulator = YahooEmulator(rate_per_s=1000, burst=100)
    emulator.use_archive(history_as_known_on(PriceArchive.bundled(), dt.date(2020, 8, 31)))
    week = (dt.date(2020, 8, 24), dt.date(2020, 8, 29))
    with emulator.serve() as url:
        client = QuoteClient(source="yahoo", upstream_url=url, database=database, scope=_name(), rate_per_s=0,
                             max_retries=0)
        before, _ = client.fetch(["AAPL"], *week)
        emulator.use_archive(PriceArchive.bundled())  # the split went ex: Yahoo restated the past
        cached, report = client.fetch(["AAPL"], *week)
        assert report.trace.cache_hits == 1 and report.requests == 0  # the old prices, from the cache
        assert cached["close"].tolist() == before["close"].tolist()

        fresh, report = client.fetch(["AAPL"], *week, refresh_cache=True)
        assert report.requests == 1 and report.trace.cache_refreshes == 1 and report.trace.cache_hits == 0
        assert len(emulator.requests_of("history", "AAPL")) == 2
        assert fresh["close"].to_numpy() == pytest.approx(before["close"].to_numpy() / 4, rel=1e-6)

        later, report = client.fetch(["AAPL"], *week)  # the cache now holds the restated answer
        assert report.trace.cache_hits == 1 and later["close"].tolist() == fresh["close"].tolist()
    assert len(emulator.requests_of("history", "AAPL")) == 2


# -- wiring and vocabulary -------------------------------------------------------------------------


def test_the_pipeline_keeps_quote_governance_in_its_database(state_dir):
    from stock_assets.definitions import build_resources

    resources = build_resources()
    assert resources["quotes"].database is resources["database"]
    assert resources["quotes"].governance_scope == "replay"
    emulated = QuoteClient(source="yahoo", upstream_url="http://127.0.0.1:9")
    assert emulated.governance_scope == "yahoo@http://127.0.0.1:9"  # never shares live Yahoo's cache
    assert QuoteClient(source="yahoo").effective_rate == 1.0 and QuoteClient().effective_rate == 0.0


def test_retry_after_is_read_as_seconds_or_as_a_date():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("0.5") == 0.5
    in_30s = email.utils.format_datetime(dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(in_30s) == pytest.approx(30, abs=1.5)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_more_fetch_threads_than_the_pool_can_serve_do_not_wait_on_each_other(database_url):
    # A cached request holds a pooled connection (the key's lock) while it asks the breaker on a
    # second one: with 4 threads on a pool of 2, every thread held one and waited for another.
    small_pool = PostgresResource(url=database_url, pool_size=1, max_overflow=1, pool_timeout_s=3)
    symbols = list(PriceArchive.bundled().symbols[:8])
    emulator = YahooEmulator(rate_per_s=1000, burst=100)
    with emulator.serve() as url:
        client = QuoteClient(source="yahoo", upstream_url=url, database=small_pool, scope=_name(), rate_per_s=0,
                             max_retries=0, max_parallel_tickers=4)
        frame, report = client.fetch(symbols, dt.date(2020, 8, 24), dt.date(2020, 8, 29))
    assert report.failures == {}
    assert sorted(frame["symbol"].unique()) == sorted(symbols) and len(frame) == 8 * 5
