"""The worker pool a streamed backfill step spreads its batches over (stock_assets/landing/workers.py)."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from stock_assets import settings
from stock_assets.landing.workers import MIN_BATCHES, processes_for, run_batches, usable_cores, worker_pool


def _square_in(job: int) -> tuple[int, int]:
    time.sleep(0.05 * (job % 3))  # finish out of order
    return job * job, os.getpid()


def _sleep_or_fail(job: tuple[str, object]) -> object:
    kind, value = job
    if kind == "fail":  # after a second: the batches before it have started by then
        time.sleep(1)
        raise ValueError(value)
    time.sleep(float(value))
    return value


def test_results_come_back_in_job_order_from_other_processes():
    with worker_pool(3) as pool:  # two workers, no work here
        results = list(run_batches(pool, _square_in, range(9), ahead=1))
    assert [square for square, _ in results] == [job * job for job in range(9)]
    assert os.getpid() not in {pid for _, pid in results}
    assert len({pid for _, pid in results}) == 2


def _pause(job: int) -> tuple[int, int]:
    time.sleep(0.2)
    return job, os.getpid()


def test_the_steps_own_process_works_beside_the_worker_in_job_order():
    with worker_pool(2) as pool:  # one worker and the step's own process
        results = list(run_batches(pool, _pause, range(40), here=_pause))
        worker_pids = set(pool.pids())
    assert [job for job, _ in results] == list(range(40))
    pids = [pid for _, pid in results]
    assert pids[0] == os.getpid()  # the first job is worked here at once, while the worker starts
    assert os.getpid() in pids and worker_pids & set(pids)  # both did some
    assert set(pids) <= worker_pids | {os.getpid()}


def test_a_step_done_before_its_worker_is_up_does_not_wait_for_it():
    with worker_pool(2) as pool:
        results = list(run_batches(pool, _square_in, [0, 3], here=_square_in))
        starting = [psutil.Process(pid) for pid in pool.pids()]
    assert [pid for _, pid in results] == [os.getpid()] * 2  # a spawned interpreter takes far longer to start
    for worker in starting:  # stopped, not waited for
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


def test_a_batch_failing_here_stops_the_workers():
    with pytest.raises(ValueError, match="bad batch"):
        with worker_pool(2) as pool:
            workers = [psutil.Process(pid) for pid in pool.pids()]
            list(run_batches(pool, _sleep_or_fail, [("fail", "bad batch"), ("sleep", 60)], here=_sleep_or_fail))
    assert len(workers) == 1
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


def test_without_a_pool_the_jobs_run_here_in_order():
    with worker_pool(1) as pool:
        assert pool is None
        assert [pid for _, pid in run_batches(pool, _square_in, range(3))] == [os.getpid()] * 3


def test_a_failing_batch_stops_the_others_at_once():
    began = time.monotonic()
    with pytest.raises(ValueError, match="bad batch"):
        with worker_pool(3) as pool:
            # After a quick first batch, one worker sleeps for a minute and the other fails a second later.
            batches = run_batches(pool, _sleep_or_fail, [("sleep", 0), ("sleep", 60), ("fail", "bad batch"),
                                                         ("sleep", 60)])
            assert next(batches) == 0
            workers = [psutil.Process(pid) for pid in pool.pids()]
            assert len(workers) == 2
            list(batches)
    assert time.monotonic() - began < 30  # not the minute the sleeping batch would take
    for worker in workers:  # both stopped, the sleeping one too
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


def test_how_many_processes(monkeypatch):
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "3")
    assert processes_for(10) == 3
    assert processes_for(MIN_BATCHES - 1) == 1  # too few batches to repay spawning
    assert processes_for(MIN_BATCHES) == 3
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "1")
    assert processes_for(100) == 1
    monkeypatch.delenv(settings.WORKER_PROCESSES_ENV)
    assert processes_for(100) == min(usable_cores(), 4)
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "0")
    with pytest.raises(ValueError, match="STOCK_ASSETS_WORKER_PROCESSES must be a positive whole number"):
        processes_for(10)
