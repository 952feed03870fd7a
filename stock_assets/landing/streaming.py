"""Streaming a range through the landing zone in bounded memory: ticker batches, month chunks.

A backfill of the whole market (3,000 tickers x 20 years, ~15M bars) does not fit in memory as
one frame. The daily assets therefore work on *pieces*: a piece is the rows of one ticker batch
(a few dozen tickers, `tickers_per_batch`) in one month chunk of the run's days. Pieces are kept
in a spool, a temporary folder of Arrow IPC files on local disk, and read back either

- by batch (every month of a few tickers: what cleaning needs, since the day-over-day rules
  compare each symbol's bar with its previous one), or
- by chunk (every ticker of one month: what the per-day landing files need).

So raw_quotes fetches a batch, spools it and forgets it; at the end it writes the per-day files
month by month. cleaned_prices spools the stored raw days by batch, cleans a batch at a time, and
writes its per-day files month by month. Peak memory follows the batch and the month, not the
range or the universe. The landing contract is unchanged: one Parquet file per trading day.

A batch holds about `STOCK_ASSETS_BATCH_ROWS` rows (default 250,000): its ticker count follows the
run's length (~100 tickers over 10 years, ~50 over 20, every ticker for a daily run), so memory
stays flat in both tickers and days. `STOCK_ASSETS_BATCH_TICKERS` fixes the ticker count instead.
The spool is written in Arrow IPC (no compression, no encoding): it lives for one step only.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stock_assets import settings

DATE_COLUMN = "trade_date"


_STAGE = [""]
# Seconds spent in each stage by this process, for `stock-assets bench backfill`.
STAGE_SECONDS: dict[str, float] = {}


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Name what the step is doing (fetch, land, clean, ...), for profiles (bench backfill)."""
    previous, _STAGE[0] = _STAGE[0], name
    began = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS[name] = STAGE_SECONDS.get(name, 0.0) + time.perf_counter() - began
        _STAGE[0] = previous


def current_stage() -> str:
    return _STAGE[0]


