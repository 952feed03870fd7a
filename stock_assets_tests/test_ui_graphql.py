"""End to end through a running `stock-assets dev`: Dagster's GraphQL API, as the UI and scripts use it.

The server (`dagster_ui`, stock_assets_tests/support/ui_server.py) is the real `dg dev` with the daemon,
the project's dagster.yaml (PostgreSQL storage, queued runs) and the replayed quote source. The
session fixture `ui_history` launches runs with `dagster_graphql.DagsterGraphQLClient` (the
universe, one daily partition, the month) and a raw `launchPartitionBackfill` (February's days),
and waits for them; the tests here read back what they did through GraphQL and in PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from stock_assets.database.urls import with_driver
from stock_assets.defs.metadata import COLUMN_SCHEMAS
from stock_assets.defs.partitions import is_trading_day, trading_day_partitions
from stock_assets_tests.support.ui_server import BAD_DAY, MONTH, MONTH_DAYS, MONTH_SESSIONS, UI_SECTORS, UI_TICKERS

pytestmark = pytest.mark.integration

EDGES = {
    ("raw_quotes", "cleaned_prices"),
    ("cleaned_prices", "monthly_prices"),
    ("monthly_prices", "sector_daily_performance"),
    ("ticker_universe", "sector_classification"),
    ("sector_classification", "sector_daily_performance"),
    ("index_membership", "sector_daily_performance"),
    ("sector_daily_performance", "sector_monthly_summary"),
}

ASSET_GRAPH = """
{
  assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    kinds
    opVersion
    description
    isPartitioned
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    metadataEntries { label __typename }
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
}
"""

DEPLOYMENT = """
{
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } }
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { jobs { name } schedules { name } sensors { name } }
    }
  }
}
"""

PARTITION_METADATA = """
query($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionStats { numMaterialized numFailed }
      assetMaterializations(partitions: $partitions) {
        partition
        runId
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on BoolMetadataEntry { boolValue }
          ... on TextMetadataEntry { text }
          ... on JsonMetadataEntry { jsonString }
        }
      }
    }
  }
}
"""


def _values(entries: list[dict]) -> dict:
    out = {}
    for entry in entries:
        value = next((entry[k] for k in ("intValue", "floatValue", "boolValue", "text", "jsonString")
                      if k in entry), None)
        out[entry["label"]] = value
    return out


def _pipeline_engine(dagster_ui):
    return create_engine(with_driver(dagster_ui.pipeline_url, "psycopg"), poolclass=NullPool)


def test_asset_graph_lists_lineage_and_operator_metadata(dagster_ui):
    nodes = {"/".join(n["assetKey"]["path"]): n for n in dagster_ui.graphql(ASSET_GRAPH)["assetNodes"]}
    edges = {("/".join(dep["path"]), name) for name, node in nodes.items() for dep in node["dependencyKeys"]}
    # The chain from source to summary (assets further downstream, e.g. serving caches, may follow).
    assert EDGES <= edges
    assert {parent for parent, child in edges if child in ("cleaned_prices", "monthly_prices",
                                                           "sector_daily_performance", "sector_monthly_summary")} \
        == {"raw_quotes", "cleaned_prices", "monthly_prices", "index_membership", "sector_classification",
            "sector_daily_performance"}
    assert set(COLUMN_SCHEMAS) <= set(nodes)
    for name, node in nodes.items():
        assert node["description"], name
        assert node["groupName"] != "default", name
        assert node["kinds"], name
        assert node["owners"] == [{"team": "market-data"}], name
        assert node["opVersion"], name  # the code version
    for name in COLUMN_SCHEMAS:
        labels = {entry["label"]: entry["__typename"] for entry in nodes[name]["metadataEntries"]}
        assert labels.get("dagster/column_schema") == "TableSchemaMetadataEntry", name
    for name in ("cleaned_prices", "monthly_prices", "sector_daily_performance", "sector_monthly_summary"):
        labels = {e["label"]: e["__typename"] for e in nodes[name]["metadataEntries"]}
        assert labels["dagster/column_lineage"] == "TableColumnLineageMetadataEntry", name
    for name in ("ticker_universe", "monthly_prices", "sector_daily_performance", "sector_monthly_summary"):
        assert "dagster/table_name" in {e["label"] for e in nodes[name]["metadataEntries"]}, name
    checks = {c["name"]: c["blocking"] for c in nodes["cleaned_prices"]["assetChecksOrError"]["checks"]}
    assert checks == {"ohlc_consistent": True, "unique_symbol_date": True, "rejected_share": False,
                      "tickers_complete": False}


def test_dev_lists_jobs_schedules_and_sensors_and_runs_the_daemon(dagster_ui):
    from stock_assets.definitions import defs

    data = dagster_ui.graphql(DEPLOYMENT)
    (repository,) = data["repositoriesOrError"]["nodes"]
    assert {"daily_prices_job", "monthly_warehouse_job", "universe_job"} <= {j["name"] for j in repository["jobs"]}
    assert {s["name"] for s in repository["schedules"]} == {s.name for s in defs.schedules}
    assert {s.name for s in defs.sensors or []} <= {s["name"] for s in repository["sensors"]}
    daemons = {d["daemonType"]: d["healthy"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]}
    for daemon in ("SCHEDULER", "SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR"):
        assert daemons.get(daemon), (daemon, daemons)


def test_backfill_and_month_run_land_in_postgres(dagster_ui, ui_history):
    assert set(ui_history.statuses.values()) == {dg.DagsterRunStatus.SUCCESS}, ui_history.statuses
    backfill = ui_history.backfill
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert backfill["numPartitions"] == len(MONTH_DAYS) == 29
    # The single-run backfill policy: the whole month of days in one run.
    assert [run["status"] for run in backfill["runs"]] == ["SUCCESS"]

    with _pipeline_engine(dagster_ui).connect() as conn:
        in_month = conn.execute(text("SELECT count(*), count(DISTINCT symbol) FROM market.prices_2020_02")).one()
        sectors = conn.execute(text(
            "SELECT count(*) FROM market.sector_monthly_summary WHERE month = :m"), {"m": MONTH}).scalar_one()
        daily = conn.execute(text(
            "SELECT count(DISTINCT trade_date) FROM market.sector_daily_performance "
            "WHERE trade_date >= '2020-02-01' AND trade_date < '2020-03-01'")).scalar_one()
    assert tuple(in_month) == (MONTH_SESSIONS * len(UI_TICKERS), len(UI_TICKERS))
    assert sectors == UI_SECTORS
    assert daily == MONTH_SESSIONS - 1  # February 3 has no return: January is not loaded here

    # Per-partition metadata in the UI: each day its own row count, the run's total beside it.
    node = dagster_ui.graphql(PARTITION_METADATA, {"key": {"path": ["cleaned_prices"]},
                                                   "partitions": ["2020-02-14", "2020-02-15"]})["assetNodeOrError"]
    by_day = {m["partition"]: _values(m["metadataEntries"]) for m in node["assetMaterializations"]}
    assert by_day["2020-02-14"]["dagster/row_count"] == len(UI_TICKERS)
    assert by_day["2020-02-15"]["dagster/row_count"] == 0 and by_day["2020-02-15"]["nyse_session"] is False
    assert by_day["2020-02-14"]["rows_in_run"] == by_day["2020-02-15"]["rows_in_run"] == \
        MONTH_SESSIONS * len(UI_TICKERS)
    month = dagster_ui.graphql(PARTITION_METADATA, {"key": {"path": ["monthly_prices"]},
                                                    "partitions": [MONTH]})["assetNodeOrError"]
    (loaded,) = month["assetMaterializations"]
    assert _values(loaded["metadataEntries"])["partition_table"] == "market.prices_2020_02"
    assert _values(loaded["metadataEntries"])["dagster/row_count"] == MONTH_SESSIONS * len(UI_TICKERS)


CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $check: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: 200) {
    runId status partition evaluation { severity }
  }
}
"""


