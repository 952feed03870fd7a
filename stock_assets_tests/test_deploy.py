"""Local and production Dagster instances: queueing, pools, retries, retention, and the AWS pieces.

The production instance (deploy/dagster.prod.yaml) is loaded against emulated AWS (moto's real
server on loopback) and the session's real PostgreSQL; the same definitions load under the
production environment as under the local one, and materialize raw quotes into S3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import boto3
import dagster as dg
import pytest
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.instance.config import PoolGranularity
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import TickStatus
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3 import S3ComputeLogManager

from stock_assets import settings
from stock_assets.database.urls import with_database, with_driver
from stock_assets.instance.environment import apply_pool_limits, main, prepare_environment
from stock_assets_tests.support.aws_emulator import emulated_aws
from stock_assets_tests.test_definitions import asset_graph_snapshot

DEPLOY_DIR = settings.PROJECT_DIR / "deploy"
LOGS_BUCKET = "stock-assets-compute-logs"
LANDING_BUCKET = "stock-assets-landing"
RUN_TASK_FAMILY = "stock-assets-run"


@pytest.fixture(scope="module")
def dagster_pg_url(database_url) -> str:
    """Dagster's storage database on the session's embedded server, spelled for dagster-postgres."""
    return with_driver(with_database(database_url, "dagster"), "psycopg2")


@pytest.fixture
def local_instance(dagster_pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv(settings.DAGSTER_PG_URL_ENV, dagster_pg_url)
    monkeypatch.setenv("DAGSTER_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_DIR", str(tmp_path / "logs"))
    with dg.DagsterInstance.from_config(str(settings.PROJECT_DIR)) as instance:
        yield instance


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """Emulated AWS holding what the production instance expects: a log bucket, a landing bucket
    and the run-worker task definition."""
    with emulated_aws(str(tmp_path_factory.mktemp("aws"))) as endpoint:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=LOGS_BUCKET)
        s3.create_bucket(Bucket=LANDING_BUCKET)
        boto3.client("ecs").register_task_definition(
            family=RUN_TASK_FAMILY,
            containerDefinitions=[{"name": "run", "image": "stock-assets:latest", "memory": 2048}],
            requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="1024", memory="2048",
        )
        yield endpoint


@pytest.fixture
def production_env(aws, dagster_pg_url, database_url, tmp_path) -> dict[str, str]:
    """What a deployment sets (deploy/README.md), pointed at the emulator and the test database."""
    return {
        settings.DATABASE_URL_ENV: database_url,
        settings.DAGSTER_PG_URL_ENV: dagster_pg_url,
        settings.LANDING_URL_ENV: f"s3://{LANDING_BUCKET}/{tmp_path.name}",
        "DAGSTER_ECS_RUN_TASK_DEFINITION": RUN_TASK_FAMILY,
        "DAGSTER_COMPUTE_LOGS_BUCKET": LOGS_BUCKET,
        "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "compute-logs"),
    }


def test_local_instance_queues_runs_and_limits_pools_retries_and_retention(local_instance):
    instance = local_instance
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    concurrency = instance.get_concurrency_config()
    assert concurrency.run_queue_config.max_concurrent_runs == 4
    assert [dict(limit) for limit in concurrency.run_queue_config.tag_concurrency_limits] == [
        {"key": "dagster/backfill", "limit": 2}
    ]
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert instance.run_monitoring_enabled
    assert instance.event_log_storage.supports_global_concurrency_limits
    schedule = instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
    sensor = instance.get_tick_retention_settings(InstigatorType.SENSOR)
    assert set(schedule.values()) == {90}
    assert sensor[TickStatus.SKIPPED] == 7 and sensor[TickStatus.FAILURE] == 30


def test_pool_limits_are_applied_idempotently(local_instance, monkeypatch):
    storage = local_instance.event_log_storage
    for name in ("yahoo", "postgres"):
        storage.delete_concurrency_limit(name)
    storage.initialize_concurrency_limit_to_default("yahoo")  # as Dagster does for an unsized pool
    assert {p.name: (p.limit, p.from_default) for p in storage.get_pool_limits()}["yahoo"] == (1, True)

    monkeypatch.delenv(settings.POOL_LIMITS_ENV, raising=False)
    assert apply_pool_limits(local_instance) == {"yahoo": 1, "postgres": 4}
    assert apply_pool_limits(local_instance) == {}  # nothing to change the second time
    pools = {p.name: (p.limit, p.from_default) for p in storage.get_pool_limits()}
    assert pools["yahoo"] == (1, False) and pools["postgres"] == (4, False)

    monkeypatch.setenv(settings.POOL_LIMITS_ENV, "postgres=12, yahoo=1")
    assert apply_pool_limits(local_instance) == {"postgres": 12}
    assert storage.get_concurrency_info("postgres").slot_count == 12

    monkeypatch.setenv(settings.POOL_LIMITS_ENV, "postgres=lots")
    with pytest.raises(ValueError, match="STOCK_ASSETS_POOL_LIMITS: expected `name=limit`.*'postgres=lots'"):
        apply_pool_limits(local_instance)


def test_stock_assets_start_up_sets_the_pools_of_its_instance(database_url, dagster_pg_url, tmp_path,
                                                              monkeypatch, capsys):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(settings.PROJECT_DIR / "dagster.yaml", home / "dagster.yaml")
    for name, value in {
        settings.DATABASE_URL_ENV: database_url, settings.DAGSTER_PG_URL_ENV: dagster_pg_url,
        "DAGSTER_HOME": str(home), "DAGSTER_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "DAGSTER_COMPUTE_LOGS_DIR": str(tmp_path / "logs"), settings.POOL_LIMITS_ENV: "postgres=6",
    }.items():
        monkeypatch.setenv(name, value)  # restored after the test, whatever prepare_environment exports
    prepare_environment()
    with dg.DagsterInstance.get() as instance:
        assert instance.event_log_storage.get_concurrency_info("postgres").slot_count == 6
        assert instance.event_log_storage.get_concurrency_info("yahoo").slot_count == 1

    monkeypatch.setenv(settings.POOL_LIMITS_ENV, "postgres=7")
    assert main() == 0  # `python -m stock_assets.instance.environment`, the production deploy step
    assert capsys.readouterr().out.splitlines() == ["pool postgres: limit 7 (set)", "pool yahoo: limit 1 (unchanged)"]


def test_production_instance_loads_against_emulated_aws(production_env, monkeypatch, tmp_path):
    for name, value in production_env.items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(DEPLOY_DIR), config_filename="dagster.prod.yaml") as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, EcsRunLauncher)
        registered = boto3.client("ecs").describe_task_definition(taskDefinition=RUN_TASK_FAMILY)
        assert launcher.task_definition == registered["taskDefinition"]["taskDefinitionArn"]
        assert launcher.container_name == "run" and launcher.secrets_tags == ["dagster"]
        assert settings.LANDING_URL_ENV in launcher.env_vars
        assert launcher.supports_check_run_worker_health

        logs = instance.compute_log_manager
        assert isinstance(logs, S3ComputeLogManager)
        with logs.capture_logs(["some-run", "compute_logs", "raw_quotes"]):
            print("fetched 58 tickers")
        key = "dagster/compute-logs/storage/some-run/compute_logs/raw_quotes.out"
        body = boto3.client("s3").get_object(Bucket=LOGS_BUCKET, Key=key)["Body"].read()
        assert b"fetched 58 tickers" in body

        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 20
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
        assert instance.run_retries_max_retries == 2 and not instance.run_retries_retry_on_asset_or_op_failure
        assert instance.run_monitoring_enabled and instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.get_tick_retention_settings(InstigatorType.SCHEDULE)[TickStatus.SUCCESS] == 90


def test_instance_files_hold_no_secret_and_take_urls_from_the_environment():
    for path in (DEPLOY_DIR / "dagster.prod.yaml", settings.PROJECT_DIR / "dagster.yaml"):
        config = yaml.safe_load(path.read_text())
        for storage in ("run_storage", "event_log_storage", "schedule_storage"):
            assert config[storage]["config"] == {"postgres_url": {"env": "DAGSTER_PG_URL"}}, (path, storage)
        assert config["event_log_storage"]["class"] == "BatchingPostgresEventLogStorage", path
        strings = list(_strings(config))
        assert not [value for value in strings if "://" in value or "password" in value.lower()], path
        assert not [value for value in strings if value.lower().startswith(("aws_", "akia"))], path


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


_LOAD_AND_RUN = """
import json
import dagster as dg
from stock_assets.definitions import defs
from stock_assets_tests.test_definitions import asset_graph_snapshot

