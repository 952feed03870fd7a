"""A streamed step's batches in worker processes, so a backfill uses every core.

A streamed step (landing/streaming.py) works a batch of tickers at a time, and its batches do
not depend on each other: each is fetched (or cleaned) and spooled to local disk on its own. In
one process they take turns on one core, since pandas and yfinance hold Python's interpreter
lock. With more batches than `MIN_BATCHES` the step hands them to a pool of worker processes
instead, and only adds up what each batch reports (rows per day, failures, pieces spooled).

Workers are *spawned*, never forked: a fork would copy the step's open database connections
and the locks its threads hold at that moment (a forked fetch worker was seen to stall for
20 s). A spawned worker imports the project afresh (about 3 s), which only big runs repay.

`STOCK_ASSETS_WORKER_PROCESSES` sets how many (default: one per core, at most 4; 1 = work in
the step's own process). Each worker builds its own resources from their configuration (a
pooled engine per process, as everywhere) and keeps them for every batch it is given.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

from stock_assets import settings

Job = TypeVar("Job")
Result = TypeVar("Result")

# Fewer batches than this are worked in the step's own process: spawning costs more than it saves.
MIN_BATCHES = 4
MAX_DEFAULT_PROCESSES = 4


def processes_for(batches: int) -> int:
    """How many worker processes a step with `batches` batches uses (1: none, the step's own)."""
    configured = settings.worker_processes()
    wanted = configured if configured is not None else min(usable_cores(), MAX_DEFAULT_PROCESSES)
    if wanted <= 1 or batches < MIN_BATCHES:
        return 1
    return min(wanted, batches)


_built: dict[tuple[str, str], object] = {}


def built_once(build: Callable[[Mapping[str, object]], Result], config: Mapping[str, object]) -> Result:
    """`build(config)`, made once per process and configuration: a worker keeps the resources it
    builds (a pooled engine, a quote client) for every batch it is given."""
    key = (f"{build.__module__}.{build.__qualname__}", repr(sorted(config.items())))
    if key not in _built:
        _built[key] = build(config)
    return _built[key]  # type: ignore[return-value]


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def worker_pool(processes: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of `processes` spawned workers (None for 1: work here). On an error (or the run
    being terminated) the batches not yet started are cancelled and the workers stopped at once,
    so a worker waiting out Yahoo's retries does not hold the step up; a batch cut short leaves
    nothing behind but its spool pieces (removed with the spool) and a rolled-back transaction."""
    if processes <= 1:
        yield None
        return
    pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    except BaseException:
        workers = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(timeout=10)
        raise
    pool.shutdown(wait=True)


def run_batches(pool: ProcessPoolExecutor | None, work: Callable[[Job], Result], jobs: Iterable[Job],
                ahead: int = 2) -> Iterator[Result]:
    """`work(job)` for every job, results in the jobs' order. In `pool`, at most `ahead` jobs per
    worker are queued at once (a finished job's result waits in memory until its turn); without a
    pool, here, one after another. The first error cancels the jobs not yet started and is raised."""
    if pool is None:
        for job in jobs:
            yield work(job)
        return
    limit = max(1, ahead * pool._max_workers)  # noqa: SLF001 - the pool's own size
    queued: deque[Future] = deque()

    def next_result() -> Result:
        # The oldest job's result, but a later job's failure is raised as soon as it happens.
        while True:
            failed = next((f for f in queued if f.done() and f.exception() is not None), None)
            if failed is not None:
                for other in queued:
                    other.cancel()
                raise failed.exception()
            if queued[0].done():
                return queued.popleft().result()
            wait([f for f in queued if not f.done()], return_when=FIRST_COMPLETED)

    for job in jobs:
        queued.append(pool.submit(work, job))
        if len(queued) >= limit:
            yield next_result()
    while queued:
        yield next_result()