def test_partition_launched_with_the_graphql_client_rejects_the_bad_bar(dagster_ui, ui_history):
    run_id = ui_history.bad_day_run  # daily_prices_job for 2019-11-18, through DagsterGraphQLClient
    assert ui_history.statuses[run_id] == dg.DagsterRunStatus.SUCCESS

    with _pipeline_engine(dagster_ui).connect() as conn:
        rejected = conn.execute(text(
            "SELECT symbol, reason FROM market.price_rejections WHERE trade_date = :d"), {"d": BAD_DAY}).all()
    assert [tuple(row) for row in rejected] == [("PFE", "zero_volume_bar")]

    node = dagster_ui.graphql(PARTITION_METADATA, {"key": {"path": ["cleaned_prices"]},
                                                   "partitions": [BAD_DAY]})["assetNodeOrError"]
    materialization = next(m for m in node["assetMaterializations"] if m["runId"] == run_id)
    values = _values(materialization["metadataEntries"])
    assert values["dagster/row_count"] == len(UI_TICKERS) - 1
    assert values["rejected_rows"] == 1 and json.loads(values["rejected_by_reason"]) == {"zero_volume_bar": 1}

    def execution(check: str) -> dict:
        executions = dagster_ui.graphql(CHECK_EXECUTIONS, {"key": {"path": ["cleaned_prices"]}, "check": check})
        # The bad day's run has one execution per check, for that day, with its evaluation.
        return next(e for e in executions["assetCheckExecutions"] if e["runId"] == run_id and e["evaluation"])

    assert execution("ohlc_consistent")["status"] == "SUCCEEDED"
    assert execution("unique_symbol_date")["status"] == "SUCCEEDED"
    # PFE has no clean bar that day: the warning check fails, the run still succeeds.
    assert execution("tickers_complete")["status"] == "FAILED"
    assert execution("tickers_complete")["evaluation"]["severity"] == "WARN"


