"""Backfill T tickers x D trading days through Dagster: one daily run, then monthly batches."""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import resource
import string
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import exchange_calendars
import numpy as np
import pandas as pd
import psycopg

from stock_assets import settings
from stock_assets.database.resource import PostgresResource
from stock_assets.database.urls import libpq_url, with_driver
from stock_assets.defs.partitions import range_tags
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.sectors.assets import sector_daily_performance, sector_monthly_summary
from stock_assets.defs.universe.assets import ticker_universe
from stock_assets.defs.universe.constituents import load_constituents, validate_listing
from stock_assets.defs.universe.history_assets import index_membership, sector_classification
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.instance.environment import hold_storage_connections, postgres_storage
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets.landing.streaming import STAGE_SECONDS
from stock_assets.testing.yahoo_emulator import YahooEmulator
from stock_assets.tooling.bench.memory import PhaseMemory
from stock_assets.tooling.bench.scratch import scratch_database
from stock_assets.yahoo.archive import PriceArchive

BENCH_DATABASE = "stock_assets_bench_backfill"
BENCH_DAGSTER_DATABASE = "stock_assets_bench_dagster"
DAGSTER_DATABASE_SETTINGS = {"synchronous_commit": "off"}
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# A synthetic history ends here and reaches back as many NYSE sessions as asked (5,040 sessions,
# 20 years, start in 2006): within the calendar's reach, and never in the future.
SYNTHETIC_END = dt.date(2025, 12, 31)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tickers", type=int, default=58, help="tickers (default: the 58 bundled)")
    parser.add_argument("--days", type=int, default=1214, help="trading days (default: the bundled 1,214)")
    parser.add_argument("--json", action="store_true", help="one line of JSON")


def run(args: argparse.Namespace) -> dict:
    from stock_assets.instance.environment import prepare_environment

    # The partitions start at STOCK_ASSETS_FIRST_DAY (read when the definitions are imported): a
    # history older than it is benchmarked in a pipeline process started with an earlier one.
    first = _history_start(args.tickers, args.days)
    if first < dt.date.fromisoformat(settings.first_day()):
        os.environ[settings.FIRST_DAY_ENV] = first.isoformat()
    server = prepare_environment()["STOCK_ASSETS_DATABASE_URL"]
    with scratch_database(server, BENCH_DATABASE) as url, scratch_database(
            server, BENCH_DAGSTER_DATABASE, DAGSTER_DATABASE_SETTINGS) as dagster_url, tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        return _backfill(url, dagster_url, Path(workdir), args.tickers, args.days)


def _backfill(url: str, dagster_url: str, workdir: Path, tickers: int, days: int) -> dict:
    # Yahoo is outside the pipeline, so its stand-in runs in a process of its own: the archive it
    # serves (1.26M synthetic bars for 500 x 10 years) is not counted in the pipeline's memory.
    # It answers over loopback HTTP, the way Yahoo does, and counts every request.
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    upstream = context.Process(target=_serve_upstream, args=(theirs, tickers, days), daemon=True)
    upstream.start()
    try:
        upstream_url, symbols, synthetic, first, last = ours.recv()
        # The pipeline in a process of its own too: its peak memory is the pipeline's alone, and
        # its definitions see the first day set above.
        pipeline_end, here = context.Pipe()
        pipeline = context.Process(target=_pipeline_process, args=(here, url, dagster_url, workdir, upstream_url,
                                                                   symbols, synthetic, days, first, last))
        pipeline.start()
        here.close()  # the child holds the other end: if it dies, recv() raises EOFError instead of waiting
        try:
            figures = pipeline_end.recv()
        finally:
            pipeline.join(timeout=60)
        if isinstance(figures, BaseException):
            raise figures
        ours.send("stop")
        figures.update(ours.recv())
        return figures
    finally:
        upstream.join(timeout=30)
        if upstream.is_alive():
            upstream.kill()


def _pipeline_process(conn, url, dagster_url, workdir, upstream_url, symbols, synthetic, days, first, last) -> None:
    try:
        conn.send(_run_backfill(url, dagster_url, workdir, upstream_url, symbols, synthetic, days,
                                dt.date.fromisoformat(first), dt.date.fromisoformat(last)))
    except BaseException as err:  # reported to the parent, which raises it
        conn.send(RuntimeError(f"{type(err).__name__}: {err}"))
        raise


