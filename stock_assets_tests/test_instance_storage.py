"""The instance's event log storage (dagster.yaml) against a real Dagster instance in PostgreSQL.

A range run's planned partitions are written in one statement, and nothing Dagster reads from
them changes: each partition is planned, then materialized or failed, one event each.
"""


import os

import dagster as dg
import pytest
from psycopg import sql

from stock_assets import settings
from stock_assets.database.urls import libpq_url, with_driver
from stock_assets.defs.partitions import range_tags
from stock_assets.instance.environment import postgres_storage
from stock_assets.instance.storage import BatchingPostgresEventLogStorage
from stock_assets.tooling.bench.scratch import scratch_database

days = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-03-01")


class DailyNumbersConfig(dg.Config):
    fail: bool = False


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run())
def daily_numbers(context: dg.AssetExecutionContext, config: DailyNumbersConfig) -> dg.MaterializeResult:
    """Succeeds, or fails when the run config says so."""
    if config.fail:
        raise RuntimeError("told to fail")
    return dg.MaterializeResult(metadata={"partitions_in_run": len(context.partition_keys)})


@pytest.fixture
def instance(embedded_server, monkeypatch, tmp_path):
    monkeypatch.setenv(settings.EVENT_BATCH_SIZE_ENV, str(settings.EVENT_BATCH_SIZE))
    with scratch_database(embedded_server.url(), "stock_assets_test_dagster") as url:
        storage = postgres_storage(with_driver(url, "psycopg2"))
        with dg.instance_for_test(temp_dir=str(tmp_path), overrides=storage) as instance:
            yield instance, url


def _run(instance, first: str, last: str, fail: bool = False) -> dg.ExecuteInProcessResult:
    return dg.materialize([daily_numbers], instance=instance, tags=range_tags(first, last), raise_on_error=False,
                          run_config={"ops": {"daily_numbers": {"config": {"fail": fail}}}})


def _events(url: str, run_id: str, event_type: str) -> list[str]:
    import psycopg

    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            sql.SQL("SELECT partition FROM event_logs WHERE run_id = %s AND dagster_event_type = %s ORDER BY id"),
            [run_id, event_type],
        ).fetchall()
    return [row[0] for row in rows]


def test_the_instance_uses_the_batching_event_log(instance):
    dagster_instance, _ = instance
    assert isinstance(dagster_instance.event_log_storage, BatchingPostgresEventLogStorage)
    assert os.environ[settings.EVENT_BATCH_SIZE_ENV] == "1000"


def test_a_range_run_plans_and_materializes_every_partition_once(instance):
    dagster_instance, url = instance
    result = _run(dagster_instance, "2024-01-01", "2024-01-31")
    assert result.success
    expected = [f"2024-01-{day:02d}" for day in range(1, 32)]
    assert _events(url, result.run_id, "ASSET_MATERIALIZATION_PLANNED") == expected
    assert sorted(_events(url, result.run_id, "ASSET_MATERIALIZATION")) == expected
    key = daily_numbers.key
    assert dagster_instance.get_materialized_partitions(key) == set(expected)
    record = dagster_instance.get_asset_records([key])[0]
    assert record.asset_entry.last_run_id == result.run_id
    status = dagster_instance.get_status_by_partition(key, expected, days)
    assert set(status.values()) == {dg.AssetPartitionStatus.MATERIALIZED}


def test_a_failed_range_run_marks_each_of_its_partitions_failed(instance):
    dagster_instance, url = instance
    assert _run(dagster_instance, "2024-02-01", "2024-02-10").success
    result = _run(dagster_instance, "2024-02-05", "2024-02-14", fail=True)
    assert not result.success
    assert len(_events(url, result.run_id, "ASSET_MATERIALIZATION_PLANNED")) == 10
    keys = [f"2024-02-{day:02d}" for day in range(1, 16)]
    status = dagster_instance.get_status_by_partition(daily_numbers.key, keys, days)
    assert {key for key, value in status.items() if value == dg.AssetPartitionStatus.FAILED} == set(keys[4:14])
    assert {key for key, value in status.items() if value == dg.AssetPartitionStatus.MATERIALIZED} == set(keys[:4])
    assert status.get("2024-02-15") is None


def _check_spec() -> dg.AssetCheckSpec:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                                category=dg.PreviewWarning)
        return dg.AssetCheckSpec("positive", asset="checked_numbers", partitions_def=days)


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(), check_specs=[_check_spec()])
def checked_numbers(context: dg.AssetExecutionContext):
    """Checked day by day: the first three days pass, the fourth fails, the others are not evaluated."""
    yield dg.MaterializeResult()
    yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(
        dg.AssetCheckKey(context.asset_key, "positive")))
    for number, day in enumerate(context.partition_keys[:4]):
        yield dg.AssetCheckEvaluation(asset_key=context.asset_key, check_name="positive", passed=number < 3,
                                      partition=day)


def test_a_range_runs_planned_checks_are_one_row_per_partition_then_each_evaluation(instance):
    import psycopg
    from dagster._core.event_api import PartitionKeyFilter
    from dagster._serdes import deserialize_value

    dagster_instance, url = instance
    result = dg.materialize([checked_numbers], instance=dagster_instance, tags=range_tags("2024-01-01", "2024-01-31"),
                            raise_on_error=False)
    assert result.success
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT partition, execution_status, evaluation_event FROM asset_check_executions"
            " WHERE run_id = %s AND check_name = 'positive' ORDER BY partition", [result.run_id]).fetchall()
    assert [row[0] for row in rows] == [f"2024-01-{day:02d}" for day in range(1, 32)]
    assert [row[1] for row in rows] == ["SUCCEEDED"] * 3 + ["FAILED"] + ["PLANNED"] * 27
    planned = deserialize_value(rows[-1][2], dg.EventLogEntry)
    assert planned.dagster_event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
    assert planned.dagster_event.event_specific_data.partitions_subset.get_partition_keys()[-1] == "2024-01-31"
    # What the UI reads: the latest execution of a planned-only day is this run's, still planned.
    check_key = dg.AssetCheckKey(checked_numbers.key, "positive")
    latest = dagster_instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [check_key], partition_filter=PartitionKeyFilter(key="2024-01-20"))
    assert latest[check_key].run_id == result.run_id
    assert latest[check_key].status.value == "PLANNED"