instance = dg.DagsterInstance.get()
result = defs.resolve_job_def("daily_prices_job").execute_in_process(
    instance=instance, partition_key="2020-03-02", asset_selection=[dg.AssetKey("raw_quotes")],
)
landing = [e.event_specific_data.materialization.metadata["landing_root"].value
           for e in result.get_asset_materialization_events()]
print("RESULT " + json.dumps({
    "graph": asset_graph_snapshot(defs),
    "resources": sorted(defs.resources),
    "landing_s3": type(defs.resources["landing_io_manager"].s3).__name__,
    "run_launcher": type(instance.run_launcher).__name__,
    "compute_logs": type(instance.compute_log_manager).__name__,
    "success": result.success,
    "run_id": result.run_id,
    "landing": landing,
}))
"""


def test_same_definitions_load_under_the_production_environment(production_env, tmp_path):
    from stock_assets.definitions import defs as local_defs

    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(DEPLOY_DIR / "dagster.prod.yaml", home / "dagster.yaml")
    env = {**os.environ, **production_env, "DAGSTER_HOME": str(home), settings.TICKERS_ENV: "AAPL,MSFT"}
    out = subprocess.run([sys.executable, "-c", _LOAD_AND_RUN], env=env, cwd=settings.PROJECT_DIR,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])

    assert local_defs.resources["landing_io_manager"].s3 is None  # the test process is the laptop
    assert loaded["graph"] == asset_graph_snapshot(local_defs)
    assert loaded["resources"] == sorted(local_defs.resources)
    assert loaded["landing_s3"] == "S3Resource"
    assert loaded["run_launcher"] == "EcsRunLauncher" and loaded["compute_logs"] == "S3ComputeLogManager"
    assert loaded["success"] and loaded["landing"] == [production_env[settings.LANDING_URL_ENV]]

    s3 = boto3.client("s3")
    prefix = production_env[settings.LANDING_URL_ENV].removeprefix(f"s3://{LANDING_BUCKET}/")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=LANDING_BUCKET, Prefix=prefix)["Contents"]]
    assert keys == [f"{prefix}/raw_quotes/date=2020-03-02/part.parquet"]
    # The step's captured output (Dagster's console log lines) went to S3 through the production instance.
    logs = s3.list_objects_v2(Bucket=LOGS_BUCKET, Prefix=f"dagster/compute-logs/storage/{loaded['run_id']}/")
    stderr = [o["Key"] for o in logs.get("Contents", []) if o["Key"].endswith(".err")]
    assert stderr, logs.get("Contents")
    captured = s3.get_object(Bucket=LOGS_BUCKET, Key=stderr[0])["Body"].read().decode()
    assert 'Started execution of step "raw_quotes"' in captured
