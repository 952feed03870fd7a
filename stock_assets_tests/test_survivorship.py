"""Survivorship: with the point-in-time universe (`TickerSelection.sp500_point_in_time`) a removed S&P
500 member's history is fetched for its member days and, with a sector from the user's sector
history file, counts in its sector's figures exactly while it was a member; members the source does
not serve are reported and the run succeeds.

AYI (Acuity Brands) was a member from 2016-05-03 to 2018-06-18 (first session no longer a member;
stock_assets/data/sp500_membership_intervals.csv) and is not in today's constituents list, so the
bundled data has no sector for it. The replay archive is written by the test: made-up prices of AYI,
HON and AAPL on the real NYSE sessions of May-July 2018 (AYI's bars go on after its removal, as
Yahoo's would), not market data. Every other member of those months is unknown to that archive.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from stock_assets import settings
from stock_assets.defs.partitions import trading_days
from stock_assets.defs.prices.gaps import clean_symbols_by_day
from stock_assets.defs.prices.sensors import GapPolicy, gap_sensor
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.quotes.ticker_runs import ticker_run_request
from stock_assets.defs.universe.resources import TickerSelection, members_between
from stock_assets.health import OK, check_ticker_gaps
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets_tests.test_sector_point_in_time import (
    ASSETS,
    RANGE_TAGS,
    REFERENCE,
    SECTORS,
    _published,
    _stored_prices,
    assert_matches,
    expected_daily,
    expected_monthly,
)

REMOVED, REMOVED_ON = "AYI", dt.date(2018, 6, 18)
SECTOR_OF = {"AYI": "Industrials", "HON": "Industrials", "AAPL": "Information Technology"}
FIRST, LAST = dt.date(2018, 5, 1), dt.date(2018, 7, 31)
POINT_IN_TIME = TickerSelection(sp500_point_in_time=True)


def _archive(path) -> str:
    rng = np.random.default_rng(7)
    rows = []
    for index, symbol in enumerate(SECTOR_OF):
        price = 50.0 + 40 * index
        for day in trading_days(FIRST, LAST + dt.timedelta(days=1)):
            price *= 1 + rng.normal(0, 0.015)
            rows.append({"Ticker": symbol, "Date": day.isoformat(), "Open": round(price, 4),
                         "High": round(price * 1.01, 4), "Low": round(price * 0.99, 4), "Close": round(price, 4),
                         "Adj Close": round(price, 4), "Volume": int(rng.integers(500_000, 5_000_000))})
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def resources(database, tmp_path, monkeypatch):
    sectors = tmp_path / "past_member_sectors.csv"
    sectors.write_text("symbol,sector,valid_from,valid_to\nAYI,Industrials,2016-05-03,2018-06-18\n")
    monkeypatch.setenv(settings.SECTOR_HISTORY_ENV, str(sectors))
    return {
        "database": database,
        "quotes": QuoteClient(replay_archive=_archive(tmp_path / "archive.csv")),
        "tickers": POINT_IN_TIME,
        "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing")),
    }


def _materialize(instance, resources, selection, first=None, last=None):
    result = dg.materialize(ASSETS, selection=selection, resources=resources, instance=instance,
                            tags=dict(zip(RANGE_TAGS, (first, last))) if last else {})
    assert result.success
    return result


def test_a_removed_member_counts_in_its_sector_exactly_while_it_was_a_member(instance, resources, database):
    _materialize(instance, resources, REFERENCE)
    fetched = _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], FIRST.isoformat(), LAST.isoformat())
    _materialize(instance, resources, ["monthly_prices", *SECTORS], "2018-05-01", "2018-07-01")

    # The removed member's bars are stored for its member days only, one request for the range.
    prices = _stored_prices(database)
    ayi = prices[prices["symbol"] == REMOVED]
    assert ayi["trade_date"].max() == dt.date(2018, 6, 15)
    assert ayi["trade_date"].min() == dt.date(2018, 5, 1)
    assert set(prices["symbol"]) == set(SECTOR_OF)
    raw = fetched.asset_materializations_for_node("raw_quotes")[0].metadata
    requested = members_between(FIRST, LAST + dt.timedelta(days=1))
    assert REMOVED in requested and len(requested) > 500
    assert raw["tickers_requested"].value == len(requested)
    # At most one chart request per ticker for the whole range (the replay refuses an unknown symbol
    # before its chart request unless yfinance has its time zone cached from an earlier fetch).
    assert len(SECTOR_OF) <= raw["history_requests"].value <= len(requested)
    assert raw["retries"].value == 0

    daily = _published(database, "sector_daily_performance", "trade_date", FIRST, dt.date(2018, 8, 1))
    friday, monday = dt.date(2018, 6, 15), REMOVED_ON
    assert daily.loc[("Industrials", friday), "members"] == 2  # HON and AYI
    assert daily.loc[("Industrials", monday), "members"] == 1  # AYI left the index
    # Every published column, recomputed with pandas from the stored prices and the stated facts.
    rows = prices.dropna(subset=["ret"])
    rows = rows[(rows["symbol"] != REMOVED) | (rows["trade_date"] < REMOVED_ON)]
    rows = rows.assign(sector=rows["symbol"].map(SECTOR_OF))
    window = rows[rows["trade_date"] >= FIRST]
    assert_matches(daily, expected_daily(window))
    for month in (dt.date(2018, 5, 1), dt.date(2018, 6, 1), dt.date(2018, 7, 1)):
        end = (month + dt.timedelta(days=32)).replace(day=1)
        expected = expected_monthly(window, month).assign(month=month).set_index("month", append=True)
        assert_matches(_published(database, "sector_monthly_summary", "month", month, end), expected)
    june = _published(database, "sector_monthly_summary", "month", dt.date(2018, 6, 1), dt.date(2018, 7, 1))
    assert june.loc[("Industrials", dt.date(2018, 6, 1)), "members"] == 2
    july = _published(database, "sector_monthly_summary", "month", dt.date(2018, 7, 1), dt.date(2018, 8, 1))
    assert july.loc[("Industrials", dt.date(2018, 7, 1)), "members"] == 1


def test_members_the_source_does_not_serve_are_reported_and_the_run_succeeds(instance, resources, database,
                                                                              monkeypatch):
    _materialize(instance, resources, REFERENCE)
    fetched = _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], FIRST.isoformat(), LAST.isoformat())
    _materialize(instance, resources, ["monthly_prices", *SECTORS], "2018-06-01", "2018-07-01")

    raw = fetched.asset_materializations_for_node("raw_quotes")[0].metadata
    not_served = raw["tickers_not_served"].value
    requested = members_between(FIRST, LAST + dt.timedelta(days=1))
    assert sorted(not_served) == sorted(set(requested) - set(SECTOR_OF))
    assert "AET" in not_served  # a member until 2018-11-29 that the archive does not hold
    assert "not in the bundled replay archive" in raw["failed_tickers"].value["AET"]

    # Cleaning expects no bar from them: tickers_complete passes, they are named instead.
    cleaned = fetched.asset_materializations_for_node("cleaned_prices")[0].metadata
    assert cleaned["index_members_not_served"].value == len(not_served)
    checks = [c for c in fetched.get_asset_check_evaluations() if c.check_name == "tickers_complete"]
    assert checks and all(c.passed for c in checks)

    sectors = _materialize(instance, resources, ["sector_daily_performance"], "2018-06-01", "2018-06-01")
    coverage = sectors.asset_materializations_for_node("sector_daily_performance")[0].metadata
    with database.begin() as conn:
        members = conn.execute(text(
            "SELECT count(DISTINCT symbol) FROM market.index_membership WHERE valid_from < '2018-07-01' "
            "AND (valid_to IS NULL OR valid_to > '2018-06-01')")).scalar_one()
    assert coverage["index_members_without_prices"].value == members - len(SECTOR_OF)
    sample = coverage["index_members_without_prices_sample"].value
    assert len(sample) == 20 and sample == sorted(sample) and not set(sample) & set(SECTOR_OF)
    assert coverage["members_without_sector"].value == []

    # The gap sensor asks for nothing: not the unserved members, not AYI after its removal.
    with dg.build_sensor_context(instance=instance, resources={
        "database": database, "quotes": resources["quotes"], "gap_policy": GapPolicy(lookback_days=70),
        "tickers": POINT_IN_TIME, "landing_io_manager": resources["landing_io_manager"],
    }) as context:
        result = gap_sensor(context)
    assert result.run_requests == [], [r.tags for r in result.run_requests]
    # And `stock-assets health` finds no missing ticker bar either.
    monkeypatch.setenv(settings.REPLAY_ARCHIVE_ENV, resources["quotes"].replay_archive)
    now = dt.datetime(2018, 8, 1, 23, tzinfo=dt.timezone.utc)
    store = resources["landing_io_manager"].store()
    health = check_ticker_gaps(instance, database.engine, store, [], now, "replay", lookback_days=70,
                               selection=POINT_IN_TIME)
    assert health.status == OK, health.summary
    assert check_ticker_gaps(instance, database.engine, store, requested, now, "replay",
                             lookback_days=70).status != OK  # every member on every session: not so


def test_without_the_sector_file_the_removed_member_has_no_sector(instance, resources, database, monkeypatch):
    monkeypatch.delenv(settings.SECTOR_HISTORY_ENV)
    _materialize(instance, resources, REFERENCE)
    _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2018-06-01", "2018-06-29")
    result = _materialize(instance, resources, ["monthly_prices", "sector_daily_performance"], "2018-06-01",
                          "2018-06-01")
    metadata = result.asset_materializations_for_node("sector_daily_performance")[0].metadata
    assert metadata["members_without_sector"].value == [REMOVED]


def test_a_run_whose_members_are_all_unserved_succeeds(instance, resources, database, tmp_path):
    """July 2018: AYI is no longer a member, and the archive holds no other member but HON and AAPL,
    which this archive (AYI only) does not hold: every requested ticker is unknown to it."""
    only_ayi = tmp_path / "ayi.csv"
    frame = pd.read_csv(resources["quotes"].replay_archive)
    frame[frame["Ticker"] == REMOVED].to_csv(only_ayi, index=False)
    quotes = QuoteClient(replay_archive=str(only_ayi))
    result = dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], instance=instance,
                            resources={**resources, "quotes": quotes}, partition_key="2018-07-02")
    assert result.success
    raw = result.asset_materializations_for_node("raw_quotes")[0].metadata
    assert REMOVED not in raw["tickers_not_served"].value  # not a member any more: not even asked
    assert raw["tickers_failed"].value == raw["tickers_requested"].value == len(raw["tickers_not_served"].value)
    assert raw["rows_in_run"].value == 0


def test_the_setting_selects_the_point_in_time_universe(monkeypatch):
    from stock_assets.definitions import build_resources

    monkeypatch.setenv(settings.SP500_MEMBERS_ENV, "point-in-time")
    assert build_resources()["tickers"].sp500_point_in_time
    monkeypatch.setenv(settings.SP500_MEMBERS_ENV, "")
    assert not build_resources()["tickers"].sp500_point_in_time
    monkeypatch.setenv(settings.SP500_MEMBERS_ENV, "yes")
    with pytest.raises(ValueError, match="STOCK_ASSETS_SP500_MEMBERS: expected `point-in-time`"):
        settings.sp500_point_in_time()


def test_member_days_without_a_sector_are_reported(instance, resources, database, tmp_path, monkeypatch):
    """The file covers AYI from 2018-06-01 only: its May days count nowhere, and May says so."""
    partial = tmp_path / "partial.csv"
    partial.write_text("symbol,sector,valid_from,valid_to\nAYI,Industrials,2018-06-01,2018-06-18\n")
    monkeypatch.setenv(settings.SECTOR_HISTORY_ENV, str(partial))
    _materialize(instance, resources, REFERENCE)
    _materialize(instance, resources, ["raw_quotes", "cleaned_prices"], "2018-05-01", "2018-06-29")
    result = _materialize(instance, resources, ["monthly_prices", "sector_daily_performance"], "2018-05-01",
                          "2018-06-01")
    by_month = {m.partition: m.metadata for m in result.asset_materializations_for_node("sector_daily_performance")}
    assert by_month["2018-05-01"]["members_without_sector"].value == [REMOVED]
    assert by_month["2018-06-01"]["members_without_sector"].value == []
    daily = _published(database, "sector_daily_performance", "trade_date", dt.date(2018, 5, 1), dt.date(2018, 7, 1))
    assert daily.loc[("Industrials", dt.date(2018, 5, 31)), "members"] == 1
    assert daily.loc[("Industrials", dt.date(2018, 6, 1)), "members"] == 2


def test_a_refetch_of_some_tickers_keeps_a_member_to_its_member_days(instance, resources, database):
    """The runs the new-ticker and gap sensors request (`only_tickers`) cut a member to its member days too."""
    request = ticker_run_request([REMOVED, "HON"], FIRST, LAST, "test")
    result = dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], instance=instance, resources=resources,
                            tags=request.tags, run_config=request.run_config)
    assert result.success
    store = resources["landing_io_manager"].store()
    present = clean_symbols_by_day(store, trading_days(FIRST, LAST + dt.timedelta(days=1)))
    assert REMOVED in present[dt.date(2018, 6, 15)] and "HON" in present[dt.date(2018, 6, 15)]
    assert REMOVED not in present[REMOVED_ON] and "HON" in present[REMOVED_ON]
    assert not any(REMOVED in symbols for day, symbols in present.items() if day >= REMOVED_ON)
