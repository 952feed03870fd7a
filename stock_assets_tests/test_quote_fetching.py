"""raw_quotes against the Yahoo emulator, in real Dagster runs with the real PostgreSQL.

Only the network is emulated: the emulator is served on 127.0.0.1 and the quote client is pointed
at it by configuration (`upstream_url`), so each run builds its resources the way production does.
Each test gets its own governance scope, so limits, breakers and caches start fresh.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import dagster as dg
import pytest

from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets.testing.yahoo_emulator import YahooEmulator
from stock_assets.yahoo.archive import PriceArchive

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
FOUR = ["AAPL", "MSFT", "XOM", "CVX"]


@pytest.fixture
def emulator():
    emulator = YahooEmulator(rate_per_s=200, burst=20, timeout_delay_s=0.6)
    with emulator.serve() as url:
        emulator.url = url
        yield emulator


@pytest.fixture
def scope() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _resources(database, emulator, scope, tmp_path, tickers=FOUR, **config) -> dict:
    settings = dict(source="yahoo", upstream_url=emulator.url, database=database, scope=scope,
                    rate_per_s=100.0, burst=10, timeout_s=5.0, max_retries=4, backoff_base_s=0.05,
                    backoff_max_s=0.4, breaker_threshold=5, breaker_cooldown_s=60.0)
    settings.update(config)
    return {
        "quotes": QuoteClient(**settings),
        "tickers": TickerSelection(tickers=tickers),
        "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing")),
    }


def _run(resources, first: str, last: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([raw_quotes], resources=resources, tags=dict(zip(RANGE_TAGS, (first, last))),
                          instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("raw_quotes")[0].metadata.items()}


def test_backfill_of_the_whole_history_asks_once_per_ticker_then_never_again(database, emulator, scope, tmp_path):
    archive = PriceArchive.bundled()
    first, last = archive.first_date.isoformat(), archive.last_date.isoformat()
    resources = _resources(database, emulator, scope, tmp_path, tickers=[])  # all 58 bundled tickers
    result = _run(resources, first, last)
    assert result.success
    history = Counter(entry.symbol for entry in emulator.requests_of("history"))
    assert history == Counter({symbol: 1 for symbol in archive.symbols})  # exactly one per ticker
    metadata = _metadata(result)
    assert metadata["history_requests"] == 58 and metadata["tickers_failed"] == 0
    assert metadata["rows_in_run"] == len(archive._prices)
    for key in ("upstream_requests", "cache_hits", "retries", "http_429s", "breaker_state", "latency_p50_s",
                "latency_p95_s", "failed_tickers"):
        assert key in metadata, key

    again = _run(_resources(database, emulator, scope, tmp_path / "again", tickers=[]), first, last)
    assert again.success
    assert len(emulator.requests_of("history")) == 58  # nothing new reached "Yahoo"
    metadata = _metadata(again)
    assert metadata["history_requests"] == 0 and metadata["cache_hits"] >= 58


def test_a_429_storm_slows_the_run_down_and_it_finishes(database, emulator, scope, tmp_path):
    storm_ends = time.monotonic() + 1.5
    emulator.storm(1.5)
    result = _run(_resources(database, emulator, scope, tmp_path), "2020-03-02", "2020-03-31")
    assert result.success
    metadata = _metadata(result)
    assert metadata["tickers_failed"] == 0 and metadata["breaker_state"] == "closed"
    assert metadata["http_429s"] >= 1 and metadata["retries"] >= 1
    assert sorted(e.symbol for e in emulator.requests_of("history", status=200)) == sorted(FOUR)
    # The first 429 holds every thread until Retry-After (the shared hold): at most the requests
    # already in flight (one per thread) are refused, and nothing is answered before the storm ends.
    assert 1 <= emulator.throttled <= 4
    assert all(e.at >= storm_ends for e in emulator.log if e.status == 200)


def test_transient_faults_are_retried_and_counted(database, emulator, scope, tmp_path):
    emulator.inject("5xx", symbols=["AAPL"], times=2, status=502, history_only=True)
    emulator.inject("truncated", symbols=["MSFT"], times=1, history_only=True)
    emulator.inject("timeout", symbols=["XOM"], times=1, history_only=True)
    emulator.inject("empty", symbols=["CVX"], times=1)
    result = _run(_resources(database, emulator, scope, tmp_path, timeout_s=0.3), "2020-03-02", "2020-03-31")
    assert result.success
    history = Counter(entry.symbol for entry in emulator.requests_of("history"))
    assert history == {"AAPL": 3, "MSFT": 2, "XOM": 2, "CVX": 2}
    metadata = _metadata(result)
    assert metadata["tickers_failed"] == 0 and metadata["rows_in_run"] == 22 * 4
    assert metadata["retries"] == 5 and metadata["failed_attempts"] == 4 and metadata["empty_answers"] == 1


def test_an_answer_that_stays_empty_fails_the_ticker_never_counts_as_no_trading(database, emulator, scope, tmp_path):
    emulator.inject("empty", symbols=["CVX"])
    result = _run(_resources(database, emulator, scope, tmp_path, max_retries=2), "2020-03-02", "2020-03-31")
    assert result.success
    metadata = _metadata(result)
    assert list(metadata["failed_tickers"]) == ["CVX"]
    assert "no bars for 2020-03-02..2020-03-31" in metadata["failed_tickers"]["CVX"]
    assert len(emulator.requests_of("history", "CVX")) == 3
    assert metadata["rows_in_run"] == 22 * 3


def test_a_delisted_ticker_fails_alone_and_is_asked_only_once(database, emulator, scope, tmp_path):
    emulator.inject("delisted", symbols=["PFE"])
    tickers = ["PFE", *FOUR]
    result = _run(_resources(database, emulator, scope, tmp_path, tickers=tickers), "2020-03-02", "2020-03-31")
    assert result.success
    metadata = _metadata(result)
    assert list(metadata["failed_tickers"]) == ["PFE"] and "delisted" in metadata["failed_tickers"]["PFE"]
    assert metadata["rows_in_run"] == 22 * 4 and metadata["breaker_state"] == "closed"
    # yfinance repeats any 4xx once with its other cookie strategy; the repeat is answered from memory.
    asked = Counter((e.kind, tuple(sorted(e.query.items()))) for e in emulator.log if e.symbol == "PFE")
    assert asked and set(asked.values()) == {1}
    assert metadata["retries"] == 0


def test_a_breaker_that_stays_open_fails_the_run_naming_the_cause(database, emulator, scope, tmp_path):
    emulator.inject("5xx", status=503)  # every chart request, every symbol
    tickers = ["AAPL", "MSFT", "XOM", "CVX", "JNJ", "PFE"]
    resources = _resources(database, emulator, scope, tmp_path, tickers=tickers, breaker_threshold=3,
                           max_retries=1, max_parallel_tickers=2)
    result = _run(resources, "2020-03-02", "2020-03-31")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "Circuit breaker" in failure.user_failure_data.description
    assert "HTTP 503" in failure.user_failure_data.description
    assert failure.user_failure_data.metadata["breaker_state"].value == "open"
    sent = len(emulator.log)
    assert sent <= 3 + 2  # the threshold, plus what the other thread had in flight

    # The next run fails at once without asking "Yahoo" anything.
    again = _run(_resources(database, emulator, scope, tmp_path / "again", tickers=tickers), "2020-03-02",
                 "2020-03-31")
    assert not again.success and len(emulator.log) == sent
    assert "is open for another" in again.get_step_failure_events()[0].step_failure_data.user_failure_data.description
