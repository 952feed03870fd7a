"""Sector figures are point in time: that day's S&P 500 members in that day's GICS sector.

Every published column is recomputed here independently, with pandas, from the stored prices
(`market.prices`) and the dated facts stated in this file (the GICS changes as announced, and the
membership stints), and compared with the tables the SQL wrote, on days around the 2016, 2018 and
2023 reclassifications.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.sectors.assets import sector_daily_performance, sector_monthly_summary
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.history import HistoryDataError, classification_intervals
from stock_assets.defs.universe.history_assets import index_membership, sector_classification
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.defs.warehouse.loader import load_month
from stock_assets.landing.io_manager import LandingIOManager

ASSETS = [ticker_universe, index_membership, sector_classification, raw_quotes, cleaned_prices, monthly_prices,
          sector_daily_performance, sector_monthly_summary]
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
REFERENCE = ["ticker_universe", "index_membership", "sector_classification"]
SECTORS = ["sector_daily_performance", "sector_monthly_summary"]

# The facts, as announced (not read from the project's data files): (symbol, first day under the new
# sector, sector before, sector from that day).
ANNOUNCED_CHANGES = [
    ("AMT", dt.date(2016, 9, 1), "Financials", "Real Estate"),
    ("SPG", dt.date(2016, 9, 1), "Financials", "Real Estate"),
    ("GOOGL", dt.date(2018, 9, 24), "Information Technology", "Communication Services"),
    ("DIS", dt.date(2018, 9, 24), "Consumer Discretionary", "Communication Services"),
    ("NFLX", dt.date(2018, 9, 24), "Consumer Discretionary", "Communication Services"),
    ("CMCSA", dt.date(2018, 9, 24), "Consumer Discretionary", "Communication Services"),
    ("T", dt.date(2018, 9, 24), "Telecommunication Services", "Communication Services"),
    ("VZ", dt.date(2018, 9, 24), "Telecommunication Services", "Communication Services"),
    ("V", dt.date(2023, 3, 20), "Information Technology", "Financials"),
    ("MA", dt.date(2023, 3, 20), "Information Technology", "Financials"),
]
UNCHANGED = {"AAPL": "Information Technology", "MSFT": "Information Technology", "JPM": "Financials",
             "HD": "Consumer Discretionary", "MCD": "Consumer Discretionary", "BAC": "Financials"}


def expected_sector(symbol: str, day: dt.date) -> str:
    for changed, effective, before, after in ANNOUNCED_CHANGES:
        if changed == symbol:
            return before if day < effective else after
    return UNCHANGED[symbol]


@pytest.fixture
def resources(database, tmp_path):
    return {
        "database": database,
        "quotes": QuoteClient(),
        "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing")),
    }


def _materialize(resources, selection, tickers, first=None, last=None, instance=None):
    tags = dict(zip(RANGE_TAGS, (first, last))) if last else {}
    result = dg.materialize(
        ASSETS, selection=selection, resources={**resources, "tickers": TickerSelection(tickers=tickers)},
        instance=instance or dg.DagsterInstance.ephemeral(), tags=tags,
        partition_key=first if (first and not last) else None,
    )
    assert result.success
    return result


# -- the independent recomputation -----------------------------------------------------------------

def _stored_prices(database) -> pd.DataFrame:
    with database.begin() as conn:
        prices = pd.read_sql(text("SELECT symbol, trade_date, close, adj_close, volume FROM market.prices "
                                  "ORDER BY symbol, trade_date"), conn)
    prices["ret"] = prices.groupby("symbol")["adj_close"].pct_change()
    return prices


def _members(database, prices: pd.DataFrame) -> pd.DataFrame:
    """Rows of members with a return, their sector from the announced facts, membership from the
    stored stints (every symbol used here was an S&P 500 member throughout: checked)."""
    with database.begin() as conn:
        stints = pd.read_sql(text("SELECT symbol, valid_from, valid_to FROM market.index_membership"), conn)
    rows = prices.dropna(subset=["ret"]).copy()
    member = []
    for row in rows.itertuples():
        mine = stints[stints["symbol"] == row.symbol]
        member.append(bool(((mine["valid_from"] <= row.trade_date)
                            & (mine["valid_to"].isna() | (mine["valid_to"] > row.trade_date))).any()))
    rows = rows[member].copy()
    rows["sector"] = [expected_sector(s, d) for s, d in zip(rows["symbol"], rows["trade_date"])]
    return rows


def expected_daily(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(dollars=rows["close"] * rows["volume"])
    grouped = rows.groupby(["sector", "trade_date"])
    return pd.DataFrame({
        "members": grouped.size(),
        "advancers": grouped["ret"].apply(lambda r: int((r > 0).sum())),
        "decliners": grouped["ret"].apply(lambda r: int((r < 0).sum())),
        "unchanged": grouped["ret"].apply(lambda r: int((r == 0).sum())),
        "equal_weight_return": grouped["ret"].mean(),
        "dollar_volume_weighted_return": grouped.apply(
            lambda g: (g["ret"] * g["dollars"]).sum() / g["dollars"].sum(), include_groups=False),
        "share_volume_weighted_return": grouped.apply(
            lambda g: (g["ret"] * g["volume"]).sum() / g["volume"].sum(), include_groups=False),
        "dollar_volume": grouped["dollars"].sum(),
    })


def expected_monthly(rows: pd.DataFrame, month: dt.date) -> pd.DataFrame:
    rows = rows[pd.to_datetime(rows["trade_date"]).dt.to_period("M") == pd.Period(month, "M")]
    daily = expected_daily(rows).reset_index()
    by_sector = daily.groupby("sector")
    member_returns = rows.groupby(["sector", "symbol"])["ret"].apply(lambda r: (1 + r).prod() - 1)
    return pd.DataFrame({
        "trading_days": by_sector.size(),
        "members": by_sector["members"].max(),
        "equal_weight_return": by_sector["equal_weight_return"].apply(lambda r: (1 + r).prod() - 1),
        "dollar_volume_weighted_return": by_sector["dollar_volume_weighted_return"].apply(lambda r: (1 + r).prod() - 1),
        "share_volume_weighted_return": by_sector["share_volume_weighted_return"].apply(lambda r: (1 + r).prod() - 1),
        "mean_member_return": member_returns.groupby("sector").mean(),
        "advancer_share": by_sector["advancers"].sum() / by_sector["members"].sum(),
        "dollar_volume": by_sector["dollar_volume"].sum(),
        "best_day": by_sector.apply(lambda g: g.loc[g["equal_weight_return"].idxmax(), "trade_date"],
                                    include_groups=False),
        "worst_day": by_sector.apply(lambda g: g.loc[g["equal_weight_return"].idxmin(), "trade_date"],
                                     include_groups=False),
    })


def _published(database, table: str, key: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    with database.begin() as conn:
        frame = pd.read_sql(text(f"SELECT * FROM market.{table} WHERE {key} >= :s AND {key} < :e"), conn,
                            params={"s": start, "e": end})
    return frame.set_index(["sector", key]).sort_index()


def assert_matches(published: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert sorted(published.index) == sorted(expected.index)
    for column in expected.columns:
        got, want = published[column].sort_index(), expected[column].reindex(published.index).sort_index()
        if column in ("best_day", "worst_day"):
            assert list(got) == list(want), column
        else:
            np.testing.assert_allclose(got.astype(float), want.astype(float), rtol=1e-9, atol=1e-12,
                                       err_msg=column)


# -- 2018: Communication Services, on the bundled prices -----------------------------------------

TICKERS_2018 = ["GOOGL", "DIS", "NFLX", "CMCSA", "T", "VZ", "AAPL", "MSFT", "HD", "MCD"]


def test_2018_reclassification_point_in_time_every_column_recomputed(resources, database):
    _materialize(resources, REFERENCE, TICKERS_2018)
    _materialize(resources, ["raw_quotes", "cleaned_prices"], TICKERS_2018, "2018-08-01", "2018-10-31")
    _materialize(resources, ["monthly_prices", *SECTORS], TICKERS_2018, "2018-08-01", "2018-10-01")

    daily = _published(database, "sector_daily_performance", "trade_date", dt.date(2018, 9, 1), dt.date(2018, 11, 1))
    # Friday 2018-09-21: GOOGL is Information Technology, DIS and friends Consumer Discretionary, T and
    # VZ Telecommunication Services; Monday 2018-09-24 they are all Communication Services.
    friday, monday = dt.date(2018, 9, 21), dt.date(2018, 9, 24)
    assert daily.loc[("Information Technology", friday), "members"] == 3  # AAPL, MSFT, GOOGL
    assert daily.loc[("Consumer Discretionary", friday), "members"] == 5  # HD, MCD, DIS, NFLX, CMCSA
    assert daily.loc[("Telecommunication Services", friday), "members"] == 2
    assert ("Communication Services", friday) not in daily.index
    assert daily.loc[("Communication Services", monday), "members"] == 6
    assert daily.loc[("Information Technology", monday), "members"] == 2
    assert ("Telecommunication Services", monday) not in daily.index

    rows = _members(database, _stored_prices(database))
    window = rows[(rows["trade_date"] >= dt.date(2018, 9, 1)) & (rows["trade_date"] < dt.date(2018, 11, 1))]
    assert_matches(daily, expected_daily(window))
    # The month's first session has its return (over August's last close).
    assert (daily.reset_index()["trade_date"].min()) == dt.date(2018, 9, 4)
    for month in (dt.date(2018, 9, 1), dt.date(2018, 10, 1)):
        end = (month + dt.timedelta(days=32)).replace(day=1)
        assert_matches(_published(database, "sector_monthly_summary", "month", month, end),
                       expected_monthly(rows, month).assign(month=month).set_index("month", append=True))


# -- 2016: Real Estate, on the bundled prices --------------------------------------------------------

def test_2016_real_estate_sector_starts_on_2016_09_01(resources, database):
    tickers = ["AMT", "SPG", "JPM", "BAC"]
    _materialize(resources, REFERENCE, tickers)
    _materialize(resources, ["raw_quotes", "cleaned_prices"], tickers, "2016-08-01", "2016-09-30")
    _materialize(resources, ["monthly_prices", *SECTORS], tickers, "2016-08-01", "2016-09-01")
    daily = _published(database, "sector_daily_performance", "trade_date", dt.date(2016, 8, 1), dt.date(2016, 10, 1))
    assert daily.loc[("Financials", dt.date(2016, 8, 31)), "members"] == 4
    assert ("Real Estate", dt.date(2016, 8, 31)) not in daily.index
    assert daily.loc[("Financials", dt.date(2016, 9, 1)), "members"] == 2
    assert daily.loc[("Real Estate", dt.date(2016, 9, 1)), "members"] == 2
    rows = _members(database, _stored_prices(database))
    # August's first session has no return: July is not loaded (the previous month is a dependency).
    assert_matches(daily, expected_daily(rows))
    assert daily.reset_index()["trade_date"].min() == dt.date(2016, 8, 2)


# -- 2023: V and MA move to Financials (after the bundled data: synthetic prices) --------------------

def _synthetic_month(symbols: list[str], sessions: list[dt.date], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for index, symbol in enumerate(symbols):
        price = 100.0 + 10 * index
        for day in sessions:
            price *= 1 + rng.normal(0, 0.02)
            rows.append({"symbol": symbol, "trade_date": day, "open": price, "high": price * 1.01,
                         "low": price * 0.99, "close": price, "adj_close": price,
                         "volume": int(rng.integers(1_000_000, 50_000_000)), "dividend": 0.0, "split_ratio": 1.0,
                         "source": "replay"})
    return pd.DataFrame(rows)


def test_2023_reclassification_v_and_ma_financials_from_2023_03_20(resources, database):
    from stock_assets.defs.partitions import trading_days

    symbols = ["V", "MA", "AAPL", "MSFT", "JPM", "BAC"]
    _materialize(resources, REFERENCE, symbols)
    with database.psycopg_connection() as conn:
        for seed, month in enumerate((dt.date(2023, 2, 1), dt.date(2023, 3, 1))):
            end = (month + dt.timedelta(days=32)).replace(day=1)
            load_month(conn, month, _synthetic_month(symbols, trading_days(month, end), seed))
    _materialize(resources, SECTORS, symbols, "2023-03-01")

    daily = _published(database, "sector_daily_performance", "trade_date", dt.date(2023, 3, 1), dt.date(2023, 4, 1))
    assert daily.loc[("Information Technology", dt.date(2023, 3, 17)), "members"] == 4
    assert daily.loc[("Financials", dt.date(2023, 3, 17)), "members"] == 2
    assert daily.loc[("Information Technology", dt.date(2023, 3, 20)), "members"] == 2
    assert daily.loc[("Financials", dt.date(2023, 3, 20)), "members"] == 4
    rows = _members(database, _stored_prices(database))
    march = rows[rows["trade_date"] >= dt.date(2023, 3, 1)]
    assert_matches(daily, expected_daily(march))
    monthly = _published(database, "sector_monthly_summary", "month", dt.date(2023, 3, 1), dt.date(2023, 4, 1))
    expected = expected_monthly(rows, dt.date(2023, 3, 1)).assign(month=dt.date(2023, 3, 1))
    assert_matches(monthly, expected.set_index("month", append=True))
    # A member that changed sector mid-month counts in each sector for its days there: V's month is
    # split between the two sectors' mean_member_return.
    assert monthly.loc[("Financials", dt.date(2023, 3, 1)), "members"] == 4


def test_classification_that_contradicts_todays_sector_is_refused():
    current = pd.DataFrame({"symbol": ["V", "AAPL"], "sector": ["Information Technology", "Information Technology"]})
    with pytest.raises(HistoryDataError, match="V .history: Financials, today: Information Technology"):
        classification_intervals(current)


def test_bundled_membership_and_classification_tables(resources, database):
    first = _materialize(resources, REFERENCE, ["AAPL"])
    again = _materialize(resources, REFERENCE, ["AAPL", "MSFT"])
    for asset in ("index_membership", "sector_classification"):
        # Same content, same data version: a refresh that changed nothing is recognisable as such.
        versions = [run.asset_materializations_for_node(asset)[0].tags["dagster/data_version"]
                    for run in (first, again)]
        assert versions[0] == versions[1], asset
    with database.begin() as conn:
        def sector(symbol, day):
            return conn.execute(text(
                "SELECT sector FROM market.sector_classification WHERE symbol = :s AND valid_from <= :d "
                "AND :d < valid_to"), {"s": symbol, "d": day}).scalar_one()

        def member(symbol, day):
            return conn.execute(text(
                "SELECT count(*) FROM market.index_membership WHERE symbol = :s AND valid_from <= :d "
                "AND (valid_to IS NULL OR :d < valid_to)"), {"s": symbol, "d": day}).scalar_one() == 1

        for symbol, effective, before, after in ANNOUNCED_CHANGES:
            assert sector(symbol, effective - dt.timedelta(days=1)) == before, symbol
            assert sector(symbol, effective) == after, symbol
        # Additions and removals: TSLA joined on 2020-12-21, replacing AIV; ETSY joined 2020-09-21.
        assert not member("TSLA", dt.date(2020, 12, 18)) and member("TSLA", dt.date(2020, 12, 21))
        assert member("AIV", dt.date(2020, 12, 18)) and not member("AIV", dt.date(2020, 12, 21))
        assert not member("ETSY", dt.date(2020, 9, 18)) and member("ETSY", dt.date(2020, 9, 21))
        # Every bundled sample ticker was a member over the whole sample.
        sample = conn.execute(text(
            "SELECT count(DISTINCT symbol) FROM market.index_membership WHERE valid_from <= '2016-01-04' "
            "AND (valid_to IS NULL OR valid_to > '2020-10-27') AND symbol = ANY(:s)"),
            {"s": ["AAPL", "GE", "O", "EQIX", "V", "MA", "D"]}).scalar_one()
        assert sample == 7


# -- additions and removals: a removed ticker counts while it was a member --------------------------

def test_removed_ticker_counts_until_its_removal_and_an_added_one_from_its_addition(resources, database):
    """December 2020: TSLA joined the S&P 500 on 2020-12-21, replacing AIV (Real Estate since 2016).
    Prices of both are stored for the whole month (synthetic: after the bundled data)."""
    from stock_assets.defs.partitions import trading_days

    symbols = ["TSLA", "AIV", "SPG", "HD"]
    _materialize(resources, REFERENCE, ["SPG", "HD", "TSLA"])
    with database.psycopg_connection() as conn:
        for seed, month in enumerate((dt.date(2020, 11, 1), dt.date(2020, 12, 1))):
            end = (month + dt.timedelta(days=32)).replace(day=1)
            load_month(conn, month, _synthetic_month(symbols, trading_days(month, end), seed))
    result = _materialize(resources, SECTORS, ["SPG", "HD", "TSLA"], "2020-12-01")

    daily = _published(database, "sector_daily_performance", "trade_date", dt.date(2020, 12, 1), dt.date(2021, 1, 1))
    friday, monday = dt.date(2020, 12, 18), dt.date(2020, 12, 21)
    assert daily.loc[("Real Estate", friday), "members"] == 2  # SPG and AIV
    assert daily.loc[("Real Estate", monday), "members"] == 1  # AIV left
    assert daily.loc[("Consumer Discretionary", friday), "members"] == 1  # HD; TSLA not yet a member
    assert daily.loc[("Consumer Discretionary", monday), "members"] == 2

    with database.begin() as conn:
        stints = pd.read_sql(text("SELECT symbol, valid_from, valid_to FROM market.index_membership "
                                  "WHERE symbol = ANY(:s)"), conn, params={"s": symbols})
    rows = _stored_prices(database).dropna(subset=["ret"])
    rows = rows[rows["trade_date"] >= dt.date(2020, 12, 1)]
    sector_of = {"TSLA": "Consumer Discretionary", "HD": "Consumer Discretionary", "SPG": "Real Estate",
                 "AIV": "Real Estate"}
    keep = [((stints["symbol"] == s) & (stints["valid_from"] <= d)
             & (stints["valid_to"].isna() | (stints["valid_to"] > d))).any()
            for s, d in zip(rows["symbol"], rows["trade_date"])]
    rows = rows[keep].assign(sector=lambda f: f["symbol"].map(sector_of))
    assert_matches(daily, expected_daily(rows))
    monthly = _published(database, "sector_monthly_summary", "month", dt.date(2020, 12, 1), dt.date(2021, 1, 1))
    assert_matches(monthly, expected_monthly(rows, dt.date(2020, 12, 1)).assign(month=dt.date(2020, 12, 1))
                   .set_index("month", append=True))
    # Reported per month: members of the index without stored prices are not errors.
    metadata = result.asset_materializations_for_node("sector_daily_performance")[0].metadata
    assert metadata["index_members_without_prices"].value == metadata["index_members"].value - 4
    assert metadata["stored_symbols_not_in_index"].value == 0


def test_sector_figures_refuse_to_run_without_membership_and_classification(resources, database):
    _materialize(resources, ["ticker_universe"], ["AAPL"])
    result = dg.materialize(ASSETS, selection=["sector_daily_performance"], partition_key="2020-03-01",
                            resources={**resources, "tickers": TickerSelection(tickers=["AAPL"])},
                            raise_on_error=False)
    assert not result.success
    told = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
    assert "market.index_membership and market.sector_classification are empty" in told
    assert "universe_job" in told
