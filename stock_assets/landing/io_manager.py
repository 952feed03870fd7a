"""An IO manager that stores daily-partitioned frames as one Parquet file per partition.

A run may cover one trading day or a whole range (single-run backfills): outputs are split by
their `trade_date` column into one file per partition key, and inputs read back every partition
of the requested range. A day with no rows (an NYSE holiday) is stored as an empty file, so that
"materialized and empty" and "never materialized" stay distinguishable. Writes are atomic: a
reader never sees half a file.

Where the files go is a small pluggable store (`stock_assets.landing.stores`), chosen by the
landing URL: a local folder by default (`<state dir>/landing`), or `s3://bucket/prefix` through
dagster-aws' `S3Resource` in production (`STOCK_ASSETS_LANDING_URL`). Both stores receive the same
Parquet bytes, so the behaviour described above is identical on either.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster_aws.s3 import S3Resource
from pydantic import Field

from stock_assets import settings
from stock_assets.landing.stores import LandingStore, LocalLandingStore, is_s3_url, open_store
from stock_assets.landing.streaming import Spool, day_payloads, parquet_bytes, to_table
from stock_assets.landing.workers import built_once

DATE_COLUMN = "trade_date"
SYMBOL_COLUMN = "symbol"
# Set on an output frame (`frame.attrs[REPLACES_SYMBOLS] = [...]`) by a run that fetched only some
# symbols (a new-ticker backfill, a restatement): their rows are replaced, the others' are kept.
REPLACES_SYMBOLS = "landing_replaces_symbols"


ALLOW_PARTIAL_INPUT = "stock_assets/allow_partial_input"
MISSING_PARTITIONS = "missing_partitions"
# An input declared with metadata {LAZY_INPUT: True} receives a `LandedRange` (the stored days,
# read a month at a time) instead of one frame of the whole range.
LAZY_INPUT = "stock_assets/lazy_input"


@dataclass(frozen=True)
class LandedDays:
    """An asset's output whose per-day files the asset already wrote (`LandingIOManager.write_days`),
    batch by batch: the IO manager stores nothing more and never holds the range in memory."""

    files: int
    rows: int


@dataclass(frozen=True)
class LandedRange:
    """The stored days of an input range, read on demand: `months()` yields one calendar month
    at a time, `frame()` the whole range at once (for small ranges)."""

    store: LandingStore
    asset_path: tuple[str, ...]
    keys: tuple[str, ...]
    missing: tuple[str, ...] = ()

    @property
    def present(self) -> list[str]:
        return self.stored(self.keys)

    def months(self) -> Iterator[tuple[list[str], pa.Table | None]]:
        """(the month's partition keys, its stored rows as one Arrow table or None when it has none)."""
        for days in self.month_chunks():
            yield days, self.table(days)

    def month_chunks(self) -> list[list[str]]:
        """The range's keys, a calendar month at a time."""
        from stock_assets.landing.streaming import month_chunks

        return month_chunks(self.keys)

    def stored(self, days: Sequence[str]) -> list[str]:
        """Those of `days` that have a stored file."""
        missing = set(self.missing)
        return [key for key in days if key not in missing]

    def table(self, days: Sequence[str] | None = None) -> pa.Table | None:
        """The stored rows of `days` (default: the whole range) as one Arrow table, None when they
        hold no rows: for readers that need no pandas (the monthly COPY)."""
        return read_days(self.store, self.asset_path, self.stored(self.keys if days is None else days))

    def frame(self, days: Sequence[str] | None = None) -> pd.DataFrame:
        """The stored rows of `days` (default: the whole range) as one frame."""
        wanted = self.stored(self.keys if days is None else days)
        payloads = self.store.read_many(self.asset_path, wanted)
        return _as_frame(from_parquet_payloads([p for p in payloads.values() if p is not None]))


def read_days(store: LandingStore, asset_path: Sequence[str], days: Sequence[str]) -> pa.Table | None:
    """The stored rows of `days` (each stored) as one Arrow table, None when they hold no rows."""
    payloads = store.read_many(tuple(asset_path), list(days))
    tables = [pq.ParquetFile(pa.BufferReader(payloads[key])).read() for key in days if payloads[key] is not None]
    del payloads
    tables = [table for table in tables if table.num_rows]
    return pa.concat_tables(tables, promote_options="permissive") if tables else None


class MissingLandingPartitions(dg.Failure):
    """An input range includes partitions that were never materialized: retrying cannot help."""

    def __init__(self, description: str) -> None:
        super().__init__(description=description, allow_retries=False)


class LandingIOManager(dg.ConfigurableIOManager):
    """Daily frames as Parquet, one object per partition, in a folder or an S3 bucket.

    Local: `<root>/<asset>/<YYYY>/<YYYY-MM-DD>.parquet`.
    S3:    `s3://<bucket>/<prefix>/<asset>/date=<YYYY-MM-DD>/part.parquet`.
    """

    url: str | None = Field(
        default=None,
        description="Landing zone location: a folder, file:///path or s3://bucket/prefix; empty means "
        "`base_dir`, else `<state dir>/landing`.",
    )
    base_dir: str | None = Field(
        default=None, description="Root folder of a local landing zone (used when `url` is empty)."
    )
    s3: S3Resource | None = Field(
        default=None,
        description="S3 access for an s3:// landing URL; region, credentials and endpoint come from the "
        "standard AWS configuration (environment, instance or task role) unless set here.",
    )

    @classmethod
    def from_environment(cls) -> LandingIOManager:
        """The landing zone named by `STOCK_ASSETS_LANDING_URL` (read at run time), or the local default."""
        url = settings.configured_landing_url()
        if url is None:
            return cls()
        return cls(url=dg.EnvVar(settings.LANDING_URL_ENV), s3=S3Resource() if is_s3_url(url) else None)

    def portable(self) -> dict[str, object]:
        """This landing zone's configuration, for the same zone in a worker process
        (stock_assets/landing/workers.py)."""
        config: dict[str, object] = {"url": self.landing_url}
        if self.s3 is not None:
            config["s3"] = {name: getattr(self.s3, name) for name in type(self.s3).model_fields}
        return config

    @classmethod
    def from_portable(cls, config: Mapping[str, object]) -> LandingIOManager:
        s3 = config.get("s3")
        return cls(url=str(config["url"]), s3=S3Resource(**s3) if s3 else None)

    @property
    def landing_url(self) -> str:
        if self.url:
            return self.url
        return self.base_dir or str(settings.state_dir() / "landing")

    def store(self) -> LandingStore:
        s3 = self.s3
        if s3 is None and is_s3_url(self.landing_url):
            s3 = S3Resource()  # the standard AWS chain: environment, shared config, task role
        return open_store(self.landing_url, s3.get_client if s3 is not None else None)

    def path_for(self, asset_key: dg.AssetKey, partition_key: str) -> Path:
        """The file of one partition in a local landing zone."""
        store = self.store()
        if not isinstance(store, LocalLandingStore):
            raise TypeError(f"The landing zone is not a local folder: {store.location}")
        return store.path_for(asset_key.path, partition_key)

    def write_days(self, asset_path: Sequence[str], payloads: Mapping[str, bytes]) -> None:
        """Store per-day Parquet payloads an asset made itself (see `LandedDays`)."""
        self.store().write_many(list(asset_path), payloads)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | LandedDays) -> None:
        if not context.has_asset_partitions:
            raise dg.DagsterInvariantViolationError("LandingIOManager stores daily-partitioned assets only")
        keys = context.asset_partition_keys
        store = self.store()
        if isinstance(obj, LandedDays):
            if obj.files != len(keys):
                raise dg.DagsterInvariantViolationError(
                    f"{context.asset_key.to_user_string()} wrote {obj.files} day files for {len(keys)} partitions")
            context.add_output_metadata({"landing_files": len(keys), "landing_root": store.location})
            return
        replaced = obj.attrs.get(REPLACES_SYMBOLS)
        if replaced is not None:  # even an empty list: replace nobody's rows, never the whole day
            by_day = {str(day): rows for day, rows in obj.groupby(obj[DATE_COLUMN].astype(str), sort=False)}
            _refuse_outside(by_day, keys)
            by_day = _merge(store, context.asset_key.path, keys, by_day, set(replaced), obj.iloc[0:0])
            payloads = {key: to_parquet_bytes(by_day.get(key, obj.iloc[0:0])) for key in keys}
        else:
            payloads = parquet_by_day(obj, keys)
        store.write_many(context.asset_key.path, payloads)
        context.add_output_metadata({"landing_files": len(keys), "landing_root": store.location})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | LandedRange:
        keys = context.asset_partition_keys
        store = self.store()
        lazy = bool((context.definition_metadata or {}).get(LAZY_INPUT))
        if lazy:
            exists = store.exists_many(context.asset_key.path, keys)
            missing = [key for key in keys if not exists[key]]
            payloads = {}
        else:
            payloads = store.read_many(context.asset_key.path, keys)
            missing = [key for key in keys if payloads[key] is None]
        # An input declared with metadata {ALLOW_PARTIAL_INPUT: True} loads the partitions that exist
        # (their keys missing listed in frame.attrs[MISSING_PARTITIONS]); it fails only when none does.
        partial = bool((context.definition_metadata or {}).get(ALLOW_PARTIAL_INPUT)) and len(missing) < len(keys)
        if missing and not partial:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise MissingLandingPartitions(
                f"{context.asset_key.to_user_string()} has no materialization for {len(missing)} of "
                f"{len(keys)} partitions needed here: {shown}. Materialize them first."
            )
        if lazy:
            return LandedRange(store, tuple(context.asset_key.path), tuple(keys), tuple(missing))
        frame = _as_frame(from_parquet_payloads([payloads[key] for key in keys if payloads[key] is not None]))
        frame.attrs[MISSING_PARTITIONS] = missing
        return frame


