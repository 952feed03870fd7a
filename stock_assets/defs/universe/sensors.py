"""The new-ticker sensor: a ticker joining the tracked universe gets its history, and only it."""

import datetime as dt
import json

import dagster as dg
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.jobs import daily_prices_job
from stock_assets.defs.partitions import FIRST_DAY, range_tags, trading_days
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.quotes.ticker_runs import TICKERS_TAG, TRIGGER_TAG, ticker_run_request, tickers_tag
from stock_assets.landing.streaming import tickers_per_batch


def history_backfill(symbols: list[str], first: dt.date, last: dt.date, trigger: str) -> dg.RunRequest:
    """One run fetching `symbols` over [first, last] and merging them into the stored days.

    More new tickers than one streaming batch holds (a universe switched to point-in-time S&P 500
    membership adds ~700 at once) would have their whole history merged in memory at once. Then the
    run is the regular backfill of every tracked ticker instead, which streams in ticker batches
    (stock_assets/landing/streaming.py); it costs one request per ticker, as the merge would.
    """
    if len(symbols) > tickers_per_batch(len(trading_days(first, last + dt.timedelta(days=1)))):
        return dg.RunRequest(
            run_key=f"{trigger}:{len(symbols)}-new-tickers:{first}:{last}",
            tags={**range_tags(first, last), TRIGGER_TAG: trigger, TICKERS_TAG: tickers_tag(symbols)},
        )
    return ticker_run_request(symbols, first, last, trigger)


@dg.sensor(
    job=daily_prices_job,
    minimum_interval_seconds=300,
    description="When ticker_universe gains tracked tickers (S&P 500 members or any other listing), requests their whole history for those tickers "
                "only; the months and sector aggregations follow declaratively.",
)
def new_ticker_sensor(
    context: dg.SensorEvaluationContext, database: PostgresResource, quotes: QuoteClient
) -> dg.SensorResult:
    with database.begin() as conn:
        # S&P 500 members in the universe, and every other tracked listing (ETFs, OCDO.L, 4063.T).
        tracked = set(conn.execute(text("SELECT symbol FROM market.ticker_universe WHERE tracked "
                                        "UNION SELECT symbol FROM market.listings WHERE tracked")).scalars())
    if context.cursor is None:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"First tick: remembering {len(tracked)} tracked tickers"),
            cursor=json.dumps(sorted(tracked)))
    known = set(json.loads(context.cursor))
    added = sorted(tracked - known)
    cursor = json.dumps(sorted(tracked))
    if not added:
        return dg.SensorResult(skip_reason=dg.SkipReason("No new tracked tickers"), cursor=cursor)
    last = quotes.market_today() - dt.timedelta(days=1)
    context.log.info("New tracked tickers %s: requesting their history %s..%s", added, FIRST_DAY, last)
    return dg.SensorResult(
        run_requests=[history_backfill(added, dt.date.fromisoformat(FIRST_DAY), last, "new_ticker_sensor")],
        cursor=cursor,
    )
