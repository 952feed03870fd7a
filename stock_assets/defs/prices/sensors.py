"""The gap sensor: keeps the daily data whole without anyone watching."""

import datetime as dt
import json
from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import Field

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.prices.gaps import (
    contiguous_ranges,
    in_flight_days,
    sessions_in_window,
    sessions_missing_rows,
    unmaterialized_sessions,
)
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.jobs import daily_prices_job
from stock_assets.partitions import FIRST_DAY, MARKET_TIMEZONE, RANGE_END_TAG, RANGE_START_TAG, range_tags


class GapPolicy(dg.ConfigurableResource):
    """How far back the gap sensor looks, and how long it waits before asking again for a range."""

    lookback_days: int = Field(default=30, description="Calendar days before today that the gap sensor inspects.")
    retry_after_minutes: int = Field(default=60, description="Minimum wait before re-requesting the same range.")


def market_today(quotes: QuoteClient, now: dt.datetime) -> dt.date:
    """Today in New York; for the replay, the day after its archive's last recorded session."""
    if quotes.source == "replay":
        return quotes.archive().last_date + dt.timedelta(days=1)
    return now.astimezone(ZoneInfo(MARKET_TIMEZONE)).date()


@dg.sensor(
    job=daily_prices_job,
    minimum_interval_seconds=300,
    description="Requests one run per contiguous range of missing or failed trading days in the look-back "
                "window (weekends and NYSE holidays are not gaps), skipping ranges already queued or running.",
)
def gap_sensor(
    context: dg.SensorEvaluationContext, database: PostgresResource, quotes: QuoteClient, gap_policy: GapPolicy
) -> dg.SensorResult:
    now = dt.datetime.now(dt.timezone.utc)
    sessions = sessions_in_window(market_today(quotes, now), gap_policy.lookback_days)
    gaps = unmaterialized_sessions(context.instance, sessions) | sessions_missing_rows(
        context.instance, database, sessions)
    gaps -= in_flight_days(context.instance, daily_prices_job.name)

    requested: dict[str, str] = json.loads(context.cursor or "{}").get("requested", {})
    cutoff = now - dt.timedelta(minutes=gap_policy.retry_after_minutes)
    requested = {k: v for k, v in requested.items() if dt.datetime.fromisoformat(v) > cutoff}
    run_requests = []
    for first, last in contiguous_ranges(gaps):
        label = f"{first}..{last}"
        if label in requested:
            continue
        requested[label] = now.isoformat()
        run_requests.append(dg.RunRequest(
            run_key=f"gap:{label}:{now:%Y%m%dT%H%M%S}",
            tags={**range_tags(first, last), "stock_assets/trigger": "gap_sensor"},
        ))
    cursor = json.dumps({"requested": requested}, sort_keys=True)
    if not run_requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"No gaps in {len(sessions)} sessions up to {sessions[-1] if sessions else '-'}"
            + (f" ({len(gaps)} gap days already requested)" if gaps else "")), cursor=cursor)
    context.log.info("Requesting %d gap range(s): %s", len(run_requests),
                     ", ".join(f"{r.tags[RANGE_START_TAG]}..{r.tags[RANGE_END_TAG]}" for r in run_requests))
    return dg.SensorResult(run_requests=run_requests, cursor=cursor)


@dg.sensor(
    job=daily_prices_job,
    minimum_interval_seconds=300,
    description="When a split or dividend arrives for a ticker whose earlier history is stored, refetches that "
                "ticker's earlier history so stored adjusted prices never go stale.",
)
def restatement_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    from stock_assets.defs.universe.sensors import history_backfill

    after = int(context.cursor) if context.cursor else 0
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_quotes"), after_storage_id=after), limit=5000, ascending=True
    ).records
    stale: dict[str, dt.date] = {}  # symbol -> first day of the run that saw the action
    stored: set[str] | None = None
    for record in records:
        after = max(after, record.storage_id)
        materialization = record.asset_materialization
        actions = materialization.metadata.get("corporate_actions") if materialization else None
        if not actions or not actions.value:
            continue
        run_start = _run_start(context.instance, record.run_id, record.partition_key)
        if run_start is None or run_start <= dt.date.fromisoformat(FIRST_DAY):
            continue  # the whole history came in the same request: already adjusted
        if stored is None:
            stored = context.instance.get_materialized_partitions(dg.AssetKey("raw_quotes"))
        if not any(key < run_start.isoformat() for key in stored):
            continue  # no earlier history is stored: nothing to restate
        for action in actions.value:
            stale[action["symbol"]] = min(stale.get(action["symbol"], run_start), run_start)
    cursor = str(after)
    if not stale:
        return dg.SensorResult(skip_reason=dg.SkipReason("No new splits or dividends over stored history"),
                               cursor=cursor)
    requests = [history_backfill([symbol], dt.date.fromisoformat(FIRST_DAY), start - dt.timedelta(days=1),
                                 "restatement_sensor") for symbol, start in sorted(stale.items())]
    context.log.info("Restating history before new corporate actions: %s",
                     ", ".join(f"{s} before {d}" for s, d in sorted(stale.items())))
    return dg.SensorResult(run_requests=requests, cursor=cursor)


def _run_start(instance: dg.DagsterInstance, run_id: str, partition_key: str | None) -> dt.date | None:
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run else {}
    first = tags.get(RANGE_START_TAG) or tags.get("dagster/partition") or partition_key
    return dt.date.fromisoformat(first) if first else None