def _as_frame(frame: pd.DataFrame) -> pd.DataFrame:
    if DATE_COLUMN in frame:
        frame[DATE_COLUMN] = pd.to_datetime(frame[DATE_COLUMN]).dt.date
    return frame


def _merge(store: LandingStore, asset_path, keys: list[str], by_day: dict[str, pd.DataFrame], replaced: set[str],
           empty: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each day's stored rows minus the replaced symbols' rows, plus the new rows of those symbols."""
    merged = {}
    for key, payload in store.read_many(asset_path, keys).items():
        fresh = by_day.get(key, empty)
        if payload is None:
            merged[key] = fresh
            continue
        stored = pd.read_parquet(io.BytesIO(payload))
        kept = stored[~stored[SYMBOL_COLUMN].isin(replaced)] if len(stored) else stored
        parts = [frame for frame in (kept, fresh) if len(frame)]
        if not parts:  # a weekend or holiday: stays an empty day
            merged[key] = empty
            continue
        merged[key] = pd.concat(parts, ignore_index=True).sort_values(SYMBOL_COLUMN, ignore_index=True)
    return merged


def _refuse_outside(by_day: dict[str, object], keys: list[str]) -> None:
    unexpected = sorted(set(by_day) - set(keys))
    if unexpected:
        raise ValueError(f"Rows dated outside the partitions being written: {unexpected[:5]}")


def parquet_by_day(frame: pd.DataFrame, keys: list[str]) -> dict[str, bytes]:
    """One Parquet file per partition key: `frame`'s rows of that day (none for a day without rows).

    The frame becomes one Arrow table once and each day is a slice of it: converting per day
    through pandas cost ~2.5 ms a file, which a backfill of 1,800 days pays twice per asset.
    """
    table = to_table(frame)
    payloads = day_payloads(table, keys, table.schema)
    del table
    # Arrow's allocator keeps freed pages for reuse; a backfill's one big conversion is not reused.
    pa.default_memory_pool().release_unused()
    return payloads


def from_parquet_payloads(payloads: list[bytes]) -> pd.DataFrame:
    """The rows of many partition files as one frame (converted to pandas once, not per file)."""
    if not payloads:
        return pd.DataFrame()
    tables = [pq.ParquetFile(pa.BufferReader(payload)).read() for payload in payloads]
    # Empty days may carry null-typed columns, and files written by pandas' str and object columns
    # differ in string vs large_string: "permissive" promotion unifies both.
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    del tables
    pa.default_memory_pool().release_unused()
    return frame


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """One partition's file: the frame without its index, as Parquet (the same bytes on every store)."""
    return parquet_bytes(to_table(frame))


@dataclass(frozen=True)
class LandChunk:
    """One month chunk of a spool to write as day files: the spool's pieces of that chunk."""

    chunk: int
    days: Sequence[str]
    spool_root: str
    pieces: Sequence[tuple[int, int]]
    empty: pa.Schema  # the columns of a day without rows
    asset_path: Sequence[str]
    landing: Mapping[str, object] | None = None  # LandingIOManager.portable(), in a worker process


def land_chunk(job: LandChunk, landing: LandingIOManager | None = None) -> int:
    """Write one month chunk's day files (an empty file for a day without rows); returns its rows.
    `landing` in the step's own process; a worker builds its own once."""
    table = write_chunk(job, landing)
    return table.num_rows if table is not None else 0


def write_chunk(job: LandChunk, landing: LandingIOManager | None = None) -> pa.Table | None:
    """`land_chunk`, returning the chunk's rows (None for a chunk without rows)."""
    if landing is None:
        assert job.landing is not None, "a chunk landed in a worker needs the landing zone's configuration"
        landing = built_once(LandingIOManager.from_portable, job.landing)
    pieces = Spool(job.spool_root)
    pieces.pieces = set(job.pieces)
    table = pieces.chunk(job.chunk)
    landing.write_days(job.asset_path, day_payloads(table, job.days, job.empty))
    return table
