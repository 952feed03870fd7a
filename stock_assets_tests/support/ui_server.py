"""A real `stock-assets dev` (Dagster webserver + daemon) for the UI tests, started once per session.

`dagster_ui` runs `python -m stock_assets.tooling.cli dev --host 127.0.0.1 --port <free port>` in its own
process group, against the session's embedded PostgreSQL but in databases of its own
(`ui_pipeline` for the pipeline tables, `ui_dagster` for Dagster's runs and events), so the
function-scoped `database` fixture of other tests, which empties the market tables, never touches
what the UI tests launched. State (landing zone, DAGSTER_HOME) lives in a private temporary folder.
At the end the whole process group gets SIGTERM, then SIGKILL after a grace period (`dg dev`
shuts its webserver, daemon and code server down slowly).

`ui_history` loads history through the server once per session, the way an operator would: the
ticker universe as a job run, one bad day as a partitioned job run, February 2020's days as a
partition backfill (`launchPartitionBackfill`, one run under the single-run backfill policy) and
the month as a job run. The GraphQL tests assert on it; the browser tests take their screenshots
of it and launch from the UI on top of it.

Registered as a plugin in conftest.py (one fixture definition for every module).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import requests
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient
from psycopg import sql

from stock_assets import settings
from stock_assets.database.urls import libpq_url, with_database, with_driver
from stock_assets.defs.partitions import trading_day_partitions

UI_TICKERS = ["AAPL", "MSFT", "XOM", "CVX", "JNJ", "PFE"]  # three sectors, and PFE's bad bar of 2019-11-18
UI_SECTORS = 3
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 180
STOP_GRACE_S = 20
MONTH = "2020-02-01"
BAD_DAY = "2019-11-18"  # PFE's zero-volume bar: rejected, and the tickers_complete warning fails
MONTH_DAYS = trading_day_partitions.get_partition_keys_in_range(dg.PartitionKeyRange("2020-02-01", "2020-02-29"))
MONTH_SESSIONS = 19  # NYSE sessions in February 2020 (Presidents' Day on the 17th)

_LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
  }
}
"""
_BACKFILL_STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions runs(limit: 20) { id status tags { key value } } }
    ... on PythonError { message }
  }
}
"""


class GraphQLError(AssertionError):
    pass


@dataclass
class DagsterUI:
    """A running `stock-assets dev` and ways to talk to it."""

    url: str
    port: int
    pipeline_url: str
    state_dir: Path
    log_path: Path
    process: subprocess.Popen

    @property
    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """A raw GraphQL request; raises with the server's messages on errors."""
        response = requests.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}},
                                 timeout=60)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_for_run(self, run_id: str, timeout: float = RUN_TIMEOUT_S) -> DagsterRunStatus:
        """Poll through DagsterGraphQLClient until the run has finished; returns its status."""
        deadline = time.monotonic() + timeout
        finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
        while True:
            status = self.client.get_run_status(run_id)
            if status in finished:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {status} after {timeout}s\n{self.log_tail()}")
            time.sleep(1)

    def launch_backfill(self, params: dict) -> str:
        result = self.graphql(_LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(f"launchPartitionBackfill failed: {result}")
        return result["backfillId"]

    def wait_for_backfill(self, backfill_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
        """Poll until the backfill is no longer requested (the daemon looks at it every 30 s)."""
        deadline = time.monotonic() + timeout
        while True:
            backfill = self.graphql(_BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            if backfill["__typename"] != "PartitionBackfill":
                raise GraphQLError(str(backfill))
            if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
                return backfill
            if time.monotonic() > deadline:
                raise AssertionError(f"backfill {backfill_id} still {backfill['status']} after {timeout}s\n"
                                     f"{self.log_tail()}")
            time.sleep(2)

    def wait_for_backfill_run(self, backfill_id: str, timeout: float = RUN_TIMEOUT_S) -> str:
        """The id of the backfill's first run, once the daemon has launched it."""
        deadline = time.monotonic() + timeout
        while True:
            backfill = self.graphql(_BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
            if backfill.get("runs"):
                return backfill["runs"][-1]["id"]
            if backfill.get("status") not in (None, "REQUESTED"):
                raise AssertionError(f"backfill {backfill_id} ended without runs: {backfill}")
            if time.monotonic() > deadline:
                raise AssertionError(f"backfill {backfill_id} launched no run after {timeout}s\n{self.log_tail()}")
            time.sleep(1)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@dataclass(frozen=True)
class UIHistory:
    """What `ui_history` launched and how it ended."""

    universe_run: str
    bad_day_run: str
    backfill_id: str
    backfill: dict
    month_run: str
    statuses: dict[str, DagsterRunStatus]
    timings: dict[str, float]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _create_database(admin_url: str, name: str) -> None:
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def server_environment(database_url: str, state: Path) -> dict[str, str]:
    pipeline_url = with_database(database_url, "ui_pipeline")
    dagster_url = with_driver(with_database(database_url, "ui_dagster"), "psycopg2")
    for name in ("ui_pipeline", "ui_dagster"):
        _create_database(with_database(database_url, "postgres"), name)
    home = state / "dagster-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").symlink_to(settings.PROJECT_DIR / "dagster.yaml")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DAGSTER_", "STOCK_ASSETS_", "PYTEST_"))}
    env.update({
        settings.DATABASE_URL_ENV: pipeline_url,
        settings.DAGSTER_PG_URL_ENV: dagster_url,
        settings.STATE_DIR_ENV: str(state),
        settings.QUOTE_SOURCE_ENV: "replay",
        settings.TICKERS_ENV: ",".join(UI_TICKERS),
        "DAGSTER_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture(scope="session")
def dagster_ui(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterUI]:
    state = tmp_path_factory.mktemp("ui-state")
    env = server_environment(database_url, state)
    port = _free_port()
    log_path = state / "dagster-dev.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stock_assets.tooling.cli", "dev", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=settings.PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", port, env[settings.DATABASE_URL_ENV], state, log_path, process)
    try:
        began = time.monotonic()
        _wait_until_ready(ui)
        print(f"dagster_ui: stock-assets dev ready on port {port} after {time.monotonic() - began:.0f}s")
        yield ui
    finally:
        _stop(process)


def _wait_until_ready(ui: DagsterUI) -> None:
    """The webserver answers and the code location is loaded."""
    deadline = time.monotonic() + START_TIMEOUT_S
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename " \
            "... on PythonError { message } } } } } }"
    last = None
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            raise AssertionError(f"stock-assets dev exited with {ui.process.returncode}:\n{ui.log_tail()}")
        try:
            entries = ui.graphql(query)["workspaceOrError"]["locationEntries"]
            last = entries
            loaded = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"]
            errors = [e for e in entries if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"]
            if errors:
                raise AssertionError(f"the code location failed to load: {errors}")
            if loaded:
                return
        except (requests.ConnectionError, requests.HTTPError, GraphQLError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"stock-assets dev not ready after {START_TIMEOUT_S}s ({last}):\n{ui.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the whole process group, SIGKILL after the grace period."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGTERM)
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    # Children (daemon, code server, run workers) may outlive the parent: the group goes in any case.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.2)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="session")
def ui_history(dagster_ui: DagsterUI) -> UIHistory:
    """History loaded through the running server, the way an operator would, with runs in parallel:
    the universe (a job run), 2019-11-18 (`daily_prices_job` for one partition: PFE's bad bar),
    February 2020's days (a partition backfill: one run under the single-run policy), then, as soon
    as that run has succeeded, the month (`monthly_warehouse_job` for 2020-02-01)."""
    client = dagster_ui.client
    began = time.monotonic()
    universe_run = client.submit_job_execution("universe_job")
    bad_day_run = client.submit_job_execution("daily_prices_job", tags={"dagster/partition": BAD_DAY})
    backfill_id = dagster_ui.launch_backfill({
        "assetSelection": [{"path": ["raw_quotes"]}, {"path": ["cleaned_prices"]}],
        "partitionNames": MONTH_DAYS,
        "title": "February 2020 (ui tests)",
    })
    statuses = {run: dagster_ui.wait_for_run(run) for run in (universe_run, bad_day_run)}
    timings = {"universe and bad day": time.monotonic() - began}
    backfill_run = dagster_ui.wait_for_backfill_run(backfill_id)
    statuses[backfill_run] = dagster_ui.wait_for_run(backfill_run)
    timings["backfill run"] = time.monotonic() - began
    month_run = client.submit_job_execution("monthly_warehouse_job", tags={"dagster/partition": MONTH})
    backfill = dagster_ui.wait_for_backfill(backfill_id)  # the daemon marks it done on its next pass
    timings["backfill"] = time.monotonic() - began
    statuses[month_run] = dagster_ui.wait_for_run(month_run)
    timings["month run"] = time.monotonic() - began
    print("ui_history: " + ", ".join(f"{k} done after {v:.0f}s" for k, v in timings.items()))
    return UIHistory(universe_run, bad_day_run, backfill_id, backfill, month_run, statuses, timings)