def _history_start(tickers: int, days: int) -> dt.date:
    if tickers <= len(PriceArchive.bundled().symbols) and days <= 1214:
        return PriceArchive.bundled().first_date
    return _synthetic_sessions(days)[0]


def _synthetic_symbols(tickers: int) -> list[str]:
    """The S&P 500 symbols, then made-up US symbols (ZQAAA, ZQAAB, ...) for a bigger market."""
    real = list(load_constituents()["symbol"][:tickers])
    taken = set(real)
    made_up = (f"ZQ{a}{b}{c}" for a in string.ascii_uppercase for b in string.ascii_uppercase
               for c in string.ascii_uppercase)
    extra = [symbol for symbol in made_up if symbol not in taken][:tickers - len(real)]
    return real + [validate_listing(symbol) for symbol in extra]


def _synthetic_sessions(days: int) -> list[dt.date]:
    """The last `days` NYSE sessions up to SYNTHETIC_END."""
    calendar = exchange_calendars.get_calendar("XNYS", start="1990-01-01")
    begin = SYNTHETIC_END - dt.timedelta(days=days * 3 // 2 + 60)
    sessions = calendar.sessions_in_range(pd.Timestamp(begin), pd.Timestamp(SYNTHETIC_END))
    if len(sessions) < days:
        raise ValueError(f"--days {days}: the NYSE calendar has only {len(sessions)} sessions to offer")
    return [session.date() for session in sessions[-days:]]


def _serve_upstream(conn, tickers: int, days: int) -> None:
    """The Yahoo emulator over the bundled or a synthetic archive, until told to stop."""
    archive, symbols, synthetic = _archive(tickers, days)
    emulator = YahooEmulator(rate_per_s=1e6, burst=1000, archive=archive)
    with emulator.serve() as upstream_url:
        conn.send((upstream_url, symbols, synthetic, archive.first_date.isoformat(), archive.last_date.isoformat()))
        conn.recv()
        conn.send({
            "upstream_requests": len(emulator.requests_of("history")),
            "upstream_requests_all": len(emulator.log),
            "upstream_emulator_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        })


def _run_backfill(url, dagster_url, workdir, upstream_url, symbols, synthetic, days, first, last) -> dict:
    database = PostgresResource(url=url)
    resources = {
        "database": database,
        "quotes": QuoteClient(source="replay", database=database, upstream_url=upstream_url,
                              scope=f"bench-{uuid.uuid4().hex[:8]}", rate_per_s=0.0),
        "tickers": TickerSelection(tickers=symbols),
        "landing_io_manager": LandingIOManager(base_dir=str(workdir / "landing")),
    }
    assets = [ticker_universe, index_membership, sector_classification, raw_quotes, cleaned_prices, monthly_prices,
              sector_daily_performance, sector_monthly_summary]
    months = pd.period_range(first, last, freq="M")
    batches = [months[i:i + 12] for i in range(0, len(months), 12)]
    phases: dict[str, float] = {}
    monthly_runs: list[str] = []
    runs = 0
    memory = PhaseMemory()
    began = time.perf_counter()
    # Dagster's own storage in PostgreSQL, as dagster.yaml configures it: every partition costs
    # Dagster a few events, and their storage is part of what a backfill costs.
    with dg.instance_for_test(temp_dir=str(workdir), overrides=postgres_storage(with_driver(dagster_url, "psycopg2"))) as instance:
        hold_storage_connections(instance)
        def materialize(selection, tags=None):
            nonlocal runs
            runs += 1
            result = dg.materialize(assets, selection=selection, resources=resources, instance=instance, tags=tags,
                                    run_config=QUIET)
            assert result.success
            return result

        with memory.phase("universe"):
            materialize(["ticker_universe", "index_membership", "sector_classification"])
        phase = time.perf_counter()
        # The daily assets in one run (one single-run backfill), as the UI launches it; the memory
        # profile tells its steps apart (fetch + land, then clean + land).
        with memory.phase("daily_run"):
            daily = materialize(["raw_quotes", "cleaned_prices"],
                                range_tags(first.replace(day=1), months[-1].end_time.date()))
        phases["daily_run_s"] = time.perf_counter() - phase
        phase = time.perf_counter()
        with memory.phase("monthly_runs (load + sectors)"):
            for batch in batches:
                monthly = materialize(["monthly_prices", "sector_daily_performance", "sector_monthly_summary"],
                                      range_tags(batch[0].start_time.date(), batch[-1].start_time.date()))
                monthly_runs.append(monthly.run_id)
        phases["monthly_runs_s"] = time.perf_counter() - phase
        wall = time.perf_counter() - began
        memory.stop()
        # Read after the clock stops: Dagster reads every event of a run for its step stats (10 s
        # for a 20-year daily run), which is the benchmark's cost, not the backfill's.
        daily_steps = _step_seconds(instance, [daily.run_id])
        step_seconds = _step_seconds(instance, monthly_runs)
    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute("SELECT count(*) FROM market.prices").fetchone()[0]
    return {
        "tickers": len(symbols),
        "trading_days": days,
        "synthetic": synthetic,
        "range": f"{first}..{last}",
        "wall_s": round(wall, 2),
        "rows": rows,
        "rows_per_s": round(rows / wall),
        "runs": runs,
        "months": len(months),
        **{name: round(value, 2) for name, value in phases.items()},
        # The pipeline process and its worker processes together (sampled), or the process's own
        # peak if that is higher (a peak between two samples).
        "peak_rss_mb": max(memory.peak_mb(), round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)),
        "peak_rss_pipeline_process_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_rss_by_phase_mb": memory.peaks(),
        "seconds_by_stage": {name: round(value, 2) for name, value in STAGE_SECONDS.items()},
        "daily_run_figures": _step_figures(daily),
        "daily_run_seconds_by_step": {name: round(value, 2) for name, value in daily_steps.items()},
        "monthly_runs_seconds_by_step": {name: round(value, 2) for name, value in step_seconds.items()},
        "rss_at_start_mb": memory.start_mb,
    }


def _step_seconds(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, float]:
    """Each step's seconds, added up over the runs."""
    seconds: dict[str, float] = {}
    for run_id in run_ids:
        for stats in instance.get_run_step_stats(run_id):
            if stats.start_time and stats.end_time:
                seconds[stats.step_key] = seconds.get(stats.step_key, 0.0) + stats.end_time - stats.start_time
    return seconds


# What the daily run's steps said about themselves: how many processes worked, what went over the wire.
STEP_FIGURES = {
    "raw_quotes": ("fetch_processes", "ticker_batches", "history_requests", "cache_hits", "retries",
                   "failed_attempts", "http_429s", "tickers_failed"),
    "cleaned_prices": ("clean_processes", "ticker_batches", "rejected_rows_in_run"),
}


def _step_figures(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    figures: dict[str, dict[str, object]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        asset = materialization.asset_key.to_user_string()
        if asset in STEP_FIGURES and asset not in figures:  # the run's figures ride on every partition
            figures[asset] = {name: materialization.metadata[name].value for name in STEP_FIGURES[asset]
                              if name in materialization.metadata}
    return figures


def _archive(tickers: int, days: int) -> tuple[PriceArchive, list[str], bool]:
    """The bundled archive when it is big enough, else a synthetic one with S&P 500 symbols."""
    bundled = PriceArchive.bundled()
    if tickers <= len(bundled.symbols) and days <= 1214:
        symbols = list(bundled.symbols[:tickers])
        return bundled, symbols, False
    symbols = _synthetic_symbols(tickers)
    # ~7/5 calendar days per session, plus holidays: enough sessions, within the NYSE calendar's reach.
    sessions = _synthetic_sessions(days)
    rng = np.random.default_rng(7)
    shape = (len(sessions), len(symbols))
    close = (20 + rng.random(len(symbols)) * 300) * np.exp(np.cumsum(rng.normal(0.0003, 0.02, shape), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.01, shape))
    prices = pd.DataFrame({
        "symbol": np.tile(symbols, len(sessions)),
        "date": np.repeat(pd.to_datetime(sessions).to_numpy(), len(symbols)),
        "open": open_.ravel(),
        "high": (np.maximum(open_, close) * (1 + rng.random(shape) * 0.02)).ravel(),
        "low": (np.minimum(open_, close) * (1 - rng.random(shape) * 0.02)).ravel(),
        "close": close.ravel(),
        "adj_close": close.ravel(),
        "volume": rng.integers(10_000, 50_000_000, close.size),
    })
    splits = pd.DataFrame({"symbol": pd.Series(dtype=str), "date": pd.Series(dtype="datetime64[ns]"),
                           "numerator": pd.Series(dtype=float), "denominator": pd.Series(dtype=float)})
    return PriceArchive(prices, splits), symbols, True

