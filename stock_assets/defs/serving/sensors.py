"""The cache-warming sensor: after new months or sector figures land, warm what readers hit.

It works only when something changed, and at most once per `MIN_SPACING`: updates that land while
a warm-up is queued or running, or within the spacing of the last one, wait in the cursor and are
warmed together by the next one (a backfill of 60 months is one warm-up, not 60; the Runs page is
not flooded with a warm-up a minute).
"""

import datetime as dt
import json

import dagster as dg

WATCHED = [dg.AssetKey("monthly_prices"), dg.AssetKey("sector_daily_performance")]
MIN_SPACING = dt.timedelta(minutes=15)
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]

serving_job = dg.define_asset_job(
    "serving_job", selection=dg.AssetSelection.assets("serving_caches"),
    description="Refresh materialized views and warm caches.",
)


def _read_cursor(raw: str | None) -> tuple[int, dt.datetime | None]:
    if not raw:
        return 0, None
    if raw.isdigit():  # the cursor before warm-ups were spaced: a storage id only
        return int(raw), None
    state = json.loads(raw)
    requested = state.get("last_request")
    return int(state.get("storage_id", 0)), dt.datetime.fromisoformat(requested) if requested else None


def _write_cursor(storage_id: int, last_request: dt.datetime | None) -> str:
    return json.dumps({"storage_id": storage_id,
                       "last_request": last_request.isoformat() if last_request else None}, sort_keys=True)


@dg.sensor(
    job=serving_job,
    minimum_interval_seconds=60,
    description="After new monthly partitions or sector aggregations materialize, requests the warm-up: "
                "materialized views refreshed concurrently, the current month prewarmed, hot quotes cached. "
                "Only when something changed, never while a warm-up is in flight, at most once per 15 minutes.",
)
def cache_warming_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    return evaluate_cache_warming(context, dt.datetime.now(dt.timezone.utc))


def evaluate_cache_warming(context: dg.SensorEvaluationContext, now: dt.datetime) -> dg.SensorResult:
    last_seen, last_request = _read_cursor(context.cursor)
    newest = last_seen
    updated: list[str] = []
    for key in WATCHED:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=last_seen), limit=1000, ascending=True
        ).records
        if records:
            newest = max(newest, max(record.storage_id for record in records))
            updated.append(f"{key.to_user_string()} ({len(records)}{'+' if len(records) == 1000 else ''} new)")
    if not updated:
        return dg.SensorResult(skip_reason=dg.SkipReason("No new months or sector figures since the last warm-up"),
                               cursor=_write_cursor(newest, last_request))
    pending = ", ".join(updated)
    in_flight = context.instance.get_runs_count(dg.RunsFilter(job_name=serving_job.name, statuses=IN_FLIGHT))
    if in_flight:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"A warm-up is queued or running; pending for the next one: {pending}"),
            cursor=_write_cursor(last_seen, last_request))
    if last_request is not None and now - last_request < MIN_SPACING:
        due = last_request + MIN_SPACING
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"Last warm-up requested at {last_request:%H:%M:%S} UTC; the next one after {due:%H:%M:%S} UTC "
            f"covers: {pending}"), cursor=_write_cursor(last_seen, last_request))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"warm:{newest}", tags={"stock_assets/trigger": "cache_warming_sensor"})],
        cursor=_write_cursor(newest, now),
    )
