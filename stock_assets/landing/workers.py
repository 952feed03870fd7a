"""A streamed step's batches in worker processes, so a backfill uses every core.

A streamed step (landing/streaming.py) works a batch of tickers at a time, and its batches do
not depend on each other: each is fetched (or cleaned) and spooled to local disk on its own. In
one process they take turns on one core, since pandas and yfinance hold Python's interpreter
lock. With `MIN_BATCHES` batches or more the step starts a pool of worker processes next to its
own and only adds up what each batch reports (rows per day, failures, pieces spooled).

The step's own process works too: it starts on the first batch at once, and a worker is given
batches only once it is up. Workers are *spawned*, never forked: a fork would copy the step's
open database connections and the locks its threads hold at that moment (a forked fetch worker
was seen to stall for 20 s). A spawned worker imports the project afresh (about 3 s); a step
that is done before its workers are up stops them and does not wait.

`STOCK_ASSETS_WORKER_PROCESSES` sets how many processes work on a step, the step's own included
(default: one per core, at most 4; 1 = the step's own only). Each worker builds its own
resources from their configuration (a pooled engine per process, as everywhere) and keeps them
for every batch it is given.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TypeVar

from stock_assets import settings

Job = TypeVar("Job")
Result = TypeVar("Result")

# Fewer batches than this are worked in the step's own process: spawning costs more than it saves.
MIN_BATCHES = 4
MAX_DEFAULT_PROCESSES = 4
# Whether a step's own process works batches beside its workers. Tests turn it off to put every
# batch through the workers' path (pickling, resources rebuilt from their configuration).
WORK_HERE = True


def processes_for(batches: int) -> int:
    """How many processes work on a step with `batches` batches, the step's own included (1: it alone)."""
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


def _up() -> int:
    """A worker's first task: it has started and imported what the batches need."""
    return os.getpid()


class WorkerPool:
    """Spawned worker processes that join the step's own once they are up."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        self._started = [self.executor.submit(_up) for _ in range(workers)]

    def up(self) -> int:
        """How many workers have started (a worker that could not start is an error)."""
        for started in self._started:
            if started.done() and started.exception() is not None:
                raise started.exception()
        return sum(started.done() for started in self._started)

    def pids(self) -> list[int]:
        return list((getattr(self.executor, "_processes", None) or {}).keys())

    def submit(self, work: Callable[[Job], Result], job: Job) -> Future:
        return self.executor.submit(work, job)

    def stop(self) -> None:
        """Stop every worker now: batches not yet started are cancelled."""
        processes = list((getattr(self.executor, "_processes", None) or {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)

    def close(self) -> None:
        """Done with the pool: workers that are up finish and exit; if some are still starting,
        they have nothing to finish and are stopped rather than waited for."""
        if self.up() < self.workers:
            self.stop()
        else:
            self.executor.shutdown(wait=True)


@contextlib.contextmanager
def worker_pool(processes: int) -> Iterator[WorkerPool | None]:
    """Workers for a step worked by `processes` processes, its own included (None for 1: work
    here only). On an error (or the run being terminated) the batches not yet started are
    cancelled and the workers stopped at once, so a worker waiting out Yahoo's retries does not
    hold the step up; a batch cut short leaves nothing behind but its spool pieces (removed with
    the spool) and a rolled-back transaction."""
    if processes <= 1:
        yield None
        return
    pool = WorkerPool(processes - 1)
    try:
        yield pool
    except BaseException:
        pool.stop()
        raise
    pool.close()


def run_batches(pool: WorkerPool | None, work: Callable[[Job], Result], jobs: Iterable[Job],
                here: Callable[[Job], Result] | None = None, ahead: int = 2) -> Iterator[Result]:
    """`work(job)` for every job, results in the jobs' order.

    Without a pool every job is worked here, by `here` (or `work`), one after another. With one,
    each worker that is up holds at most `ahead` queued jobs, and the step's own process works
    the next job itself (with `here`) whenever it would otherwise wait; `here=None` leaves every
    job to the workers. A result that is ready before its turn waits in memory (results are
    small: the batches' rows are spooled). The first error cancels the jobs not yet started and
    is raised."""
    if pool is None:
        for job in jobs:
            yield (here or work)(job)
        return
    if not WORK_HERE:
        here = None
    pending = iter(enumerate(jobs))
    done: dict[int, Result] = {}  # worked here, waiting for their turn
    queued: dict[int, Future] = {}
    turn = 0
    exhausted = False

    def take() -> tuple[int, Job] | None:
        nonlocal exhausted
        if exhausted:
            return None
        taken = next(pending, None)
        exhausted = taken is None
        return taken

    def raise_failure() -> None:
        failed = next((f for f in queued.values() if f.done() and f.exception() is not None), None)
        if failed is not None:
            for other in queued.values():
                other.cancel()
            raise failed.exception()

    while True:
        raise_failure()
        if turn in done:
            yield done.pop(turn)
            turn += 1
            continue
        if turn in queued and queued[turn].done() and queued[turn].exception() is None:
            yield queued.pop(turn).result()
            turn += 1
            continue
        # The step's own process takes the next job before the workers are given theirs: a step
        # with one job left never waits for a worker (which may still be starting).
        mine = take() if here is not None else None
        up = pool.up() if here is not None else pool.workers
        # Each worker that is up has `ahead` jobs in hand; results that are in before their turn
        # wait, a bounded number of them.
        while (sum(not future.done() for future in queued.values()) < ahead * up
               and len(queued) + len(done) < 4 * ahead * (up + 1)):
            taken = take()
            if taken is None:
                break
            queued[taken[0]] = pool.submit(work, taken[1])
        if mine is not None:
            done[mine[0]] = here(mine[1])
            continue
        if not queued:
            return
        wait([f for f in queued.values() if not f.done()], return_when=FIRST_COMPLETED)
