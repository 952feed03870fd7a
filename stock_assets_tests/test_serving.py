"""Cache warming: the serving asset against real PostgreSQL, and the sensor against a real instance."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
from sqlalchemy import text

from stock_assets.defs.operations.sensors import describe_failure
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.sectors.assets import sector_daily_performance, sector_monthly_summary
from stock_assets.defs.serving.assets import ServingPolicy, serving_caches
from stock_assets.defs.serving.sensors import cache_warming_sensor, evaluate_cache_warming, serving_job
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.history_assets import index_membership, sector_classification
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.landing.io_manager import LandingIOManager

ASSETS = [ticker_universe, index_membership, sector_classification, raw_quotes, cleaned_prices, monthly_prices,
          sector_daily_performance, sector_monthly_summary, serving_caches]
RANGE = {"dagster/asset_partition_range_start": "2020-10-01", "dagster/asset_partition_range_end": "2020-10-31"}


def _resources(database, tmp_path, **overrides):
    return {"database": database, "quotes": QuoteClient(), "tickers": TickerSelection(tickers=["AAPL", "XOM", "JNJ"]),
            "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing")),
            "serving_policy": ServingPolicy(watch_count=2), **overrides}


def _load_october(instance, resources):
    assert dg.materialize(ASSETS, selection=["ticker_universe", "index_membership", "sector_classification"],
                         instance=instance, resources=resources).success
    assert dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], instance=instance,
                          resources=resources, tags=RANGE).success
    assert dg.materialize(ASSETS, selection=["monthly_prices", "sector_daily_performance"], instance=instance,
                          resources=resources, partition_key="2020-10-01").success


def _evaluate(instance, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
        return cache_warming_sensor(context)


def test_sensor_requests_a_warmup_after_new_months_once(database, tmp_path):
    with dg.instance_for_test() as instance:
        first = _evaluate(instance)
        assert first.run_requests == [] and first.skip_reason
        _load_october(instance, _resources(database, tmp_path))
        second = _evaluate(instance, first.cursor)
        assert len(second.run_requests) == 1
        assert json.loads(second.cursor)["storage_id"] > json.loads(first.cursor)["storage_id"]
        assert _evaluate(instance, second.cursor).run_requests == []  # nothing new since


def test_warmups_are_spaced_and_never_stacked(database, tmp_path):
    """Updates every minute (a backfill, a follow-up reload) give one warm-up, not one a minute."""
    resources = _resources(database, tmp_path)
    start = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.timezone.utc)
    with dg.instance_for_test() as instance:
        _load_october(instance, resources)
        with dg.build_sensor_context(instance=instance) as context:
            first = evaluate_cache_warming(context, start)
        assert len(first.run_requests) == 1
        cursor = first.cursor
        requests = 0
        for minute in (1, 7, 14):  # new sector figures within the spacing
            assert dg.materialize(ASSETS, selection=["sector_daily_performance"], instance=instance,
                                  resources=resources, partition_key="2020-10-01").success
            with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
                result = evaluate_cache_warming(context, start + dt.timedelta(minutes=minute))
            requests += len(result.run_requests)
            cursor = result.cursor
        assert requests == 0 and "the next one after 12:15:00 UTC covers" in result.skip_reason.skip_message
        with dg.build_sensor_context(instance=instance, cursor=cursor) as context:
            due = evaluate_cache_warming(context, start + dt.timedelta(minutes=15))
        assert len(due.run_requests) == 1  # the pending updates, warmed together
        # A warm-up still in flight holds the next one back whatever the time.
        instance.create_run_for_job(_queued_serving_job(), status=dg.DagsterRunStatus.STARTED)
        assert dg.materialize(ASSETS, selection=["sector_daily_performance"], instance=instance,
                              resources=resources, partition_key="2020-10-01").success
        with dg.build_sensor_context(instance=instance, cursor=due.cursor) as context:
            held = evaluate_cache_warming(context, start + dt.timedelta(hours=2))
        assert held.run_requests == [] and "queued or running" in held.skip_reason.skip_message


@dg.op
def _warm() -> None:
    pass


def _queued_serving_job() -> dg.JobDefinition:
    """A stand-in with the warm-up job's name: the sensor looks runs up by job name."""
    @dg.job(name=serving_job.name)
    def stand_in() -> None:
        _warm()

    return stand_in


def test_warmup_refreshes_views_prewarms_and_caches_watched_quotes(database, tmp_path):
    resources = _resources(database, tmp_path)
    with dg.instance_for_test() as instance:
        _load_october(instance, resources)
        result = dg.materialize(ASSETS, selection=["serving_caches"], instance=instance, resources=resources)
    assert result.success
    metadata = result.asset_materializations_for_node("serving_caches")[0].metadata
    warmed = metadata["warmed"].value
    assert warmed["materialized_views"] == ["latest_quotes_mv", "sector_snapshot_mv"]
    assert any(name.startswith("prices_2020_10") for name in warmed["prewarm"])
    assert len(warmed["quote_cache"]["symbols"]) == 2 and warmed["quote_cache"]["rows"] > 0
    assert metadata["total_s"].value >= metadata["refresh_views_s"].value >= 0
    with database.begin() as conn:
        latest = conn.execute(text("SELECT symbol, trade_date FROM market.latest_quotes_mv ORDER BY symbol")).all()
        sectors = conn.execute(text("SELECT count(*) FROM market.sector_snapshot_mv")).scalar()
    assert [(s, str(d)) for s, d in latest] == [("AAPL", "2020-10-27"), ("JNJ", "2020-10-27"), ("XOM", "2020-10-27")]
    assert sectors == 3
    # A second warm-up refreshes CONCURRENTLY (the views are populated now) and succeeds too.
    with dg.instance_for_test() as instance:
        assert dg.materialize(ASSETS, selection=["serving_caches"], instance=instance, resources=resources).success


def test_failure_description_names_partitions_and_cause(database, tmp_path):
    from stock_assets.database.resource import PostgresResource

    broken = {**_resources(database, tmp_path),
              "database": PostgresResource(url="postgresql://nobody@/none?host=/nonexistent")}
    with dg.instance_for_test() as instance:
        result = dg.materialize(ASSETS, selection=["raw_quotes", "cleaned_prices"], instance=instance,
                                resources=broken, tags=RANGE, raise_on_error=False)
        assert not result.success
        message = describe_failure(result.dagster_run, result.get_step_failure_events())
    assert "partitions 2020-10-01..2020-10-31" in message
    assert "step cleaned_prices: OperationalError" in message
