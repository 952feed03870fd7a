"""Sector aggregations, computed in SQL over the monthly partitions, point in time: a day's figures use
that day's S&P 500 members (`index_membership`) and their GICS sector of that day
(`sector_classification`).

A month's first session needs the previous month's last close, so both assets depend on the
previous month of `monthly_prices` as well as their own (a TimeWindowPartitionMapping with
start_offset=-1): reloading month N-1 makes month N's figures stale, and automation recomputes them.
"""


import dagster as dg
from sqlalchemy import TextClause, text

from stock_assets.database.resource import PostgresResource
from stock_assets.database.schema import load_query
from stock_assets.defs.automation import DATABASE_RETRY, SECTOR_FRESHNESS, follow_upstream
from stock_assets.defs.metadata import add_partition_metadata, asset_metadata
from stock_assets.defs.partitions import month_bounds, monthly_partitions

_DELETE_DAILY = text(
    "DELETE FROM market.sector_daily_performance WHERE trade_date >= :month_start AND trade_date < :month_end"
)
_DELETE_MONTHLY = text(
    "DELETE FROM market.sector_monthly_summary WHERE month >= :month_start AND month < :month_end"
)


def _replace_months(
    context: dg.AssetExecutionContext, database: PostgresResource, delete: TextClause, query_name: str
) -> dict[str, int]:
    """Replace each month of the run's partitions with the named query's output, one transaction per
    month; returns the rows written per month (partition key)."""
    insert = text(load_query(query_name))
    _require_point_in_time_tables(database)
    rows = {}
    for key in context.partition_keys:
        start, end = month_bounds(key)
        params = {"month_start": start, "month_end": end}
        with database.begin() as conn:
            conn.execute(delete, params)
            rows[key] = conn.execute(insert, params).rowcount
    return rows


def _require_point_in_time_tables(database: PostgresResource) -> None:
    """Without membership or classification, every figure would silently be empty: refuse instead."""
    with database.begin() as conn:
        filled = conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM market.index_membership), EXISTS (SELECT 1 FROM market.sector_classification)"
        )).one()
    empty = [table for table, has_rows in zip(("market.index_membership", "market.sector_classification"), filled)
             if not has_rows]
    if empty:
        raise dg.Failure(
            description=f"{' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty: sector figures use each "
                        "day's index members and GICS sectors; materialize index_membership and "
                        "sector_classification first (`universe_job`)",
            allow_retries=False,
        )


def _run_range(context: dg.AssetExecutionContext) -> dict[str, object]:
    return {"start": month_bounds(context.partition_keys[0])[0], "end": month_bounds(context.partition_keys[-1])[1]}


# The month itself and the one before it (whose last close starts the month's first return).
WITH_PREVIOUS_MONTH = dg.TimeWindowPartitionMapping(start_offset=-1, allow_nonexistent_upstream_partitions=True)
POINT_IN_TIME_DEPS = [
    dg.AssetDep("monthly_prices", partition_mapping=WITH_PREVIOUS_MONTH),
    dg.AssetDep("index_membership"),
    dg.AssetDep("sector_classification"),
]


def _sector_asset(*deps: str | dg.AssetDep):
    """What both sector tables are: monthly, computed in SQL, following their upstream."""

    def decorate(compute):
        return dg.asset(
            partitions_def=monthly_partitions,
            backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=12),
            deps=list(deps),
            automation_condition=follow_upstream(),
            retry_policy=DATABASE_RETRY,
            freshness_policy=SECTOR_FRESHNESS,
            group_name="sectors",
            kinds={"postgres", "sql"},
            owners=["team:market-data"],
            code_version="2",
            metadata=asset_metadata(compute.__name__),
        )(compute)

    return decorate


@_sector_asset(*POINT_IN_TIME_DEPS)
def sector_daily_performance(context: dg.AssetExecutionContext, database: PostgresResource) -> dg.MaterializeResult:
    """Per GICS sector and trading day, point in time: equal-weight, dollar-volume-weighted and
    share-volume-weighted total returns, advancers, decliners and dollar volume of that day's S&P 500
    members in their sector of that day, computed in SQL (`sql/queries/sector_daily_performance.sql`)
    over `market.prices`, `market.index_membership` and `market.sector_classification`.

    Depends on the previous month of `monthly_prices` too: the month's first session's return is
    over the previous month's last close. Index members without stored prices (tickers not
    tracked, or delisted ones Yahoo no longer serves) are reported per month, not errors."""
    rows = _replace_months(context, database, _DELETE_DAILY, "sector_daily_performance")
    coverage = _coverage(context, database)
    with database.begin() as conn:
        per_month = {
            month.isoformat(): (sessions, sectors, mean_return)
            for month, sessions, sectors, mean_return in conn.execute(
                text("SELECT date_trunc('month', trade_date)::date, count(DISTINCT trade_date), "
                     "count(DISTINCT sector), avg(equal_weight_return) FROM market.sector_daily_performance "
                     "WHERE trade_date >= :start AND trade_date < :end GROUP BY 1"),
                _run_range(context),
            ).all()
        }
    partition_metadata = {}
    for key, count in rows.items():
        sessions, sectors, mean_return = per_month.get(key, (0, 0, None))
        partition_metadata[key] = {"dagster/row_count": count, "trading_days": sessions, "sectors": sectors,
                                   "mean_sector_day_return": _float(mean_return), **coverage[key]}
    add_partition_metadata(context, partition_metadata)
    return dg.MaterializeResult(
        metadata={"partitions_in_run": len(rows), "rows_in_run": sum(rows.values())}
    )


