"""End to end with the daemon: the gap sensor makes the data whole again.

Fault injected: two trading days' rows deleted from `market.prices` behind Dagster's back, one
ticker's row of a third day deleted the same way, and a failed run fetching one (unknown) ticker
for a fourth day. Asserts: with the gap sensor turned on, the daemon's ticks request the two whole
days as one range, the third day for that ticker only, nothing for the fourth (its data is intact),
the runs succeed, the month reloads (declarative automation), and every trading day of the month
has its rows again.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from dagster import DagsterRunStatus

from stock_assets.database.urls import libpq_url
from stock_assets_tests.support.ui_server import RUN_TIMEOUT_S, UI_TICKERS

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

RANGE = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")
OCTOBER_SESSIONS = 19  # the replay's October 2020 ends on the 27th
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on Sensor { sensorState { status } }
    ... on PythonError { message } }
}"""
RUNS_BY_TAG = """
query($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) { ... on Runs { results { runId status tags { key value } } } }
}"""

ACTIVE_RUNS = """
query {
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) { ... on Runs { results { runId } } }
}"""


def _launch(ui, job: str, tags: dict[str, str], run_config: dict | None = None) -> str:
    return ui.client.submit_job_execution(job, tags=tags, run_config=run_config or {})


def _rows_per_day(url: str) -> dict[str, int]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {str(day): count for day, count in conn.execute(
            "SELECT trade_date, count(*) FROM market.prices WHERE trade_date >= '2020-10-01'"
            " AND trade_date < '2020-11-01' GROUP BY trade_date")}


def _wait(condition, timeout: float, what: str, ui) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{ui.log_tail()}")
        time.sleep(3)


def test_gap_sensor_ticks_make_the_data_whole_again(dagster_ui):
    ui = dagster_ui
    october = dict(zip(RANGE, ("2020-10-01", "2020-10-31")))
    assert ui.wait_for_run(_launch(ui, "daily_prices_job", october)) == DagsterRunStatus.SUCCESS
    assert ui.wait_for_run(_launch(ui, "monthly_warehouse_job", {"dagster/partition": "2020-10-01"})) == \
        DagsterRunStatus.SUCCESS
    assert len(_rows_per_day(ui.pipeline_url)) == OCTOBER_SESSIONS
    # Automation's own runs (it follows the new days, and may have queued October's reload before
    # the run above) finish first: a reload after the faults would hide them from the sensor.
    _wait(lambda: not ui.graphql(ACTIVE_RUNS)["runsOrError"]["results"], RUN_TIMEOUT_S,
          "automation's runs to finish", ui)

    # The faults: two days' rows deleted behind Dagster's back, and a failed fetch of a third day.
    with psycopg.connect(libpq_url(ui.pipeline_url), autocommit=True) as conn:
        conn.execute("DELETE FROM market.prices WHERE trade_date IN ('2020-10-20', '2020-10-21')")
        conn.execute("DELETE FROM market.prices WHERE trade_date = '2020-10-14' AND symbol = 'XOM'")
    failed = _launch(ui, "daily_prices_job", {"dagster/partition": "2020-10-07"},
                     {"ops": {"raw_quotes": {"config": {"only_tickers": ["ZZZZ"]}}}})
    assert ui.wait_for_run(failed) == DagsterRunStatus.FAILURE
    assert len(_rows_per_day(ui.pipeline_url)) == OCTOBER_SESSIONS - 2
    assert _rows_per_day(ui.pipeline_url)["2020-10-14"] == len(UI_TICKERS) - 1

    started = ui.graphql(START_SENSOR, {"selector": {
        "repositoryLocationName": "stock_assets", "repositoryName": "__repository__", "sensorName": "gap_sensor"}})
    assert started["startSensor"]["__typename"] == "Sensor", started

    def gap_runs() -> list[dict]:
        runs = ui.graphql(RUNS_BY_TAG, {"key": "stock_assets/trigger", "value": "gap_sensor"})
        return runs["runsOrError"]["results"]

    _wait(lambda: len(gap_runs()) >= 3 and all(r["status"] in ("SUCCESS", "FAILURE") for r in gap_runs()),
          RUN_TIMEOUT_S, "the gap sensor's runs", ui)
    ranges = sorted(tuple({t["key"]: t["value"] for t in run["tags"]}.get(key, "-")
                          for key in (*RANGE, "stock_assets/tickers")) for run in gap_runs())
    # The 30-day look-back from the replay's 2020-10-28 also reaches the never-loaded end of September.
    # 2020-10-07 is not refetched: only the run for ZZZZ failed there, the day's data is whole.
    assert ranges == [("2020-09-28", "2020-09-30", "-"), ("2020-10-14", "2020-10-14", "XOM"),
                      ("2020-10-20", "2020-10-21", "-")]
    assert {run["status"] for run in gap_runs()} == {"SUCCESS"}

    # The month follows its re-materialized days declaratively, and the data is whole again.
    _wait(lambda: len(_rows_per_day(ui.pipeline_url)) == OCTOBER_SESSIONS, RUN_TIMEOUT_S,
          "the month to reload", ui)
    assert set(_rows_per_day(ui.pipeline_url).values()) == {len(UI_TICKERS)}
