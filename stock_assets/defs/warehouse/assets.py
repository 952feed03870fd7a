"""Monthly partitions of `market.prices`: each Dagster month is one PostgreSQL child table."""

import datetime as dt

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.automation import DATABASE_RETRY, follow_upstream
from stock_assets.defs.metadata import add_partition_metadata, asset_metadata
from stock_assets.defs.partitions import month_bounds, monthly_partitions
from stock_assets.defs.warehouse.loader import COPY_COLUMNS, load_months
from stock_assets.landing.io_manager import ALLOW_PARTIAL_INPUT, LAZY_INPUT, LandedRange
from stock_assets.settings import POSTGRES_POOL


@dg.asset(
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=12),
    # A month loads the days it has (the running month, a month at the end of the data, a gap just
    # filled); the days missing are listed per partition. It fails only when it has none.
    ins={"cleaned_prices": dg.AssetIn(partition_mapping=dg.TimeWindowPartitionMapping(),
                                      metadata={ALLOW_PARTIAL_INPUT: True, LAZY_INPUT: True})},
    automation_condition=follow_upstream(),
    pool=POSTGRES_POOL,
    retry_policy=DATABASE_RETRY,
    group_name="warehouse",
    kinds={"postgres"},
    owners=["team:market-data"],
    code_version="2",
    metadata=asset_metadata("monthly_prices"),
)
def monthly_prices(
    context: dg.AssetExecutionContext, cleaned_prices: LandedRange, database: PostgresResource
) -> dg.MaterializeResult:
    """One month of clean prices in its own child table of `market.prices` (PARTITION BY RANGE on trade date).

    The month is built as a new table by binary COPY, indexed, and swapped in for the old child
    table (e.g. `market.prices_2020_03`) in one transaction under a per-month advisory lock
    (a run of several months loads them over parallel connections, `load_workers`):
    re-running a month, or running it twice at once, leaves exactly one copy of each row with the
    newest values, and readers never see a half-loaded month.
    """
    missing_days = list(cleaned_prices.missing)
    kept = _stored_rows(database, missing_days)
    if missing_days:
        context.log.warning("cleaned_prices has no materialization for %d day(s) of the run's months (%s): "
                            "loading the days that exist, keeping the %d rows market.prices already holds "
                            "for the others", len(missing_days), ", ".join(missing_days[:10]), len(kept))
    months, figures = [], []
    for key in context.partition_keys:
        start, end = month_bounds(key)
        # Each month is read from the landing zone only when its load starts (one month per load
        # stream in memory, whatever the number of months or tickers), and goes to COPY as one
        # chunk: a COPY payload per trading day cost more in encoding calls than in rows.
        month = _MonthRows(cleaned_prices, kept, start, end)
        figures.append(month)
        months.append((start, month))
    loads = load_months(database.psycopg_connection, months, workers=database.load_workers)
    month_symbols = [len(month.symbols) for month in figures]
    month_days = [len(month.days) for month in figures]
    for load in loads:
        context.log.info("Loaded %s rows into market.%s (%s replaced)", load.rows_loaded, load.partition,
                         load.rows_replaced)
    with database.begin() as conn:
        sizes = dict(conn.execute(
            text("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname = 'market' AND c.relname = ANY(:names)"),
            {"names": [load.partition for load in loads]},
        ).all())
    # Each month's own numbers on its own partition; a run of up to 12 months also carries its
    # totals as `*_in_run` (see stock_assets/defs/metadata.py).
    add_partition_metadata(context, {
        key: {
            "dagster/row_count": load.rows_loaded,
            "rows_replaced": load.rows_replaced,
            "partition_table": f"market.{load.partition}",
            "partition_bytes": int(sizes.get(load.partition, 0)),
            "symbols": symbols,
            "trading_days": days,
            "days_not_materialized": dg.MetadataValue.json(
                [day for day in missing_days if day.startswith(key[:7])]),
            "rows_kept_from_market_prices": int(sum(
                1 for day in kept["trade_date"] if day.isoformat().startswith(key[:7]))) if len(kept) else 0,
        }
        for key, load, symbols, days in zip(context.partition_keys, loads, month_symbols, month_days)
    })
    return dg.MaterializeResult(
        metadata={
            "partitions_in_run": len(loads),
            "rows_in_run": sum(load.rows_loaded for load in loads),
            "rows_replaced_in_run": sum(load.rows_replaced for load in loads),
            "partitions": dg.MetadataValue.json([load.partition for load in loads]),
            "partition_bytes_in_run": int(sum(sizes.values())),
            "symbols_in_run": len(set().union(*(month.symbols for month in figures))),
            **database.pool_statistics(),
        }
    )


class _MonthRows:
    """One month's rows for COPY, read when iterated: the landed days of the month, then the rows
    market.prices already holds for its days that have no landing file. Counts its symbols and days."""

    def __init__(self, landed: LandedRange, kept: pd.DataFrame, start: dt.date, end: dt.date):
        self.landed, self.start, self.end = landed, start, end
        self.kept = kept[[start <= day < end for day in kept["trade_date"]]] if len(kept) else kept
        self.symbols: set[str] = set()
        self.days: set[dt.date] = set()

    def __iter__(self):
        days = [key for key in self.landed.keys if self.start <= dt.date.fromisoformat(key) < self.end]
        # The landed days go to COPY as Arrow, as read from Parquet: no pandas round trip.
        landed = self.landed.table(days)
        if landed is not None:
            self.symbols.update(pc.unique(landed["symbol"]).to_pylist())
            self.days.update(pc.unique(landed["trade_date"].cast(pa.date32())).to_pylist())
            yield landed
        if len(self.kept):
            self.symbols.update(self.kept["symbol"].unique())
            self.days.update(self.kept["trade_date"].unique())
            yield self.kept


def _stored_rows(database: PostgresResource, days: list[str]) -> pd.DataFrame:
    """What market.prices holds for `days` (days a partial month's load has no landing file for):
    kept, so that loading the days a month has never drops the ones it already stored."""
    columns = [name for name, _ in COPY_COLUMNS]
    if not days:
        return pd.DataFrame(columns=columns)
    with database.begin() as conn:
        rows = conn.execute(
            text("SELECT symbol, trade_date, open, high, low, close, adj_close, volume, dividend, split_ratio, "
                 "source FROM market.prices WHERE trade_date = ANY(:days)"),
            {"days": [dt.date.fromisoformat(day) for day in days]},
        ).all()
    return pd.DataFrame([tuple(row) for row in rows], columns=columns)