@_sector_asset("sector_daily_performance", *POINT_IN_TIME_DEPS)
def sector_monthly_summary(context: dg.AssetExecutionContext, database: PostgresResource) -> dg.MaterializeResult:
    """Per GICS sector and month: compounded daily equal-weight returns (a portfolio rebalanced to
    equal weights every day), compounded dollar- and share-volume-weighted returns, the average of
    the members' own monthly returns (`mean_member_return`), share of advancing stocks, dollar
    volume, and the best and worst days, from `market.sector_daily_performance` and the point-in-time
    members (`sql/queries/sector_monthly_summary.sql`)."""
    rows = _replace_months(context, database, _DELETE_MONTHLY, "sector_monthly_summary")
    leaders: dict[str, list] = {key: [] for key in rows}
    with database.begin() as conn:
        for month, sector, value in conn.execute(
            text("SELECT month, sector, equal_weight_return FROM market.sector_monthly_summary "
                 "WHERE month >= :start AND month < :end ORDER BY month, equal_weight_return DESC"),
            _run_range(context),
        ).all():
            leaders.setdefault(month.isoformat(), []).append((sector, round(float(value), 6)))
    # Per month: its own leaders, so the partition plots show each month's best and worst returns.
    add_partition_metadata(context, {
        key: {
            "dagster/row_count": count,
            "best_sector": leaders[key][0][0] if leaders[key] else None,
            "best_sector_return": leaders[key][0][1] if leaders[key] else None,
            "worst_sector": leaders[key][-1][0] if leaders[key] else None,
            "worst_sector_return": leaders[key][-1][1] if leaders[key] else None,
            "sector_return_spread": round(leaders[key][0][1] - leaders[key][-1][1], 6) if leaders[key] else None,
        }
        for key, count in rows.items()
    })
    return dg.MaterializeResult(
        metadata={"partitions_in_run": len(rows), "rows_in_run": sum(rows.values())}
    )


_COVERAGE = text(
    """
    WITH members AS (
        SELECT DISTINCT m.symbol
        FROM market.index_membership m
        WHERE m.valid_from < :month_end AND (m.valid_to IS NULL OR m.valid_to > :month_start)
    ),
    stored AS (
        SELECT DISTINCT symbol FROM market.prices WHERE trade_date >= :month_start AND trade_date < :month_end
    )
    SELECT
        (SELECT count(*) FROM members),
        (SELECT count(*) FROM members WHERE symbol NOT IN (SELECT symbol FROM stored)),
        (SELECT (array_agg(symbol ORDER BY symbol))[1:20] FROM members WHERE symbol NOT IN (SELECT symbol FROM stored)),
        (SELECT count(*) FROM stored WHERE symbol NOT IN (SELECT symbol FROM members)),
        (SELECT array_agg(DISTINCT p.symbol ORDER BY p.symbol) FROM market.prices p
          JOIN market.index_membership m
            ON m.symbol = p.symbol AND p.trade_date >= m.valid_from AND (m.valid_to IS NULL OR p.trade_date < m.valid_to)
          WHERE p.trade_date >= :month_start AND p.trade_date < :month_end
            AND NOT EXISTS (SELECT 1 FROM market.sector_classification c WHERE c.symbol = p.symbol
                            AND p.trade_date >= c.valid_from AND p.trade_date < c.valid_to))
    """
)


def _coverage(context: dg.AssetExecutionContext, database: PostgresResource) -> dict[str, dict[str, object]]:
    """Per month: index members, members without stored prices (untracked, or delisted tickers Yahoo
    no longer serves: reported, not an error), stored symbols outside the index that month, and
    members with prices on a member day without a sector that day (a past member missing from the
    user's sector history file, or covered only in part: those days do not count)."""
    coverage = {}
    with database.begin() as conn:
        for key in context.partition_keys:
            start, end = month_bounds(key)
            members, missing, missing_sample, outside, unclassified = conn.execute(
                _COVERAGE, {"month_start": start, "month_end": end}
            ).one()
            coverage[key] = {
                "index_members": members,
                "index_members_without_prices": missing,
                "index_members_without_prices_sample": dg.MetadataValue.json(list(missing_sample or [])),
                "stored_symbols_not_in_index": outside,
                "members_without_sector": dg.MetadataValue.json(list(unclassified or [])),
            }
    return coverage


def _float(value: object) -> float | None:
    return None if value is None else round(float(value), 6)
