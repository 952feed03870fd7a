"""Impossible ranges are refused at once, with a one-line reason, before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from stock_assets import settings
from stock_assets.database.urls import with_driver
from stock_assets.defs.partitions import range_tags
from stock_assets.instance.environment import postgres_storage
from stock_assets.instance.storage import RangeTagError
from stock_assets.tooling.bench.scratch import scratch_database

pytestmark = pytest.mark.reliability


def _demo(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "STOCK_ASSETS_"))}
    env[settings.STATE_DIR_ENV] = str(tmp_path / "state")  # no database here: none may be started
    return subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "demo", *args], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "reason"), [
    (["--start", "2020-01-20", "--end", "2020-01-10"], "--end 2020-01-10 is before --start 2020-01-20"),
    (["--start", "2030-01-01"], "--start 2030-01-01 is after the replay archive's last day (2020-10-27)"),
    (["--end", "2021-03-01"], "--end 2021-03-01 is after the replay archive's last day (2020-10-27)"),
    (["--start", "2015-06-01", "--end", "2015-07-01"], "--start 2015-06-01 is before the first partition"),
])
def test_demo_refuses_an_impossible_range_before_the_database_starts(tmp_path, args, reason):
    """Input: a reversed range, a start or end past the data. Asserts: exit 2, one line naming the
    flag the user typed, and no embedded database was created."""
    out = _demo(tmp_path, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith(f"stock-assets demo: {reason}")
    assert not (tmp_path / "state" / "pgdata").exists()
    assert out.stdout == ""


def test_help_is_fast_and_bench_help_works(tmp_path):
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "demo" in out.stdout
    assert time.perf_counter() - began < 3  # it imported no benchmark (each loads the whole graph)
    for args in (["bench", "--help"], ["bench", "ratelimit", "--help"]):
        shown = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", *args], capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert "Traceback" not in shown.stderr
    assert "+0.01 %" in shown.stdout  # the docstring's table, with its percent signs


def test_an_unreachable_database_is_one_line(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "STOCK_ASSETS_"))}
    env.update({settings.STATE_DIR_ENV: str(tmp_path / "state"),
                settings.DATABASE_URL_ENV: "postgresql://nobody:secret@127.0.0.1:1/none"})
    out = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "demo", "--start", "2020-01-01",
                          "--end", "2020-01-31"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1] == "(run again with --debug for the traceback)", out.stderr
    assert lines[0].startswith("stock-assets demo: cannot reach the database") and "Connection refused" in lines[0]
    assert "secret" not in out.stderr
    debug = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "demo", "--debug", "--start", "2020-01-01",
                            "--end", "2020-01-31"], env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback (most recent call last)" in debug.stderr


@pytest.fixture
def instance(embedded_server, tmp_path):
    with scratch_database(embedded_server.url(), "stock_assets_test_ranges") as url:
        with dg.instance_for_test(temp_dir=str(tmp_path), overrides=postgres_storage(with_driver(url, "psycopg2"))) \
                as instance:
            yield instance


@pytest.mark.parametrize(("first", "last", "reason"), [
    ("2016-01-01", "2999-12-31", "ends (2999-12-31) after the last partition"),
    ("2020-03-10", "2020-03-01", "ends (2020-03-01) before it starts (2020-03-10)"),
    ("2010-01-01", "2010-02-01", "starts (2010-01-01) before the first partition (2016-01-01)"),
])
def test_runs_with_impossible_range_tags_are_refused_when_stored(instance, first, last, reason):
    """Input: a run's range tags as an operator types them in the launchpad. Asserts: refused within
    a second (not >300 s planning 360k partitions, not `KeyError: 'open'` in the assets), no run stored."""
    from stock_assets.definitions import defs

    job = defs.resolve_job_def("daily_prices_job")
    began = time.perf_counter()
    with pytest.raises(RangeTagError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        instance.create_run_for_job(job, tags=range_tags(first, last))
    assert time.perf_counter() - began < 5
    assert instance.get_runs_count() == 0
    good = instance.create_run_for_job(job, tags=range_tags("2020-03-02", "2020-03-06"))
    assert instance.get_run_by_id(good.run_id) is not None


def test_a_second_dev_on_a_busy_port_starts_nothing(tmp_path):
    """Input: `stock-assets dev` on a port another server holds. Asserts: exit 2 with the reason,
    before any database or daemon starts (no second daemon against the same instance)."""
    import socket

    env = {key: value for key, value in os.environ.items() if not key.startswith(("DAGSTER_", "STOCK_ASSETS_"))}
    env[settings.STATE_DIR_ENV] = str(tmp_path / "state")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "dev", "--port", str(port)], env=env,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith(f"stock-assets dev: 127.0.0.1:{port} is already in use")
    assert not (tmp_path / "state" / "pgdata").exists() and not (tmp_path / "state" / "dagster").exists()
