"""Monthly partitions of `market.prices`: each Dagster month is one PostgreSQL child table."""

import dagster as dg
import pandas as pd
from sqlalchemy import text

from stock_assets.automation import follow_upstream
from stock_assets.database.resource import PostgresResource
from stock_assets.defs.warehouse.loader import load_month
from stock_assets.partitions import month_bounds, monthly_partitions

PRICES_TABLE = "market.prices"


@dg.asset(
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=12),
    ins={"cleaned_prices": dg.AssetIn(partition_mapping=dg.TimeWindowPartitionMapping())},
    automation_condition=follow_upstream(),
    group_name="warehouse",
    kinds={"postgres"},
    owners=["team:market-data"],
    code_version="2",
    metadata={"dagster/table_name": PRICES_TABLE},
)
def monthly_prices(
    context: dg.AssetExecutionContext, cleaned_prices: pd.DataFrame, database: PostgresResource
) -> dg.MaterializeResult:
    """One month of clean prices in its own child table of `market.prices` (PARTITION BY RANGE on trade date).

    The month is built as a new table by binary COPY, indexed, and swapped in for the old child
    table (e.g. `market.prices_2020_03`) in one transaction under a per-month advisory lock:
    re-running a month, or running it twice at once, leaves exactly one copy of each row with the
    newest values, and readers never see a half-loaded month.
    """
    frame = cleaned_prices
    dates = pd.to_datetime(frame["trade_date"]) if len(frame) else pd.Series(dtype="datetime64[ns]")
    loads = []
    with database.psycopg_connection() as conn:
        for key in context.partition_keys:
            start, end = month_bounds(key)
            month = frame[(dates >= pd.Timestamp(start)) & (dates < pd.Timestamp(end))]
            # One chunk per trading day: the loader streams them into COPY.
            loads.append(load_month(conn, start, (day for _, day in month.groupby("trade_date", sort=True))))
            context.log.info("Loaded %s rows into market.%s (%s replaced)", loads[-1].rows_loaded,
                             loads[-1].partition, loads[-1].rows_replaced)
    with database.begin() as conn:
        sizes = dict(conn.execute(
            text("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname = 'market' AND c.relname = ANY(:names)"),
            {"names": [load.partition for load in loads]},
        ).all())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(load.rows_loaded for load in loads),
            "rows_replaced": sum(load.rows_replaced for load in loads),
            "partitions": dg.MetadataValue.json([load.partition for load in loads]),
            "partition_bytes": sum(sizes.values()),
            "symbols": int(frame["symbol"].nunique()) if len(frame) else 0,
            **database.pool_statistics(),
        }
    )
