"""The metadata the UI shows is true: schemas match the real tables and files, lineage points at real
upstream columns, and per-partition numbers count each partition's own rows."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text

from stock_assets.defs import metadata
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
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


@pytest.fixture
def resources(database, tmp_path):
    return {
        "database": database,
        "quotes": QuoteClient(),
        "tickers": TickerSelection(tickers=["PFE", "MRK"]),
        "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing")),
    }


def _run(selection, resources, first: str, last: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize(ALL_ASSETS, selection=selection, resources=resources,
                            instance=dg.DagsterInstance.ephemeral(), tags=dict(zip(RANGE_TAGS, (first, last))))
    assert result.success
    return result


def _by_partition(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, dict]:
    return {m.partition: {k: v.value for k, v in m.metadata.items()}
            for m in result.asset_materializations_for_node(asset)}


def _definition_metadata(asset: str) -> dict:
    from stock_assets.definitions import defs

    raw = defs.resolve_asset_graph().get(dg.AssetKey(asset)).metadata
    # Definition metadata keeps the values as written (TableSchema, str), or wrapped in MetadataValue.
    return {key: getattr(value, "value", value) for key, value in raw.items()}


@pytest.mark.parametrize("asset", sorted(metadata.COLUMN_SCHEMAS))
def test_every_asset_declares_its_column_schema(asset):
    declared = _definition_metadata(asset)
    assert "dagster/column_schema" in declared, (
        f"{asset} has no dagster/column_schema: add `metadata=asset_metadata({asset!r})` "
        "(stock_assets.defs.metadata) to its @dg.asset"
    )
    assert declared["dagster/column_schema"] == metadata.COLUMN_SCHEMAS[asset]
    if asset in metadata.COLUMN_LINEAGE:
        assert declared["dagster/column_lineage"] == metadata.COLUMN_LINEAGE[asset]


def test_table_names_are_the_tables_the_assets_write():
    assert metadata.TABLE_NAMES == {
        "ticker_universe": "market.ticker_universe", "monthly_prices": "market.prices",
        "sector_daily_performance": "market.sector_daily_performance",
        "sector_monthly_summary": "market.sector_monthly_summary",
        "index_membership": "market.index_membership", "sector_classification": "market.sector_classification",
    }
    for asset, table in metadata.TABLE_NAMES.items():
        assert _definition_metadata(asset)["dagster/table_name"] == table


@pytest.mark.parametrize("asset", sorted(metadata.TABLE_NAMES))
def test_column_schema_matches_the_postgres_table(asset, database):
    schema, table = metadata.TABLE_NAMES[asset].split(".")
    with database.begin() as conn:
        actual = [tuple(row) for row in conn.execute(text(
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
            "WHERE table_schema = :schema AND table_name = :table ORDER BY ordinal_position"),
            {"schema": schema, "table": table})]
    declared = [(c.name, c.type, c.constraints.nullable) for c in metadata.COLUMN_SCHEMAS[asset].columns]
    assert declared == actual


def test_column_lineage_points_at_real_upstream_columns():
    from stock_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for asset, lineage in metadata.COLUMN_LINEAGE.items():
        own = {c.name for c in metadata.COLUMN_SCHEMAS[asset].columns}
        parents = {key.to_user_string() for key in graph.get(dg.AssetKey(asset)).parent_keys}
        assert set(lineage.deps_by_column) <= own, asset
        for column, deps in lineage.deps_by_column.items():
            assert deps, (asset, column)
            for dep in deps:
                upstream = dep.asset_key.to_user_string()
                assert upstream in parents, f"{asset}.{column} depends on {upstream}, which is not a parent"
                upstream_columns = {c.name for c in metadata.COLUMN_SCHEMAS[upstream].columns}
                assert dep.column_name in upstream_columns, (asset, column, upstream, dep.column_name)
    # The chain the issue asks for: a sector figure traces back to the raw quotes, and to the universe
    # through the point-in-time classification.
    sector_sources = metadata.COLUMN_LINEAGE["sector_daily_performance"].deps_by_column["sector"]
    assert dg.TableColumnDep(asset_key=dg.AssetKey("sector_classification"), column_name="sector") in sector_sources
    assert dg.TableColumnDep(asset_key=dg.AssetKey("ticker_universe"), column_name="sector") in \
        metadata.COLUMN_LINEAGE["sector_classification"].deps_by_column["sector"]
    assert [d.column_name for d in metadata.COLUMN_LINEAGE["monthly_prices"].deps_by_column["adj_close"]] == \
        ["adj_close"]


def test_range_run_has_per_day_metadata_and_landing_files_match_the_schemas(resources, database, tmp_path):
    # Fri 2019-11-15 .. Tue 2019-11-19: a weekend, and PFE's zero-volume bad bar on Mon 2019-11-18.
    result = _run(["raw_quotes", "cleaned_prices"], resources, "2019-11-15", "2019-11-19")
    days = ["2019-11-15", "2019-11-16", "2019-11-17", "2019-11-18", "2019-11-19"]
    cleaned = _by_partition(result, "cleaned_prices")
    assert sorted(cleaned) == days

    landing = resources["landing_io_manager"]
    for day in days:
        table = pq.read_table(landing.path_for(dg.AssetKey("cleaned_prices"), day))
        assert cleaned[day]["dagster/row_count"] == table.num_rows
        assert cleaned[day]["rows_in_run"] == 5  # 2 tickers x 3 sessions, less PFE's bad bar
        assert cleaned[day]["partitions_in_run"] == 5
    assert [cleaned[d]["dagster/row_count"] for d in days] == [2, 0, 0, 1, 2]
    assert [cleaned[d]["nyse_session"] for d in days] == [True, False, False, True, True]
    assert cleaned["2019-11-18"]["rejected_rows"] == 1
    assert cleaned["2019-11-18"]["rejected_by_reason"] == {"zero_volume_bar": 1}
    assert cleaned["2019-11-18"]["rejected_share"] == pytest.approx(0.5)
    assert cleaned["2019-11-19"]["rejected_rows"] == 0 and cleaned["2019-11-19"]["rejected_by_reason"] == {}
    assert cleaned["2019-11-19"]["rejected_by_reason_in_run"] == {"zero_volume_bar": 1}

    # The Parquet files carry exactly the declared columns and types.
    for asset, schema in (("raw_quotes", metadata.RAW_QUOTES_SCHEMA),
                          ("cleaned_prices", metadata.CLEANED_PRICES_SCHEMA)):
        arrow = pq.read_schema(landing.path_for(dg.AssetKey(asset), "2019-11-18"))
        assert [(f.name, _arrow_type(f.type)) for f in arrow] == [(c.name, c.type) for c in schema.columns], asset


def _arrow_type(type_) -> str:
    """Arrow's type name as the schema spells it: pandas 3 writes strings as large_string, a storage
    detail that does not change what a reader gets."""
    return {"large_string": "string", "date32[day]": "date32"}.get(str(type_), str(type_))


def test_month_run_has_per_month_metadata_matching_the_tables(resources, database):
    resources["tickers"] = TickerSelection(tickers=["AAPL", "XOM", "JNJ", "CVX"])
    assert dg.materialize([ticker_universe, index_membership, sector_classification], resources=resources).success
    _run(["raw_quotes", "cleaned_prices"], resources, "2020-02-01", "2020-03-31")
    result = _run(["monthly_prices", "sector_daily_performance", "sector_monthly_summary"], resources,
                  "2020-02-01", "2020-03-01")
    prices = _by_partition(result, "monthly_prices")
    daily = _by_partition(result, "sector_daily_performance")
    summary = _by_partition(result, "sector_monthly_summary")
    with database.begin() as conn:
        for month, child, sessions in (("2020-02-01", "prices_2020_02", 19), ("2020-03-01", "prices_2020_03", 22)):
            start = dt.date.fromisoformat(month)
            end = (start + dt.timedelta(days=32)).replace(day=1)
            in_child = conn.execute(text(f"SELECT count(*) FROM market.{child}")).scalar_one()
            assert prices[month]["dagster/row_count"] == in_child == 4 * sessions
            assert prices[month]["partition_table"] == f"market.{child}"
            assert prices[month]["trading_days"] == sessions
            assert prices[month]["partition_bytes"] > 0
            assert prices[month]["rows_in_run"] == 4 * (19 + 22)

            in_daily = conn.execute(text(
                "SELECT count(*) FROM market.sector_daily_performance WHERE trade_date >= :s AND trade_date < :e"),
                {"s": start, "e": end}).scalar_one()
            assert daily[month]["dagster/row_count"] == in_daily > 0
            assert daily[month]["sectors"] == 3  # Information Technology, Energy, Health Care
            # The four are S&P 500 members with prices; the other members' prices are not stored.
            assert daily[month]["index_members"] - daily[month]["index_members_without_prices"] == 4
            assert daily[month]["stored_symbols_not_in_index"] == 0
            assert daily[month]["members_without_sector"] == []

            best, worst = conn.execute(text(
                "SELECT (array_agg(sector ORDER BY equal_weight_return DESC))[1], "
                "(array_agg(sector ORDER BY equal_weight_return))[1] FROM market.sector_monthly_summary "
                "WHERE month = :m"), {"m": start}).one()
            assert (summary[month]["best_sector"], summary[month]["worst_sector"]) == (best, worst)
            assert summary[month]["dagster/row_count"] == 3
    # February and March 2020 had different leaders: per-month values, not the run's last month twice.
    assert summary["2020-02-01"]["best_sector_return"] != summary["2020-03-01"]["best_sector_return"]


def test_per_day_counts_match_a_row_by_row_count_for_every_date_spelling():
    import pandas as pd

    days = [dt.date(2024, 1, 2), "2024-01-02", pd.Timestamp("2024-01-03"), None, dt.date(2024, 1, 3),
            "2024-01-04T00:00:00", dt.date(2024, 1, 2)]
    frame = pd.DataFrame({"trade_date": days, "symbol": ["A", "B", "A", "C", None, "A", "A"]})
    keys = ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
    naive_days = [None if d is None else str(d)[:10] for d in days]
    assert metadata.rows_by_day(frame, keys) == {key: naive_days.count(key) for key in keys}
    pairs = {(d, s) for d, s in zip(naive_days, frame["symbol"]) if d is not None and pd.notna(s)}
    assert metadata.distinct_by_day(frame, keys, "symbol") == {key: sum(d == key for d, _ in pairs) for key in keys}
    assert metadata.rows_by_day(frame, keys) == {"2024-01-02": 3, "2024-01-03": 2, "2024-01-04": 1, "2024-01-05": 0}
    assert metadata.distinct_by_day(frame, keys, "symbol") == {"2024-01-02": 2, "2024-01-03": 1, "2024-01-04": 1,
                                                                "2024-01-05": 0}
