"""Sector aggregations, computed in SQL over the monthly partitions joined to the ticker universe."""


import dagster as dg
from sqlalchemy import TextClause, text

from stock_assets.automation import SECTOR_FRESHNESS, follow_upstream
from stock_assets.database.resource import PostgresResource
from stock_assets.database.schema import load_query
from stock_assets.partitions import month_bounds, monthly_partitions

DAILY_TABLE = "market.sector_daily_performance"
MONTHLY_TABLE = "market.sector_monthly_summary"

_DELETE_DAILY = text(
    "DELETE FROM market.sector_daily_performance WHERE trade_date >= :month_start AND trade_date < :month_end"
)
_DELETE_MONTHLY = text(
    "DELETE FROM market.sector_monthly_summary WHERE month >= :month_start AND month < :month_end"
)


def _replace_months(
    context: dg.AssetExecutionContext, database: PostgresResource, delete: TextClause, query_name: str
) -> int:
    """Replace each month of the run's partitions with the named query's output, one transaction per month."""
    insert = text(load_query(query_name))
    rows = 0
    for key in context.partition_keys:
        start, end = month_bounds(key)
        params = {"month_start": start, "month_end": end}
        with database.begin() as conn:
            conn.execute(delete, params)
            rows += conn.execute(insert, params).rowcount
    return rows


@dg.asset(
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=12),
    deps=["monthly_prices", "ticker_universe"],
    automation_condition=follow_upstream(),
    freshness_policy=SECTOR_FRESHNESS,
    group_name="sectors",
    kinds={"postgres", "sql"},
    owners=["team:market-data"],
    code_version="1",
    metadata={"dagster/table_name": DAILY_TABLE},
)
def sector_daily_performance(context: dg.AssetExecutionContext, database: PostgresResource) -> dg.MaterializeResult:
    """Per GICS sector and trading day: equal-weight and volume-weighted total returns, advancers,
    decliners and dollar volume, computed in SQL (`sql/queries/sector_daily_performance.sql`) over
    `market.prices` joined to `market.ticker_universe`."""
    rows = _replace_months(context, database, _DELETE_DAILY, "sector_daily_performance")
    return dg.MaterializeResult(metadata={"dagster/row_count": rows})


@dg.asset(
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=12),
    deps=["sector_daily_performance"],
    automation_condition=follow_upstream(),
    freshness_policy=SECTOR_FRESHNESS,
    group_name="sectors",
    kinds={"postgres", "sql"},
    owners=["team:market-data"],
    code_version="1",
    metadata={"dagster/table_name": MONTHLY_TABLE},
)
def sector_monthly_summary(context: dg.AssetExecutionContext, database: PostgresResource) -> dg.MaterializeResult:
    """Per GICS sector and month: compounded equal-weight and volume-weighted returns, share of
    advancing stocks, dollar volume, and the best and worst days, from `market.sector_daily_performance`
    (`sql/queries/sector_monthly_summary.sql`)."""
    rows = _replace_months(context, database, _DELETE_MONTHLY, "sector_monthly_summary")
    with database.begin() as conn:
        leaders = conn.execute(
            text("SELECT sector, equal_weight_return FROM market.sector_monthly_summary "
                 "WHERE month = :month ORDER BY equal_weight_return DESC"),
            {"month": month_bounds(context.partition_keys[-1])[0]},
        ).all()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "best_sector": leaders[0][0] if leaders else None,
            "best_sector_return": float(leaders[0][1]) if leaders else None,
            "worst_sector": leaders[-1][0] if leaders else None,
            "worst_sector_return": float(leaders[-1][1]) if leaders else None,
        }
    )
