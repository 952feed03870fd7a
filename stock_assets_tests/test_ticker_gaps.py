"""Per-ticker completeness: one ticker failing leaves a hole that the gap sensor finds and refills.

Faults injected through the Yahoo emulator (yfinance parses its answers, PostgreSQL and the Dagster
instance are real): MSFT answered by an HTML page with status 200 for one fetch, and AAPL's close
answered as a bad value (-1) on 2020-10-26. Both runs end SUCCESS (the other ticker was fine).
Asserts: the gap sensor requests one run for exactly those two tickers over the days of their holes
(not one per ticker, not whole days), waits before asking again, still does not widen to whole days
when that refetch fails, and after a good refetch every ticker has every session; `health` names
the holes and the failing warning checks meanwhile.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import dagster as dg
import pandas as pd
import pytest

from stock_assets import settings
from stock_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.prices.gaps import LANDING, Hole, ticker_holes
from stock_assets.defs.prices.sensors import GapPolicy, gap_sensor
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.health import FAIL, OK, WARN, check_ticker_gaps, check_warning_checks, run_health
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets.testing.yahoo_emulator import YahooEmulator, with_bar
from stock_assets.yahoo.archive import PriceArchive

pytestmark = pytest.mark.reliability

TICKERS = TickerSelection(tickers=["AAPL", "MSFT"])
REPLAY_NOW = dt.datetime(2020, 10, 28, 21, tzinfo=dt.timezone.utc)  # the replay's clock: after 10-27


@pytest.fixture
def emulator():
    emulator = YahooEmulator(rate_per_s=1000, burst=1000)
    emulator.use_archive(with_bar(PriceArchive.bundled(), "AAPL", dt.date(2020, 10, 26), close=-1.0))
    with emulator.serve() as url:
        emulator.url = url
        yield emulator


@pytest.fixture
def setup(database, tmp_path, emulator):
    quotes = QuoteClient(source="yahoo", upstream_url=emulator.url, rate_per_s=0, max_retries=1,
                         backoff_base_s=0, cache_enabled=False, timeout_s=10)
    resources = {"database": database, "quotes": quotes, "tickers": TICKERS,
                 "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing"))}
    with dg.instance_for_test() as instance:
        yield instance, resources


def _run(instance, resources, first, last, run_config=None, raise_on_error=True):
    return dg.materialize([raw_quotes, cleaned_prices], instance=instance, resources=resources,
                          tags={RANGE_START_TAG: first, RANGE_END_TAG: last}, run_config=run_config,
                          raise_on_error=raise_on_error)


def _evaluate(instance, resources, cursor=None, policy=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={
        "database": resources["database"], "quotes": QuoteClient(), "tickers": TICKERS,
        "gap_policy": policy or GapPolicy(lookback_days=10), "landing_io_manager": resources["landing_io_manager"],
    }) as context:
        return gap_sensor(context)


def _clean_symbols(resources, day: str) -> list[str]:
    payload = resources["landing_io_manager"].store().read(["cleaned_prices"], day)
    return sorted(pd.read_parquet(io.BytesIO(payload))["symbol"])


def _make_holes(instance, resources, emulator):
    assert _run(instance, resources, "2020-10-19", "2020-10-21").success
    emulator.inject("html", symbols=["MSFT"], history_only=True)
    assert _run(instance, resources, "2020-10-22", "2020-10-23").success  # AAPL was fine: SUCCESS
    emulator.clear_faults()
    assert _run(instance, resources, "2020-10-26", "2020-10-27").success  # AAPL's bad bar is rejected


def test_one_failing_ticker_is_refetched_alone_in_one_run(setup, emulator):
    instance, resources = setup
    _make_holes(instance, resources, emulator)
    assert _clean_symbols(resources, "2020-10-22") == ["AAPL"]
    assert _clean_symbols(resources, "2020-10-26") == ["MSFT"]

    first = _evaluate(instance, resources)
    [request] = first.run_requests  # one run for both tickers; no whole-day range (the days exist)
    assert request.run_config == {"ops": {"raw_quotes": {"config": {"only_tickers": ["AAPL", "MSFT"]}}}}
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2020-10-22", "2020-10-26")
    assert request.tags["stock_assets/trigger"] == "gap_sensor"
    holes = json.loads(first.cursor)["holes"]
    assert sorted(holes) == ["AAPL 2020-10-26", "MSFT 2020-10-22", "MSFT 2020-10-23"]
    # The next tick waits (retry_after_minutes, doubling per attempt) instead of asking again.
    assert _evaluate(instance, resources, first.cursor).run_requests == []

    # The refetch fails for both tickers: the run fails, but the days still hold their other data,
    # so the gap sensor asks for the two tickers again - never for the whole days.
    emulator.inject("html", history_only=True)
    failed = _run(instance, resources, "2020-10-22", "2020-10-26", request.run_config, raise_on_error=False)
    assert not failed.success
    emulator.clear_faults()
    assert _clean_symbols(resources, "2020-10-23") == ["AAPL"]  # nothing lost by the failed refetch
    retry = _evaluate(instance, resources, first.cursor, policy=GapPolicy(lookback_days=10, retry_after_minutes=0))
    assert [r.run_config["ops"]["raw_quotes"]["config"]["only_tickers"] for r in retry.run_requests] == \
        [["AAPL", "MSFT"]]
    assert json.loads(retry.cursor)["holes"]["MSFT 2020-10-22"][0] == 2  # second attempt

    # Yahoo answers well again (and corrected AAPL's bar): one request per ticker refills every hole.
    emulator.use_archive(PriceArchive.bundled())
    before = len(emulator.requests_of("history"))
    assert _run(instance, resources, "2020-10-22", "2020-10-26", request.run_config).success
    assert sorted(e.symbol for e in emulator.requests_of("history")[before:]) == ["AAPL", "MSFT"]
    for day in ("2020-10-22", "2020-10-23", "2020-10-26"):
        assert _clean_symbols(resources, day) == ["AAPL", "MSFT"]
    done = _evaluate(instance, resources, retry.cursor)
    assert done.run_requests == [] and json.loads(done.cursor)["holes"] == {}


def test_health_names_the_holes_and_the_failing_warning_checks(setup, emulator, monkeypatch):
    instance, resources = setup
    _make_holes(instance, resources, emulator)
    # `stock-assets health` as configured for these runs: their tickers, their landing zone.
    monkeypatch.setenv(settings.TICKERS_ENV, "AAPL,MSFT")
    monkeypatch.setenv(settings.LANDING_URL_ENV, resources["landing_io_manager"].base_dir)
    report = run_health(database_url=resources["database"].resolved_url, quote_client=QuoteClient(),
                        instance=instance, now=REPLAY_NOW)
    assert not report.healthy and report.check("ticker_gaps").status == FAIL
    assert report.check("warning_checks").status == WARN
    assert "tickers_complete on 2020-10-22, 2020-10-23, 2020-10-26" in report.check("warning_checks").summary
    store = resources["landing_io_manager"].store()
    holes = ticker_holes(instance, None, store, TICKERS.symbols(),
                         [dt.date(2020, 10, d) for d in (19, 20, 21, 22, 23, 26, 27)])
    assert holes == [Hole("MSFT", dt.date(2020, 10, 22), LANDING), Hole("MSFT", dt.date(2020, 10, 23), LANDING),
                     Hole("AAPL", dt.date(2020, 10, 26), LANDING)]

    gaps = check_ticker_gaps(instance, None, store, TICKERS.symbols(), REPLAY_NOW, "replay")
    assert gaps.status == FAIL  # 10-22 is three sessions behind 10-27: the gap sensor had its chance
    assert "3 missing ticker bar(s)" in gaps.summary and "MSFT 2020-10-22" in gaps.summary
    assert gaps.details["holes"] == ["MSFT 2020-10-22", "MSFT 2020-10-23", "AAPL 2020-10-26"]
    assert gaps.details["tickers"] == {"AAPL": 1, "MSFT": 2}
    # Two sessions later than the replay's clock, only 10-26 and 10-27 are within the grace: a warning.
    recent = check_ticker_gaps(instance, None, store, ["AAPL"], REPLAY_NOW, "replay")
    assert recent.status == WARN and recent.details["holes"] == ["AAPL 2020-10-26"]

    checks = check_warning_checks(instance, REPLAY_NOW, "replay")
    assert checks.status == WARN
    # (rejected_share passes: one rejected row on 2020-10-26 is below its minimum of three.)
    assert checks.details["failing"] == {"tickers_complete": ["2020-10-22", "2020-10-23", "2020-10-26"]}

    emulator.use_archive(PriceArchive.bundled())
    assert _run(instance, resources, "2020-10-22", "2020-10-26",
                {"ops": {"raw_quotes": {"config": {"only_tickers": ["AAPL", "MSFT"]}}}}).success
    assert check_ticker_gaps(instance, None, store, TICKERS.symbols(), REPLAY_NOW, "replay").status == OK
    assert check_warning_checks(instance, REPLAY_NOW, "replay").status == OK


def test_a_listing_owes_bars_on_its_own_exchange_sessions_only():
    """Holes are judged by each listing's calendar: London's August bank holiday is no hole for
    OCDO.L (but is a NYSE session for AAPL); Labor Day is a London session, not a NYSE one."""
    from stock_assets.defs.prices.gaps import expected_sessions

    bank_holiday, labor_day = dt.date(2020, 8, 31), dt.date(2020, 9, 7)
    first, end = dt.date(2020, 8, 28), dt.date(2020, 9, 9)
    london, new_york = expected_sessions("OCDO.L", first, end), expected_sessions("AAPL", first, end)
    assert bank_holiday not in london and bank_holiday in new_york
    assert labor_day in london and labor_day not in new_york
