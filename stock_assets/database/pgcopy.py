"""PostgreSQL binary COPY payloads built with numpy, a chunk at a time.

psycopg's `Copy.write_row()` converts values one row at a time (about 0.4M rows/s here); COPY
itself ingests several times that. Encoding whole columns at once with numpy structured arrays
keeps Python out of the per-row path: rows are grouped by the byte length of their text values
(few distinct lengths: symbols are 1-6 characters), and each group becomes one fixed-layout array
whose `tobytes()` is exactly the COPY binary row format.

Format reference: https://www.postgresql.org/docs/current/sql-copy.html (Binary Format).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_PG_EPOCH = np.datetime64("2000-01-01", "D")
_FIXED = {"float8": (">f8", 8), "int8": (">i8", 8), "int4": (">i4", 4), "date": (">i4", 4)}


def encode_rows(frame: pd.DataFrame, columns: list[tuple[str, str]],
                dates_within: tuple[dt.date, dt.date] | None = None) -> bytes:
    """COPY BINARY row data (no header/trailer) for `frame[columns]`; NULLs are refused.

    `dates_within=(first, end)` also refuses any `date` value outside [first, end): the check runs
    on the day numbers the encoding needs anyway, so it costs no second pass over the column.
    """
    if frame.empty:
        return b""
    prepared: dict[str, np.ndarray] = {}
    text_lengths: list[np.ndarray] = []
    text_columns: list[str] = []
    for name, pg_type in columns:
        series = frame[name]
        if pg_type == "text":
            codes, uniques = pd.factorize(series, sort=False)
            _refuse_nulls(name, (codes < 0).any())
            encoded = np.array([str(u).encode("utf-8") for u in uniques], dtype=object)
            lengths = np.fromiter((len(b) for b in encoded), dtype=np.int32, count=len(encoded))
            prepared[name] = encoded[codes]
            text_lengths.append(lengths[codes])
            text_columns.append(name)
        elif pg_type == "date":
            days = _day_numbers(name, series)
            if dates_within is not None:
                _refuse_outside(name, days, dates_within)
            prepared[name] = (days - _PG_EPOCH).astype(np.int32)
        elif pg_type == "float8":
            values = series.to_numpy(dtype="<f8", na_value=np.nan)
            _refuse_nulls(name, np.isnan(values).any())
            prepared[name] = values
        elif pg_type in _FIXED:
            _refuse_nulls(name, series.isna().any())
            prepared[name] = series.to_numpy(dtype=_FIXED[pg_type][0].replace(">", "<"))
        else:
            raise ValueError(f"unsupported COPY type {pg_type!r} for column {name!r}")

    # One group per combination of text byte lengths: each group has a fixed row layout.
    # Packing the lengths into one integer lets a hash factorize find the groups in O(rows).
    packed = np.zeros(len(frame), dtype=np.int64)
    for lengths in text_lengths:
        packed = packed * (int(lengths.max()) + 1) + lengths
    group_of_row, group_keys = pd.factorize(packed)
    parts = []
    for group_index in range(len(group_keys)):
        rows = np.flatnonzero(group_of_row == group_index)
        first = rows[0]
        text_length = {name: int(lengths[first]) for name, lengths in zip(text_columns, text_lengths)}
        fields = [("field_count", ">i2")]
        for name, pg_type in columns:
            fields.append((f"{name}__len", ">i4"))
            if pg_type != "text":
                fields.append((name, _FIXED[pg_type][0]))
            elif text_length[name]:  # an empty string is its length (0) and no bytes
                fields.append((name, f"S{text_length[name]}"))
        block = np.empty(len(rows), dtype=np.dtype(fields))
        block["field_count"] = len(columns)
        for name, pg_type in columns:
            values = prepared[name][rows]
            if pg_type == "text":
                block[f"{name}__len"] = text_length[name]
                if text_length[name]:
                    block[name] = values.astype(f"S{text_length[name]}")
            else:
                block[f"{name}__len"] = _FIXED[pg_type][1]
                block[name] = values
        parts.append(block.tobytes())
    return b"".join(parts)


def copy_payloads(chunks: Iterable[pd.DataFrame], columns: list[tuple[str, str]],
                  dates_within: tuple[dt.date, dt.date] | None = None) -> Iterator[bytes]:
    """A complete COPY BINARY stream (header, rows chunk by chunk, trailer); see `encode_rows`."""
    yield HEADER
    for chunk in chunks:
        data = encode_rows(chunk, columns, dates_within)
        if data:
            yield data
    yield TRAILER


class DatesOutOfRange(ValueError):
    """Rows whose date falls outside the range a COPY was given (`dates_within`)."""

    def __init__(self, column: str, count: int, first: dt.date, end: dt.date) -> None:
        super().__init__(f"{count} rows have {column} outside {first} .. {end - dt.timedelta(days=1)}")
        self.column, self.count, self.first, self.end = column, count, first, end


def _day_numbers(name: str, series: pd.Series) -> np.ndarray:
    """The column as datetime64[D]; an object column of dates converts its few distinct values only."""
    if series.dtype.kind == "M":
        days = series.to_numpy(dtype="datetime64[D]")
        _refuse_nulls(name, np.isnat(days).any())
        return days
    codes, uniques = pd.factorize(series, sort=False)
    _refuse_nulls(name, (codes < 0).any())
    distinct = pd.to_datetime(pd.Index(uniques)).to_numpy(dtype="datetime64[D]")
    _refuse_nulls(name, np.isnat(distinct).any())
    return distinct[codes]


def _refuse_nulls(name: str, has_nulls: bool) -> None:
    if has_nulls:
        raise ValueError(f"column {name!r} holds NULLs; COPY encoding refuses them")


def _refuse_outside(name: str, days: np.ndarray, within: tuple[dt.date, dt.date]) -> None:
    first, end = np.datetime64(within[0], "D"), np.datetime64(within[1], "D")
    if days.min() < first or days.max() >= end:
        raise DatesOutOfRange(name, int(((days < first) | (days >= end)).sum()), within[0], within[1])
