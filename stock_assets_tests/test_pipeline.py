"""The whole graph against a real PostgreSQL: partitions, idempotent re-runs, sector figures."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import text

from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.sectors.assets import sector_daily_performance, sector_monthly_summary
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.history_assets import index_membership, sector_classification
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.landing.io_manager import LandingIOManager

ALL_ASSETS = [ticker_universe, index_membership, sector_classification, raw_quotes, cleaned_prices, monthly_prices,
              sector_daily_performance, sector_monthly_summary]
TICKERS = ["AAPL", "MSFT", "XOM", "CVX", "PFE", "JNJ"]
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


@pytest.fixture
def resources(database, tmp_path):
    return {
        "database": database,
        "quotes": QuoteClient(),
        "tickers": TickerSelection(tickers=TICKERS),
        "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing")),
    }


def _run(selection: list[str], resources, first: str, last: str | None = None) -> dg.ExecuteInProcessResult:
    tags = {} if last is None else dict(zip(RANGE_TAGS, (first, last)))
    return dg.materialize(
        ALL_ASSETS, selection=selection, resources=resources, instance=dg.DagsterInstance.ephemeral(),
        partition_key=first if last is None else None, tags=tags,
    )


def _snapshot(database) -> dict[str, object]:
    """Row counts and an order-independent checksum of every table the graph writes."""
    queries = {
        "market.prices": "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM "
                         "(SELECT symbol, trade_date, open, high, low, close, adj_close, volume, dividend, "
                         "split_ratio FROM market.prices) t",
        "market.sector_daily_performance": "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) "
                                           "FROM market.sector_daily_performance t",
        "market.sector_monthly_summary": "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) "
                                         "FROM market.sector_monthly_summary t",
        "market.price_rejections": "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM "
                                   "(SELECT trade_date, symbol, reason, detail FROM market.price_rejections) t",
    }
    with database.begin() as conn:
        return {name: tuple(conn.execute(text(sql)).one()) for name, sql in queries.items()}


def test_daily_partitions_and_month_are_idempotent(resources, database):
    assert dg.materialize([ticker_universe, index_membership, sector_classification], resources=resources).success
    # Every trading day of March 2020 in one run (a single-run backfill), then the month.
    daily = _run(["raw_quotes", "cleaned_prices"], resources, "2020-03-01", "2020-03-31")
    assert daily.success
    monthly = _run(["monthly_prices", "sector_daily_performance", "sector_monthly_summary"], resources,
                   "2020-03-01")
    assert monthly.success
    first = _snapshot(database)
    assert first["market.prices"][0] == 22 * len(TICKERS)  # 22 NYSE sessions in March 2020
    assert first["market.sector_daily_performance"][0] > 0

    with database.begin() as conn:
        partitions = conn.execute(text("SELECT partition_name FROM market.prices_partitions")).scalars().all()
        in_child = conn.execute(text("SELECT count(*) FROM market.prices_2020_03")).scalar_one()
    assert partitions == ["prices_2020_03"]
    assert in_child == first["market.prices"][0]

    # Re-run a few daily partitions on their own and the month again: identical contents.
    for day in ("2020-03-09", "2020-03-16", "2020-03-20"):
        assert _run(["raw_quotes", "cleaned_prices"], resources, day).success
    assert _run(["monthly_prices", "sector_daily_performance", "sector_monthly_summary"], resources,
                "2020-03-01").success
    assert _snapshot(database) == first


def test_bad_bar_is_rejected_with_its_reason_and_checks_report_it(resources, database):
    resources["tickers"] = TickerSelection(tickers=["PFE", "MRK"])
    result = _run(["raw_quotes", "cleaned_prices"], resources, "2019-11-18")
    assert result.success
    with database.begin() as conn:
        rejected = conn.execute(text("SELECT symbol, trade_date, reason FROM market.price_rejections")).all()
    assert [tuple(r) for r in rejected] == [("PFE", dt.date(2019, 11, 18), "zero_volume_bar")]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["ohlc_consistent"].passed and checks["unique_symbol_date"].passed
    assert not checks["tickers_complete"].passed  # PFE has no clean bar that day
    assert checks["tickers_complete"].severity == dg.AssetCheckSeverity.WARN
    materialization = result.asset_materializations_for_node("cleaned_prices")[0]
    assert materialization.metadata["rejected_rows"].value == 1


def test_holiday_is_market_closed_without_asking_yahoo(resources):
    client = resources["quotes"]
    result = _run(["raw_quotes", "cleaned_prices"], resources, "2020-07-03")  # Independence Day observed
    assert result.success
    metadata = result.asset_materializations_for_node("raw_quotes")[0].metadata
    assert metadata["market_closed"].value is True
    assert client.session.get_adapter("https://query2.finance.yahoo.com").requests["chart"] == 0


def test_month_without_its_daily_partitions_fails_clearly(resources):
    result = dg.materialize(ALL_ASSETS, selection=["monthly_prices"], resources=resources,
                            partition_key="2018-02-01", raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    told = (failure.user_failure_data.description if failure.user_failure_data else "") + str(failure.error)
    assert "cleaned_prices has no materialization for 28 of 28 partitions" in told
    # Retrying cannot make the days appear: the step failed once, without a retry.
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]


def _sector_returns_from_prices(database, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Independent of the project's SQL: pandas over the raw prices table."""
    with database.begin() as conn:
        prices = pd.read_sql(text(
            "SELECT p.symbol, p.trade_date, p.adj_close, u.sector FROM market.prices p "
            "JOIN market.ticker_universe u USING (symbol) ORDER BY symbol, trade_date"), conn)
    prices["ret"] = prices.groupby("symbol")["adj_close"].pct_change()
    window = prices[(prices["trade_date"] >= start) & (prices["trade_date"] <= end)].dropna(subset=["ret"])
    daily = window.groupby(["sector", "trade_date"])["ret"].mean()
    return (1 + daily).groupby("sector").prod() - 1


