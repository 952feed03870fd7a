"""The checks of `cleaned_prices`, per daily partition, as the Dagster UI shows them.

Real runs against the session's embedded PostgreSQL: the pipeline tables, and a Dagster instance
whose storage is PostgreSQL through the project's own storage classes (dagster.yaml's), in a fresh
database per test. What the UI shows per partition is read back the way the webserver computes it
(`event_log_storage.get_asset_check_state`, behind GraphQL's `partitionStatuses`) and through the
execution records per partition (`get_latest_asset_check_execution_by_key(partition_filter=...)`,
behind `assetCheckExecutions(partition: ...)`). Only Yahoo is replayed; one test breaks the
cleaning step on purpose (the bug a blocking check is there to catch).
"""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import psycopg
import pytest
from dagster._core.event_api import PartitionKeyFilter
from psycopg import sql

import stock_assets.defs.prices.assets as prices
import stock_assets.defs.prices.batches as clean_batches
from stock_assets.database.urls import libpq_url, with_database, with_driver
from stock_assets.defs.operations.sensors import describe_failure
from stock_assets.defs.partitions import range_tags, trading_day_partitions, trading_days
from stock_assets.defs.prices.assets import CHECKS, RECORDED_PASSING_DAYS, cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.health import FAIL, OK, check_daily_partitions
from stock_assets.instance.environment import postgres_storage
from stock_assets.landing.io_manager import LandingIOManager

ASSET = dg.AssetKey("cleaned_prices")
CHECK_KEYS = {spec.name: dg.AssetCheckKey(ASSET, spec.name) for spec in CHECKS}
BLOCKING = {spec.name for spec in CHECKS if spec.blocking}
WARNINGS = set(CHECK_KEYS) - BLOCKING
NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def instance(database_url, tmp_path):
    """A Dagster instance with PostgreSQL storage (the project's classes) in a database of its own."""
    name = f"checks_dagster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(with_database(database_url, "postgres")), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    storage = postgres_storage(with_driver(with_database(database_url, name), "psycopg2"))
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=storage) as instance:
        yield instance


def _resources(database, tmp_path, tickers):
    return {
        "database": database,
        "quotes": QuoteClient(),
        "tickers": TickerSelection(tickers=tickers),
        "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing")),
    }


def _materialize(instance, resources, first: str, last: str, assets=(raw_quotes, cleaned_prices), **kwargs):
    return dg.materialize(list(assets), resources=resources, instance=instance,
                          tags=range_tags(dt.date.fromisoformat(first), dt.date.fromisoformat(last)), **kwargs)


def _days(first: str, last: str) -> list[str]:
    return trading_day_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))


def _sessions(first: str, last: str) -> list[str]:
    return [d.isoformat() for d in trading_days(dt.date.fromisoformat(first),
                                                dt.date.fromisoformat(last) + dt.timedelta(days=1))]


def ui_statuses(instance, check: str) -> dict[str, set[str]]:
    """Each status the UI's partition bar of `check` shows, with its partitions."""
    (state,) = instance.event_log_storage.get_asset_check_state(
        [(CHECK_KEYS[check], trading_day_partitions)]).values()
    return {status.value: set(subset.subset_value.get_partition_keys())
            for status, subset in state.subsets.items() if not subset.is_empty}


def latest(instance, check: str, partition: str):
    """The latest execution of `check` on `partition` (the UI's check history for that day)."""
    return instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [CHECK_KEYS[check]], partition_filter=PartitionKeyFilter(key=partition))[CHECK_KEYS[check]]