CHECK_PARTITION_STATUSES = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetChecksOrError { ... on AssetChecks { checks {
        name
        partitionDefinition { type }
        partitionStatuses {
          __typename
          ... on AssetCheckTimePartitionStatuses { ranges { startKey endKey status } }
        }
      } } }
    }
  }
}
"""

CHECK_EXECUTIONS_OF_DAY = """
query($key: AssetKeyInput!, $check: String!, $partition: String) {
  assetCheckExecutions(assetKey: $key, checkName: $check, partition: $partition, limit: 20) {
    runId status partition
    evaluation {
      severity description
      metadataEntries { label ... on IntMetadataEntry { intValue } ... on JsonMetadataEntry { jsonString } }
    }
  }
}
"""


def test_checks_show_each_days_status_and_why_a_day_failed(dagster_ui, ui_history):
    """The check's partition bar in the UI (`partitionStatuses`): per day, after the runs of `ui_history`."""
    node = dagster_ui.graphql(CHECK_PARTITION_STATUSES, {"key": {"path": ["cleaned_prices"]}})["assetNodeOrError"]
    by_check = {}
    for check in node["assetChecksOrError"]["checks"]:
        assert check["partitionDefinition"]["type"] == "TIME_WINDOW", check["name"]
        assert check["partitionStatuses"]["__typename"] == "AssetCheckTimePartitionStatuses", check["name"]
        by_check[check["name"]] = {
            key: rng["status"] for rng in check["partitionStatuses"]["ranges"]
            for key in trading_day_partitions.get_partition_keys_in_range(
                dg.PartitionKeyRange(rng["startKey"], rng["endKey"]))}
    assert len([day for day in MONTH_DAYS if is_trading_day(dt.date.fromisoformat(day))]) == MONTH_SESSIONS
    for name, statuses in by_check.items():
        # February's backfill (one run): every day passed, weekends and Presidents' Day (nothing to check) too.
        assert {statuses.get(day) for day in MONTH_DAYS} == {"SUCCEEDED"}, name
    # 2019-11-18: the blocking checks passed; PFE's rejected bar fails tickers_complete (one rejected
    # bar is below rejected_share's minimum count).
    assert {name: statuses[BAD_DAY] for name, statuses in by_check.items()} == {
        "ohlc_consistent": "SUCCEEDED", "unique_symbol_date": "SUCCEEDED",
        "rejected_share": "SUCCEEDED", "tickers_complete": "FAILED"}

    (latest, *_) = dagster_ui.graphql(CHECK_EXECUTIONS_OF_DAY, {
        "key": {"path": ["cleaned_prices"]}, "check": "tickers_complete", "partition": BAD_DAY})["assetCheckExecutions"]
    assert (latest["status"], latest["partition"]) == ("FAILED", BAD_DAY)
    assert latest["evaluation"]["severity"] == "WARN"
    assert "PFE" in latest["evaluation"]["description"]
    values = _values(latest["evaluation"]["metadataEntries"])
    assert values["missing_bars"] == 1 and json.loads(values["missing_sample"]) == [f"PFE {BAD_DAY}"]