def test_demo_prints_sector_figures_that_match_the_prices_table(database, database_url, state_dir, tmp_path):
    env = {**os.environ, "STOCK_ASSETS_DATABASE_URL": database_url, "STOCK_ASSETS_TICKERS": ",".join(TICKERS),
           "STOCK_ASSETS_STATE_DIR": str(tmp_path / "demo-state")}
    for name in ("DAGSTER_HOME", "DAGSTER_PG_URL"):
        env.pop(name, None)
    command = [sys.executable, "-m", "stock_assets.tooling.cli", "demo", "--start", "2020-02-03", "--end", "2020-04-15"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    printed = {}
    for line in out.stdout.splitlines()[-20:]:
        for sector in ("Energy", "Information Technology", "Health Care"):
            if line.startswith(sector):
                printed[sector] = float(line.split()[len(sector.split()) + 2].rstrip("%")) / 100
    expected = _sector_returns_from_prices(database, dt.date(2020, 2, 1), dt.date(2020, 4, 30))
    assert set(printed) == {"Energy", "Information Technology", "Health Care"}
    for sector, value in printed.items():
        assert value == pytest.approx(expected[sector], abs=0.0001), sector
    assert "[3/3]" in out.stdout and "Sector summary" in out.stdout
    # The range's first session has its return: the demo loads the month before the range too.
    with database.begin() as conn:
        first, days = conn.execute(text(
            "SELECT min(trade_date), count(DISTINCT trade_date) FROM market.sector_daily_performance "
            "WHERE trade_date >= '2020-02-01' AND trade_date < '2020-05-01'")).one()
    assert (first, days) == (dt.date(2020, 2, 3), 19 + 22 + 21)  # every NYSE session of Feb..Apr 2020

    # A second demo is idempotent: same row counts.
    counts = _snapshot(database)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _snapshot(database) == counts
