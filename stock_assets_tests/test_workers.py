"""The worker pool a streamed backfill step spreads its batches over (stock_assets/landing/workers.py)."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from stock_assets import settings
from stock_assets.landing.workers import MIN_BATCHES, processes_for, run_batches, worker_pool


def _square_in(job: int) -> tuple[int, int]:
    time.sleep(0.05 * (job % 3))  # finish out of order
    return job * job, os.getpid()


def _sleep_or_fail(job: tuple[str, object]) -> object:
    kind, value = job
    if kind == "fail":
        raise ValueError(value)
    time.sleep(float(value))
    return value


def test_results_come_back_in_job_order_from_other_processes():
    with worker_pool(2) as pool:
        results = list(run_batches(pool, _square_in, range(9), ahead=1))
    assert [square for square, _ in results] == [job * job for job in range(9)]
    assert os.getpid() not in {pid for _, pid in results}
    assert len({pid for _, pid in results}) == 2


def test_without_a_pool_the_jobs_run_here_in_order():
    with worker_pool(1) as pool:
        assert pool is None
        assert [pid for _, pid in run_batches(pool, _square_in, range(3))] == [os.getpid()] * 3


def test_a_failing_batch_stops_the_others_at_once():
    began = time.monotonic()
    with pytest.raises(ValueError, match="bad batch"):
        with worker_pool(2) as pool:
            # The first job would hold the step for a minute; the second fails at once.
            list(run_batches(pool, _sleep_or_fail, [("sleep", 60), ("fail", "bad batch"), ("sleep", 60)]))
    assert time.monotonic() - began < 30
    # The workers are gone (not the resource tracker multiprocessing keeps for this process).
    assert not [child for child in psutil.Process().children(recursive=True)
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE
                and "spawn_main" in " ".join(child.cmdline())]


def test_how_many_processes(monkeypatch):
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "3")
    assert processes_for(10) == 3
    assert processes_for(MIN_BATCHES - 1) == 1  # too few batches to repay spawning
    assert processes_for(MIN_BATCHES) == 3
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "1")
    assert processes_for(100) == 1
    monkeypatch.delenv(settings.WORKER_PROCESSES_ENV)
    assert processes_for(100) == min(os.cpu_count() or 1, 4)
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "0")
    with pytest.raises(ValueError, match="STOCK_ASSETS_WORKER_PROCESSES must be a positive whole number"):
        processes_for(10)
