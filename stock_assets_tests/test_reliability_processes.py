"""Killed processes and a wedged instance: kill, restart, the next command succeeds, nothing lost or duplicated.

Each test kills a real `stock-assets` process (SIGKILL, as the OOM killer does) and runs the next
command against the same Dagster instance and database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import text

from stock_assets import settings
from stock_assets.health import check_runs
from stock_assets.instance.dead_runs import find_dead_runs, held_slots, process_tags

pytestmark = pytest.mark.reliability

TICKERS = "AAPL,MSFT,XOM,JNJ,JPM"


def _env(database_url: str, state: Path) -> dict[str, str]:
    env = {**os.environ, settings.DATABASE_URL_ENV: database_url, settings.TICKERS_ENV: TICKERS,
           settings.STATE_DIR_ENV: str(state)}
    for name in ("DAGSTER_HOME", "DAGSTER_PG_URL"):
        env.pop(name, None)
    return env


def _demo(env, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stock_assets.tooling.cli", "demo", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _instance(env) -> dg.DagsterInstance:
    os.environ.update({k: v for k, v in env.items() if k.startswith(("DAGSTER", "STOCK_ASSETS"))})
    from stock_assets.instance.environment import prepare_environment

    prepare_environment(apply_pools=False)
    return dg.DagsterInstance.get()


def _wait_for_slot(instance: dg.DagsterInstance, pool: str, timeout_s: float = 240) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (held,) = held_slots(instance, [pool])
        if held.run_ids:
            return held.run_ids[0]
        time.sleep(0.05)
    raise AssertionError(f"no run claimed a {pool} slot within {timeout_s} s")


def _prices(database) -> list[tuple]:
    with database.begin() as conn:
        return conn.execute(text(
            "SELECT symbol, trade_date, count(*) FROM market.prices GROUP BY 1, 2 ORDER BY 1, 2")).all()


def test_sigkill_of_a_demo_mid_run_then_the_next_demo_succeeds(database, database_url, tmp_path, monkeypatch):
    """Fault: SIGKILL of `stock-assets demo` while its daily run holds the `yahoo` pool slot.
    Asserts: the dead run is found, the next demo marks it failed, frees the slot and completes,
    health sees nothing held afterwards, and the prices table holds each bar exactly once."""
    for name in (settings.DATABASE_URL_ENV, settings.TICKERS_ENV, settings.STATE_DIR_ENV, "DAGSTER_HOME",
                 "DAGSTER_PG_URL", "DAGSTER_ARTIFACTS_DIR", "DAGSTER_COMPUTE_LOGS_DIR"):
        monkeypatch.delenv(name, raising=False)
    env = _env(database_url, tmp_path / "state")
    instance = _instance(env)

    victim = _demo(env, "--start", "2020-01-01", "--end", "2020-06-30")
    try:
        run_id = _wait_for_slot(instance, settings.YAHOO_POOL)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    stuck = instance.get_run_by_id(run_id)
    assert stuck.status == dg.DagsterRunStatus.STARTED  # Dagster alone would keep it so forever
    assert [dead.run_id for dead in find_dead_runs(instance)] == [run_id]
    wedged = check_runs(instance)  # what `stock-assets health` says now
    assert wedged.status == "fail" and f"run {run_id[:8]} of daily_prices_job" in wedged.summary
    assert wedged.details["pools"][settings.YAHOO_POOL]["held_by_dead_runs"] == [run_id]
    # The dead run's range hides gaps: January to June, and December 2019 (the demo loads the month
    # before its range, whose last close starts January's first return).
    assert wedged.details["gap_sensor_in_flight_days"]["count"] == 31 + 182

    survivor = _demo(env, "--start", "2020-01-01", "--end", "2020-02-29")
    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out[-3000:]
    assert f"run {run_id[:8]} of daily_prices_job" in out and "marked it failed and freed its pool slots" in out
    assert "[3/3]" in out and "Sector summary" in out

    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert not find_dead_runs(instance)
    healed = check_runs(instance)
    assert healed.status == "ok" and healed.details["gap_sensor_in_flight_days"]["count"] == 0
    assert all(not held.run_ids for held in held_slots(instance, [settings.YAHOO_POOL, settings.POSTGRES_POOL]))
    rows = _prices(database)
    assert rows and all(count == 1 for _, _, count in rows)  # nothing duplicated
    months = {day.strftime("%Y-%m") for _, day, _ in rows}
    assert {"2020-01", "2020-02"} <= months  # nothing lost: the survivor's range is complete
    symbols = {symbol for symbol, _, _ in rows}
    assert symbols == set(TICKERS.split(","))
    _assert_private(tmp_path / "state")
    instance.dispose()


def _assert_private(state: Path) -> None:
    """Everything the demo left in its state folder is the user's alone (0700 folders, 0600 files)."""
    kinds = {"landing": 0, "logs": 0, "yfinance": 0}
    for path in [state, *state.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
        for kind in kinds:
            kinds[kind] += kind in path.parts and path.is_file()
    assert all(kinds.values()), kinds  # landing Parquet, compute logs and yfinance's cookie file were checked


def test_postgresql_dying_under_a_demo_is_one_line_and_the_next_demo_recovers(tmp_path, monkeypatch):
    """Fault: PostgreSQL stops (immediate) while a demo's daily run holds the `yahoo` slot, so the run's
    failure cannot even be recorded. Asserts: the demo exits 1 with one line (and the --debug hint),
    not a traceback; after a restart the next demo marks the stranded run failed, frees its slot and
    completes, each bar stored once."""
    from stock_assets.database.embedded import EmbeddedServer
    from stock_assets.database.resource import PostgresResource

    for name in (settings.DATABASE_URL_ENV, settings.TICKERS_ENV, settings.STATE_DIR_ENV, "DAGSTER_HOME",
                 "DAGSTER_PG_URL", "DAGSTER_ARTIFACTS_DIR", "DAGSTER_COMPUTE_LOGS_DIR"):
        monkeypatch.delenv(name, raising=False)
    server = EmbeddedServer(tmp_path / "crashable")
    url = server.ensure_running()
    try:
        env = _env(url, tmp_path / "state")
        instance = _instance(env)
        victim = _demo(env, "--start", "2020-01-01", "--end", "2020-06-30")
        run_id = _wait_for_slot(instance, settings.YAHOO_POOL)
        server.stop(mode="immediate")
        out, _ = victim.communicate(timeout=300)
        assert victim.returncode == 1, out[-3000:]
        tail = out.strip().splitlines()[-2:]
        assert tail[0].startswith("stock-assets demo: ") and "Traceback" not in out, out[-3000:]
        assert tail[1].startswith("(run again with --debug for the traceback")

        server.ensure_running()
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # stranded
        survivor = _demo(env, "--start", "2020-01-01", "--end", "2020-01-31")
        out, _ = survivor.communicate(timeout=300)
        assert survivor.returncode == 0, out[-3000:]
        assert f"run {run_id[:8]} of daily_prices_job" in out
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        rows = _prices(PostgresResource(url=url))
        assert rows and all(count == 1 for _, _, count in rows)
        instance.dispose()
    finally:
        server.stop(mode="immediate")


def test_a_run_of_a_live_process_is_not_called_dead(database, database_url, tmp_path, monkeypatch):
    """Guard: a STARTED run whose process is alive (this test's own) is left alone."""
    for name in (settings.DATABASE_URL_ENV, settings.STATE_DIR_ENV, "DAGSTER_HOME", "DAGSTER_PG_URL"):
        monkeypatch.delenv(name, raising=False)
    instance = _instance(_env(database_url, tmp_path / "state"))
    run = instance.create_run_for_job(_noop_job, tags=process_tags())
    instance.handle_new_event(_started_event(run))
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    assert run.run_id not in {dead.run_id for dead in find_dead_runs(instance)}
    instance.report_run_failed(instance.get_run_by_id(run.run_id), message="test clean-up")
    instance.dispose()


@dg.op
def _noop() -> None:
    pass


@dg.job
def _noop_job() -> None:
    _noop()


def _started_event(run: dg.DagsterRun):
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._core.events.log import EventLogEntry

    event = DagsterEvent(DagsterEventType.RUN_START.value, job_name=run.job_name)
    return EventLogEntry(error_info=None, level="DEBUG", user_message="", run_id=run.run_id,
                         timestamp=time.time(), dagster_event=event)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_waiting_demo_says_what_it_waits_for_and_stops_on_a_signal(database, database_url, tmp_path, monkeypatch,
                                                                     signum):
    """Fault: a live run (this test's process) holds the only `yahoo` slot. Asserts: the demo names
    the pool and the run it waits for, then SIGTERM/SIGINT stops it at once (no busy wait that
    ignores signals), and the slot holder is untouched."""
    for name in (settings.DATABASE_URL_ENV, settings.STATE_DIR_ENV, "DAGSTER_HOME", "DAGSTER_PG_URL"):
        monkeypatch.delenv(name, raising=False)
    env = _env(database_url, tmp_path / "state")
    instance = _instance(env)
    from stock_assets.instance.environment import apply_pool_limits

    apply_pool_limits(instance)
    holder = instance.create_run_for_job(_noop_job, tags=process_tags())
    instance.handle_new_event(_started_event(holder))
    claim = instance.event_log_storage.claim_concurrency_slot(settings.YAHOO_POOL, holder.run_id, "raw_quotes")
    assert claim.is_claimed
    waiting = _demo(env, "--start", "2020-01-01", "--end", "2020-01-31")
    try:
        lines = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = waiting.stdout.readline()
            lines.append(line)
            if "waiting for a `yahoo` pool slot" in line or not line:
                break
        assert f"held by run {holder.run_id[:8]} of _noop_job (STARTED)" in lines[-1], "".join(lines)
        time.sleep(1.0)
        waiting.send_signal(signum)
        out, _ = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            os.killpg(waiting.pid, signal.SIGKILL)
    assert waiting.returncode == 128 + signum
    assert out.strip().endswith("terminated" if signum == signal.SIGTERM else "interrupted")
    assert "Traceback" not in out
    assert instance.get_run_by_id(holder.run_id).status == dg.DagsterRunStatus.STARTED  # the live run is not reaped
    (held,) = held_slots(instance, [settings.YAHOO_POOL])
    assert held.run_ids == (holder.run_id,)
    instance.event_log_storage.free_concurrency_slots_for_run(holder.run_id)
    instance.report_run_failed(instance.get_run_by_id(holder.run_id), message="test clean-up")
    instance.dispose()


def test_the_daemons_reaper_frees_a_dead_runs_slots_for_queued_runs(database_url, tmp_path, monkeypatch):
    """Fault: a run's only process exited without a word while holding the `yahoo` slot and a
    queued step waits for it. Asserts: the `dead_run_reaper` sensor (what the daemon runs every
    minute) marks it failed and frees the slot; evaluated again, it finds nothing."""
    from stock_assets.defs.operations.sensors import dead_run_reaper
    from stock_assets.instance.dead_runs import HOST_TAG, PID_TAG
    from stock_assets.instance.environment import apply_pool_limits

    for name in (settings.DATABASE_URL_ENV, settings.STATE_DIR_ENV, "DAGSTER_HOME", "DAGSTER_PG_URL"):
        monkeypatch.delenv(name, raising=False)
    instance = _instance(_env(database_url, tmp_path / "state"))
    apply_pool_limits(instance)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = instance.create_run_for_job(_noop_job, tags={**process_tags(), PID_TAG: str(gone.pid)})
    assert run.tags[HOST_TAG]
    instance.handle_new_event(_started_event(run))
    assert instance.event_log_storage.claim_concurrency_slot(settings.YAHOO_POOL, run.run_id, "raw_quotes").is_claimed
    waiting = instance.create_run_for_job(_noop_job, tags=process_tags())
    assert not instance.event_log_storage.claim_concurrency_slot(
        settings.YAHOO_POOL, waiting.run_id, "raw_quotes").is_claimed

    with dg.build_sensor_context(instance=instance) as context:
        result = dead_run_reaper(context)
    assert result.skip_message == "1 dead run(s) marked failed"
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.claim_concurrency_slot(
        settings.YAHOO_POOL, waiting.run_id, "raw_quotes").is_claimed  # the queued step gets the slot now
    with dg.build_sensor_context(instance=instance) as context:
        assert dead_run_reaper(context).skip_message == "no dead runs"
    instance.event_log_storage.free_concurrency_slots_for_run(waiting.run_id)
    instance.dispose()
