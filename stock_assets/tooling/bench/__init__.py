"""Benchmarks run by `stock-assets bench <name>`; each prints one JSON object.

Each benchmark is a module with `configure(parser)` (its arguments) and `run(args) -> dict`
(the figures). Add a new one to BENCHMARKS. Benchmarks are never part of the test suite.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module; the module is imported only when its benchmark is listed or run.
BENCHMARKS: dict[str, str] = {
    "load": "stock_assets.tooling.bench.load",
    "ratelimit": "stock_assets.tooling.bench.ratelimit",
    "backfill": "stock_assets.tooling.bench.backfill",
}

# One line each for `stock-assets bench --help`, so listing them imports none of them (the modules
# import Dagster and the whole graph: seconds). Their docstrings are each subcommand's description.
SUMMARIES: dict[str, str] = {
    "load": "load N generated OHLCV rows: the project's loader against COPY, to_sql and executemany",
    "ratelimit": "P processes share one Yahoo rate limit: measured rate and 429s against the emulator",
    "backfill": "backfill T tickers x D trading days through Dagster: one daily run, then monthly batches",
}


def benchmark_module(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])