def _evaluations(instance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    return [event.dagster_event.event_specific_data for event in instance.all_logs(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]


def test_a_range_run_shows_each_days_result_and_why_a_day_failed(database, tmp_path, instance):
    # Two weeks in one run (single-run backfill), PFE's zero-volume bar of 2019-11-18 in the middle.
    result = _materialize(instance, _resources(database, tmp_path, ["PFE", "MRK"]), "2019-11-11", "2019-11-24")
    assert result.success  # only warnings fail
    days = set(_days("2019-11-11", "2019-11-24"))
    sessions = set(_sessions("2019-11-11", "2019-11-24"))
    assert len(days) == 14 and len(sessions) == 10  # and two weekends

    for check in BLOCKING:
        assert ui_statuses(instance, check) == {"SUCCEEDED": days}, check
    assert ui_statuses(instance, "tickers_complete") == {"SUCCEEDED": days - {"2019-11-18"}, "FAILED": {"2019-11-18"}}
    # One rejected bar is half of this two-ticker day, but below the minimum count: reported by
    # the rejections table and tickers_complete, not a pattern for rejected_share.
    assert ui_statuses(instance, "rejected_share") == {"SUCCEEDED": days}

    # Why the day failed, on the day's own result, pointing at the day's materialization of this run.
    record = latest(instance, "tickers_complete", "2019-11-18")
    assert (record.status.value, record.run_id, record.partition) == ("FAILED", result.run_id, "2019-11-18")
    evaluation = record.evaluation
    assert evaluation.severity == dg.AssetCheckSeverity.WARN and evaluation.blocking is False
    assert evaluation.metadata["missing_bars"].value == 1
    assert evaluation.metadata["missing_sample"].value == ["PFE 2019-11-18"]
    assert "1 of 2 tracked tickers" in evaluation.description and "PFE" in evaluation.description
    (materialization,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=ASSET, asset_partitions=["2019-11-18"]), limit=1).records
    assert evaluation.target_materialization_data.storage_id == materialization.storage_id
    share = latest(instance, "rejected_share", "2019-11-18").evaluation.metadata
    assert (share["rejected_rows"].value, share["raw_rows"].value, share["rejected_share"].value) == (1, 2, 0.5)
    assert share["min_rows"].value == 3 and share["rejected_by_reason"].value == {"zero_volume_bar": 1}
    assert latest(instance, "tickers_complete", "2019-11-19").evaluation.metadata["missing_bars"].value == 0
    assert latest(instance, "ohlc_consistent", "2019-11-18").evaluation.metadata["violations"].value == 0
    # A weekend passes: the market was closed, there was nothing to check.
    weekend = latest(instance, "tickers_complete", "2019-11-16").evaluation
    assert weekend.passed and weekend.description == "2019-11-16: NYSE closed, no bars expected"

    # One evaluation per check and day.
    assert len(_evaluations(instance, result.run_id)) == 4 * len(days)
    summary = result.asset_materializations_for_node("cleaned_prices")[0].metadata["checks_in_run"].value
    assert summary["tickers_complete"] == {"partitions_checked": 14, "failed": 1,
                                           "failed_partitions": ["2019-11-18"], "results_recorded": 14}


def test_a_long_backfill_records_failures_and_its_newest_days_only(database, tmp_path, instance):
    # November and December 2019 in one run: 61 days, more than a run records passes for.
    days = _days("2019-11-01", "2019-12-31")
    assert len(days) == 61 > RECORDED_PASSING_DAYS
    newest = set(days[-RECORDED_PASSING_DAYS:])
    assert "2019-11-18" not in newest
    result = _materialize(instance, _resources(database, tmp_path, ["PFE", "MRK"]), "2019-11-01", "2019-12-31")
    assert result.success

    evaluations = _evaluations(instance, result.run_id)
    assert len(evaluations) == 4 * RECORDED_PASSING_DAYS + 1  # + the tickers_complete warning of 2019-11-18
    assert {e.partition for e in evaluations if not e.passed} == {"2019-11-18"}
    for check in CHECK_KEYS:
        failed = {"2019-11-18"} if check == "tickers_complete" else set()
        # Older days that passed were checked, but their results were not recorded: "skipped".
        assert ui_statuses(instance, check) == {
            "SUCCEEDED": newest, **({"FAILED": failed} if failed else {}),
            "SKIPPED": set(days) - newest - failed}, check
    summary = result.asset_materializations_for_node("cleaned_prices")[0].metadata["checks_in_run"].value
    assert summary["ohlc_consistent"] == {"partitions_checked": 61, "failed": 0, "failed_partitions": [],
                                          "results_recorded": RECORDED_PASSING_DAYS}
    assert summary["tickers_complete"]["results_recorded"] == RECORDED_PASSING_DAYS + 1


@dg.asset(partitions_def=trading_day_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
          deps=[cleaned_prices])
def downstream_of_cleaned_prices():
    """Stands for whatever reads cleaned prices in the same run."""
    return dg.MaterializeResult()


def _corrupt(day: str, symbol: str):
    """A cleaning step with a bug: one bar whose low lies above its open and close."""
    real = clean_batches.clean_quotes

    def clean_quotes(raw, **kwargs):
        result = real(raw, **kwargs)
        clean = result.clean.copy()
        row = (clean["symbol"] == symbol) & (pd.to_datetime(clean["trade_date"]) == pd.Timestamp(day))
        assert row.sum() == 1
        clean.loc[row, "low"] = clean.loc[row, ["open", "close"]].max(axis=1) * 1.05
        return type(result)(clean=clean, rejected=result.rejected)

    return clean_quotes


def test_a_day_failing_a_blocking_check_fails_the_run_naming_it_and_nothing_flows_on(
        database, tmp_path, instance, monkeypatch):
    monkeypatch.setattr(clean_batches, "clean_quotes", _corrupt("2020-03-03", "AAPL"))
    resources = _resources(database, tmp_path, ["AAPL", "MSFT"])
    result = _materialize(instance, resources, "2020-03-02", "2020-03-08",
                          assets=(raw_quotes, cleaned_prices, downstream_of_cleaned_prices), raise_on_error=False)
    assert not result.success

    # The step fails, naming the day, the check and the bar; the failure sensor's line says so too.
    (failure,) = result.get_step_failure_events()
    assert failure.step_key == "cleaned_prices"
    description = failure.step_failure_data.user_failure_data.description
    assert "Blocking check(s) failed on 1 partition(s) of cleaned_prices, 2020-03-03" in description
    assert "ohlc_consistent on 2020-03-03: 1 row(s)" in description and "(AAPL)" in description
    run = instance.get_run_by_id(result.run_id)
    assert "2020-03-03" in describe_failure(run, result.get_step_failure_events())
    # Nothing downstream ran on the bad data, although the run had planned it.
    planned = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    assert dg.AssetKey("downstream_of_cleaned_prices") in {e.dagster_event.asset_key for e in planned}
    assert result.asset_materializations_for_node("downstream_of_cleaned_prices") == []
    assert "downstream_of_cleaned_prices" not in {e.step_key for e in result.get_step_success_events()}

    # Per day in the UI: the bad day failed (blocking, with the offending bar), the others passed.
    days = set(_days("2020-03-02", "2020-03-08"))
    assert ui_statuses(instance, "ohlc_consistent") == {"FAILED": {"2020-03-03"}, "SUCCEEDED": days - {"2020-03-03"}}
    assert ui_statuses(instance, "unique_symbol_date") == {"SUCCEEDED": days}
    bad = latest(instance, "ohlc_consistent", "2020-03-03").evaluation
    assert bad.blocking is True and bad.severity == dg.AssetCheckSeverity.ERROR
    assert bad.metadata["violations"].value == 1
    assert bad.metadata["violation_sample"].value[0].startswith("AAPL o=")

    # `stock-assets health` fails on it and names the day; Friday is still the last good session.
    health = check_daily_partitions(instance, None, dt.datetime(2020, 3, 6, 21, tzinfo=NEW_YORK), "yahoo")
    assert health.status == FAIL
    assert "ohlc_consistent on 2020-03-03" in health.summary
    assert health.details["failing_blocking_partitions"] == {"ohlc_consistent": ["2020-03-03"]}
    assert health.details["last_good_partition"] == "2020-03-06"

    # Fixed upstream, the day re-runs on its own: its result is replaced, health recovers.
    monkeypatch.undo()
    rerun = dg.materialize([raw_quotes, cleaned_prices], resources=resources, instance=instance,
                           partition_key="2020-03-03")
    assert rerun.success
    assert latest(instance, "ohlc_consistent", "2020-03-03").status.value == "SUCCEEDED"
    assert "2020-03-03" in ui_statuses(instance, "ohlc_consistent")["SUCCEEDED"]
    health = check_daily_partitions(instance, None, dt.datetime(2020, 3, 6, 21, tzinfo=NEW_YORK), "yahoo")
    assert health.status == OK and "failing_blocking_partitions" not in health.details
    assert health.details["blocking_checks"] == {"ohlc_consistent": "SUCCEEDED", "unique_symbol_date": "SUCCEEDED"}



@pytest.mark.parametrize("raw, rejected, passes", [
    (58, 1, True),    # one bad bar of the 58-ticker universe: 1.7%, but a single row
    (58, 2, True),
    (58, 3, False),   # three on one day: 5.2%, a pattern
    (503, 5, True),   # the whole S&P 500: 1.0% is within the limit
    (503, 6, False),  # 1.2%
    (2, 1, True),     # a two-ticker test universe: 50%, but one row
])
def test_rejected_share_needs_a_minimum_count_and_a_share(raw, rejected, passes):
    day = "2019-11-18"
    evaluation = prices.evaluate_checks(
        pd.DataFrame(columns=["symbol", "trade_date", "open", "high", "low", "close", "adj_close"]),
        {day: raw}, {day: rejected}, [], [day], {day}, rejected_reasons={day: {"zero_volume_bar": rejected}})
    (outcome,) = [o for o in evaluation.outcomes if o.check == "rejected_share"]
    assert outcome.passed is passes
    assert outcome.metadata["rejected_rows"] == rejected and outcome.metadata["min_rows"] == prices.REJECTED_MIN_ROWS
    if not passes:
        assert outcome.description == (
            f"{day}: {rejected} of {raw} raw rows rejected ({rejected / raw:.1%}; fails above 1% and at least "
            f"3 rows): zero_volume_bar {rejected}")
