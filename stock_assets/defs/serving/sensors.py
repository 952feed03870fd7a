"""The cache-warming sensor: after new months or sector figures land, warm what readers hit."""

import dagster as dg

WATCHED = [dg.AssetKey("monthly_prices"), dg.AssetKey("sector_daily_performance")]

serving_job = dg.define_asset_job(
    "serving_job", selection=dg.AssetSelection.assets("serving_caches"),
    description="Refresh materialized views and warm caches.",
)


@dg.sensor(
    job=serving_job,
    minimum_interval_seconds=60,
    description="After new monthly partitions or sector aggregations materialize, requests the warm-up: "
                "materialized views refreshed concurrently, the current month prewarmed, hot quotes cached.",
)
def cache_warming_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    last_seen = int(context.cursor) if context.cursor else 0
    newest = last_seen
    updated: list[str] = []
    for key in WATCHED:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, after_storage_id=last_seen), limit=1000, ascending=True
        ).records
        if records:
            newest = max(newest, max(record.storage_id for record in records))
            updated.append(f"{key.to_user_string()} ({len(records)} new)")
    if not updated:
        return dg.SensorResult(skip_reason=dg.SkipReason("No new months or sector figures since the last warm-up"),
                               cursor=str(newest))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"warm:{newest}", tags={"stock_assets/trigger": "cache_warming_sensor"})],
        cursor=str(newest),
    )
