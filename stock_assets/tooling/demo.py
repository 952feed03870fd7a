"""`stock-assets demo`: materialize the whole graph for a range of the bundled data, then summarise.

The runs go through the Dagster instance configured by dagster.yaml (PostgreSQL storage), so they
show up afterwards in the UI (`make dev`) with their lineage, metadata and checks.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import dagster as dg
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.partitions import month_bounds, range_tags
from stock_assets.instance.dead_runs import held_slots, process_tags, reap_dead_runs
from stock_assets.instance.environment import hold_storage_connections
from stock_assets.tooling.signals import terminate_on_sigterm

DEFAULT_START = dt.date(2020, 1, 1)
DEFAULT_END = dt.date(2020, 6, 30)



@dataclass(frozen=True)
class SectorFigures:
    sector: str
    members: int
    trading_days: int
    equal_weight_return: float
    dollar_volume_weighted_return: float | None
    advancer_share: float
    dollar_volume: float


def run_demo(start: dt.date = DEFAULT_START, end: dt.date = DEFAULT_END, echo=print,
             debug: bool = False) -> list[SectorFigures]:
    """Materialize universe, daily prices (one run), months and sectors (one run) for [start, end].

    The range is widened to whole months: a month's partition is loaded from all of its days. The
    month before the range is loaded too (when the partitions reach back that far): the range's
    first session's return is over that month's last close. The summary covers [start, end] only.
    """
    from stock_assets.definitions import defs
    from stock_assets.defs.partitions import monthly_partitions, trading_day_partitions

    start, end = resolve_range(start, end)
    start, end = start.replace(day=1), month_bounds(end.replace(day=1).isoformat())[1] - dt.timedelta(days=1)
    instance = dg.DagsterInstance.get()
    hold_storage_connections(instance)
    load_from = previous_month(start)
    for dead in reap_dead_runs(instance):
        echo(f"note: {dead.describe()}; marked it failed and freed its pool slots", flush=True)
    days = trading_day_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(load_from.isoformat(), end.isoformat())
    )
    months = monthly_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(load_from.isoformat(), end.replace(day=1).isoformat())
    )
    steps = [
        ("ticker_universe", "universe_job", {}),
        (f"raw_quotes + cleaned_prices for {len(days)} days {days[0]}..{days[-1]}", "daily_prices_job",
         range_tags(days[0], days[-1])),
        (f"monthly_prices + sector aggregations for {len(months)} months", "monthly_warehouse_job",
         range_tags(months[0], months[-1])),
    ]
    for number, (label, job_name, tags) in enumerate(steps, start=1):
        echo(f"[{number}/{len(steps)}] {label} ...", flush=True)
        job = defs.resolve_job_def(job_name)
        wait_for_pools(instance, job_pools(job), echo)
        began = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags={**tags, "dagster/from": "stock-assets demo", **process_tags()},
            # Without --debug a failure reaches the user as one line (the CLI's), not as Dagster's
            # console log of every step's traceback; the run's own logs keep everything.
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING" if debug else "CRITICAL"}}}},
        )
        partitions: dict[str, int] = {}
        rows: dict[str, object] = {}
        for event in result.get_asset_materialization_events():
            materialization = event.event_specific_data.materialization
            name = materialization.asset_key.to_user_string()
            partitions[name] = partitions.get(name, 0) + 1
            # A run over many partitions: `rows_in_run` is its total (dagster/row_count is per partition).
            count = materialization.metadata.get("rows_in_run") or materialization.metadata.get("dagster/row_count")
            rows[name] = count.value if count else "-"
        for name, count in partitions.items():
            echo(f"      {name:<26} partitions={count:<4} rows={rows[name]}")
        echo(f"      done in {time.perf_counter() - began:.1f}s (run {result.run_id[:8]})")

    database = PostgresResource()  # the URL in use: configured, or the embedded server
    figures = sector_figures(database, start, end)
    echo("")
    echo(format_summary(figures, start, end, prices_rows(database, start, end)))
    return figures


def previous_month(start: dt.date) -> dt.date:
    """The first day of the month before `start`'s, or `start`'s month when the partitions begin there."""
    from stock_assets.defs.partitions import FIRST_DAY

    before = (start.replace(day=1) - dt.timedelta(days=1)).replace(day=1)
    return max(before, dt.date.fromisoformat(FIRST_DAY))


def job_pools(job: dg.JobDefinition) -> list[str]:
    return sorted({node.definition.pool for node in job.graph.nodes if getattr(node.definition, "pool", None)})


def wait_for_pools(instance: dg.DagsterInstance, pools: list[str], echo=print, poll_s: float = 2.0) -> float:
    """Wait until each pool in `pools` has a free slot, saying once what holds it; returns seconds waited.

    Dagster's in-process executor would otherwise wait for the slot itself, silently. Runs whose
    process is gone are reaped on every poll, so a slot held by a killed run is freed, not waited on.
    SIGINT and SIGTERM interrupt the wait (the CLI turns them into exit status 130/143).
    """
    with terminate_on_sigterm():
        return _wait(instance, pools, echo, poll_s)


def _wait(instance: dg.DagsterInstance, pools: list[str], echo, poll_s: float) -> float:
    began = time.monotonic()
    told: set[tuple[str, tuple[str, ...]]] = set()
    while True:
        reap_dead_runs(instance)
        busy = [held for held in held_slots(instance, pools) if held.limit is not None and held.claimed >= held.limit]
        if not busy:
            return time.monotonic() - began
        for held in busy:
            if (held.pool, held.run_ids) not in told:
                told.add((held.pool, held.run_ids))
                runs = ", ".join(_run_label(instance, run_id) for run_id in held.run_ids) or "unknown runs"
                echo(f"      waiting for a `{held.pool}` pool slot ({held.claimed}/{held.limit} held by {runs}); "
                     "Ctrl-C to stop", flush=True)
        time.sleep(poll_s)


def _run_label(instance: dg.DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    return f"run {run_id[:8]} of {run.job_name} ({run.status.value})" if run else f"run {run_id[:8]}"


class DemoRangeError(ValueError):
    """The requested demo range cannot be materialized."""


def resolve_range(start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
    """The range the user asked for, checked before anything starts; defaults fill what was not typed.

    A bound the user typed is named as typed (`--start`/`--end`); a default that no longer fits
    the other bound follows it (`--start 2020-08-03` alone runs to the end of that month).
    """
    from stock_assets import settings
    from stock_assets.defs.partitions import FIRST_DAY

    first_day = dt.date.fromisoformat(FIRST_DAY)
    if start is not None and end is not None and end < start:
        raise DemoRangeError(f"--end {end} is before --start {start}")
    if start is None:
        start = DEFAULT_START if end is None or end >= DEFAULT_START else end.replace(day=1)
    if end is None:
        end = DEFAULT_END if start <= DEFAULT_END else month_bounds(start.replace(day=1).isoformat())[1] - dt.timedelta(days=1)
    for flag, day in (("--start", start), ("--end", end)):
        if day < first_day:
            raise DemoRangeError(f"{flag} {day} is before the first partition ({FIRST_DAY})")
    if settings.quote_source() == "replay":
        from stock_assets.yahoo.archive import PriceArchive

        archive = PriceArchive.configured()
        for flag, day in (("--start", start), ("--end", end)):
            if day > archive.last_date:
                raise DemoRangeError(
                    f"{flag} {day} is after the replay archive's last day ({archive.last_date}); "
                    f"it covers {archive.first_date}..{archive.last_date}")
        if end < archive.first_date:
            raise DemoRangeError(f"--end {end} is before the replay archive's first day ({archive.first_date})")
    else:
        today = dt.date.today()
        for flag, day in (("--start", start), ("--end", end)):
            if day > today:
                raise DemoRangeError(f"{flag} {day} is in the future (today is {today})")
    return start, end


def sector_figures(database: PostgresResource, start: dt.date, end: dt.date) -> list[SectorFigures]:
    """Per-sector figures over [start, end], compounded from market.sector_daily_performance."""
    query = text(
        """
        SELECT sector,
               max(members),
               count(*),
               exp(sum(ln(1 + equal_weight_return))) - 1,
               exp(sum(ln(1 + dollar_volume_weighted_return))) - 1,
               sum(advancers)::double precision / nullif(sum(advancers + decliners + unchanged), 0),
               sum(dollar_volume)
        FROM market.sector_daily_performance
        WHERE trade_date BETWEEN :start AND :end
        GROUP BY sector
        ORDER BY 4 DESC
        """
    )
    with database.begin() as conn:
        return [SectorFigures(*row) for row in conn.execute(query, {"start": start, "end": end}).all()]


def prices_rows(database: PostgresResource, start: dt.date, end: dt.date) -> int:
    with database.begin() as conn:
        return conn.execute(
            text("SELECT count(*) FROM market.prices WHERE trade_date BETWEEN :start AND :end"),
            {"start": start, "end": end},
        ).scalar_one()


def format_summary(figures: list[SectorFigures], start: dt.date, end: dt.date, rows: int) -> str:
    lines = [
        f"Sector summary {start}..{end}: {rows:,} daily bars in market.prices",
        f"{'sector':<24} {'stocks':>6} {'days':>5} {'equal-wt':>9} {'dollar-vw':>10} {'advancing':>10} {'dollar volume':>14}",
    ]
    for f in figures:
        vw = f"{f.dollar_volume_weighted_return:+.2%}" if f.dollar_volume_weighted_return is not None else "-"
        lines.append(
            f"{f.sector:<24} {f.members:>6} {f.trading_days:>5} {f.equal_weight_return:>+9.2%} {vw:>10} "
            f"{f.advancer_share:>10.1%} {_dollars(f.dollar_volume):>14}"
        )
    return "\n".join(lines)


def _dollars(value: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if abs(value) >= size:
            return f"${value / size:,.2f}{unit}"
    return f"${value:,.0f}"