def tickers_per_batch(sessions: int) -> int:
    """How many tickers one batch holds for a run of `sessions` days (see the module docstring)."""
    fixed = settings.batch_tickers()
    if fixed is not None:
        return fixed
    return max(1, settings.batch_rows() // max(1, sessions))


def ticker_batches(symbols: Sequence[str], sessions: int, most: int | None = None) -> list[list[str]]:
    """`symbols` in order, cut into batches of `tickers_per_batch(sessions)`, or of at most `most`
    tickers (unless the batch size is set) when the work follows the tickers more than the rows."""
    size = tickers_per_batch(sessions)
    if most is not None and settings.batch_tickers() is None:
        size = min(size, most)
    return [list(symbols[i:i + size]) for i in range(0, len(symbols), size)]


def month_chunks(keys: Sequence[str]) -> list[list[str]]:
    """ISO day keys grouped by calendar month, in order."""
    chunks: dict[str, list[str]] = {}
    for key in keys:
        chunks.setdefault(key[:7], []).append(key)
    return list(chunks.values())


def day_codes(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's day as a code into the ISO days found (in order of first appearance); -1 for a
    row without a date. Only the distinct dates are formatted: a range has a few thousand days
    but millions of rows, and formatting each row was a tenth of a backfill's time."""
    column = table.column(DATE_COLUMN)
    if pa.types.is_null(column.type) or not len(column):
        return np.full(len(column), -1, dtype=np.int64), np.array([], dtype=object)
    encoded = column.combine_chunks().dictionary_encode()
    found = encoded.dictionary
    if pa.types.is_string(found.type) or pa.types.is_large_string(found.type):
        days = pc.utf8_slice_codeunits(found, 0, 10)
    else:
        days = pc.strftime(found, format="%Y-%m-%d")
    names = np.asarray(days.to_numpy(zero_copy_only=False), dtype=object)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    # Distinct values may still name one day twice (two timestamps of one date, "2024-01-02x"):
    # one code per day.
    day_index, unique_days = pd.factorize(names)
    if len(unique_days) < len(names):
        codes = np.where(codes >= 0, day_index[np.maximum(codes, 0)], -1)
        names = np.asarray(unique_days, dtype=object)
    return codes, names


def day_strings(table: pa.Table) -> np.ndarray:
    """Each row's ISO day (from a date, timestamp or string `trade_date` column); None without one."""
    codes, names = day_codes(table)
    return np.append(names, None)[codes]


def to_table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables of possibly different (compatible) schemas as one; empty pieces may be null-typed."""
    return pa.concat_tables(tables, promote_options="permissive")


class Spool:
    """Pieces (batch, chunk) of a range as Arrow IPC files in one temporary folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.pieces: set[tuple[int, int]] = set()
        self.most_rows_in_memory = 0  # the largest piece set read back at once (tests assert on it)

    def _path(self, batch: int, chunk: int) -> Path:
        return self.root / f"b{batch:06d}-c{chunk:06d}.arrow"

    def put(self, batch: int, chunk: int, table: pa.Table) -> None:
        """Store one piece (an empty table is not stored)."""
        if not table.num_rows:
            return
        if (batch, chunk) in self.pieces:
            raise ValueError(f"Piece (batch {batch}, chunk {chunk}) is already spooled")
        with pa.OSFile(str(self._path(batch, chunk)), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        self.pieces.add((batch, chunk))

    def put_by_chunk(self, batch: int, table: pa.Table, chunks: Sequence[Sequence[str]]) -> None:
        """A batch's rows over the whole range, cut into the month chunks (`month_chunks`) they fall in."""
        if not table.num_rows:
            return
        chunk_of_day = {day: index for index, days in enumerate(chunks) for day in days}
        codes_of_rows, uniques = day_codes(table)
        outside = sorted(str(day) for day in uniques if day not in chunk_of_day)
        if (codes_of_rows < 0).any():
            outside.insert(0, "None")
        if outside:
            raise ValueError(f"Rows dated outside the partitions being written: {outside[:5]}")
        codes = np.array([chunk_of_day[day] for day in uniques], dtype=np.int64)[codes_of_rows]
        order = np.argsort(codes, kind="stable")
        table, codes = table.take(order), codes[order]
        bounds = np.searchsorted(codes, np.arange(len(chunks) + 1))
        for chunk in range(len(chunks)):
            if bounds[chunk + 1] > bounds[chunk]:
                self.put(batch, chunk, table.slice(bounds[chunk], bounds[chunk + 1] - bounds[chunk]))

    def _read(self, batch: int, chunk: int) -> pa.Table:
        with pa.OSFile(str(self._path(batch, chunk)), "rb") as source:
            return pa.ipc.open_file(source).read_all()

    def _gather(self, keys: list[tuple[int, int]]) -> pa.Table | None:
        if not keys:
            return None
        table = concat([self._read(batch, chunk) for batch, chunk in sorted(keys)])
        self.most_rows_in_memory = max(self.most_rows_in_memory, table.num_rows)
        return table

    def of_chunk(self, chunk: int) -> list[tuple[int, int]]:
        """The pieces of one chunk (what a worker reading that chunk is given)."""
        return sorted(key for key in self.pieces if key[1] == chunk)

    def of_batch(self, batch: int) -> list[tuple[int, int]]:
        """The pieces of one batch."""
        return sorted(key for key in self.pieces if key[0] == batch)

    def batches(self) -> list[int]:
        return sorted({batch for batch, _ in self.pieces})

    def batch(self, batch: int) -> pa.Table | None:
        """Every chunk of one batch, in chunk order (None when the batch has no rows)."""
        return self._gather([key for key in self.pieces if key[0] == batch])

    def chunk(self, chunk: int) -> pa.Table | None:
        """Every batch of one chunk, in batch order (None when the chunk has no rows)."""
        return self._gather([key for key in self.pieces if key[1] == chunk])


# A spool folder this old belongs to a step that was killed (no step streams for a day): removed.
STALE_SPOOL_S = 24 * 3600


@contextlib.contextmanager
def spool(name: str) -> Iterator[Spool]:
    """A spool in a fresh temporary folder on local disk, removed afterwards (and the stale
    folders of killed steps with it)."""
    from stock_assets import settings

    parent = settings.state_dir() / "spool"
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_spools(parent)
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    try:
        yield Spool(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def remove_stale_spools(parent: Path, older_than_s: float = STALE_SPOOL_S) -> list[Path]:
    """Remove spool folders under `parent` untouched for `older_than_s`; returns them."""
    cutoff = time.time() - older_than_s
    removed = []
    for folder in parent.iterdir():
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except FileNotFoundError:  # removed by another step meanwhile
            continue
    return removed


def day_payloads(table: pa.Table | None, keys: Sequence[str], empty: pa.Schema) -> dict[str, bytes]:
    """One Parquet file per key: the rows of `table` on that day (an empty file with `empty`'s
    schema, or the table's, for a day without rows)."""
    if table is None or not table.num_rows:
        blank = table.slice(0, 0) if table is not None else empty.empty_table()
        return {key: parquet_bytes(blank) for key in keys}
    codes, uniques = day_codes(table)
    outside = sorted(set(uniques) - set(keys)) + (["None"] if (codes < 0).any() else [])
    if outside:
        raise ValueError(f"Rows dated outside the partitions being written: {outside[:5]}")
    if len(codes) > 1 and (np.diff(codes) < 0).any():
        order = np.argsort(codes, kind="stable")
        table, codes = table.take(order), codes[order]
    table = table.combine_chunks()
    bounds = np.searchsorted(codes, np.arange(len(uniques) + 1))
    slices = {day: table.slice(bounds[i], bounds[i + 1] - bounds[i]) for i, day in enumerate(uniques)}
    return {key: parquet_bytes(slices.get(key, table.slice(0, 0))) for key in keys}


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()
