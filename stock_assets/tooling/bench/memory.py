"""Peak resident memory of the pipeline per phase of a benchmark, sampled in a background thread.

`ru_maxrss` gives one peak for one process; here each phase of a backfill (the universe, the
daily run, the monthly loads) gets its own, and within a phase each stage the streaming assets
announce (`stock_assets.landing.streaming.stage`: fetch, land, clean, ...). The steps run in this
process (Dagster's in-process executor) and in the worker processes it starts for big steps
(stock_assets/landing/workers.py): what is sampled is the sum over this process and all of its
descendants, workers included.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psutil

from stock_assets.landing.streaming import current_stage

SAMPLE_EVERY_S = 0.02
# Finding the descendants scans every process on the machine: done every so many samples only.
CHILDREN_EVERY = 25


class PhaseMemory:
    """Samples the RSS of this process and its descendants every SAMPLE_EVERY_S and keeps the
    peak of each named phase."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._phase: str | None = None
        self._peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._samples = 0
        self._children: list[psutil.Process] = []
        self.start_mb = round(self._process.memory_info().rss / 2**20, 1)
        self._thread = threading.Thread(target=self._sample, name="bench-memory", daemon=True)
        self._thread.start()

    def _record(self) -> None:
        phase = self._phase
        if phase is not None:
            stage = current_stage()
            phase = f"{phase} / {stage}" if stage else phase
            rss = self._process.memory_info().rss
            self._samples += 1
            if self._samples % CHILDREN_EVERY == 1:
                with contextlib.suppress(psutil.Error):
                    self._children = self._process.children(recursive=True)
            for child in self._children:
                with contextlib.suppress(psutil.Error):  # it ended meanwhile
                    rss += child.memory_info().rss
            if rss > self._peaks.get(phase, 0):
                self._peaks[phase] = rss

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self._record()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._phase = name
        self._record()
        try:
            yield
        finally:
            self._record()
            self._phase = None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def peak_mb(self) -> float:
        """The highest sum sampled in any phase."""
        return round(max(self._peaks.values(), default=0) / 2**20, 1)

    def peaks(self) -> dict[str, float]:
        return {name: round(rss / 2**20, 1) for name, rss in self._peaks.items()}
