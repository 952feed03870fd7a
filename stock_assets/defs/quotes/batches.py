"""One ticker batch of a streamed raw_quotes run: fetched, cut to its own sessions, counted, spooled.

`fetch_batch` is the whole of a batch's work, done in the step's process or in a worker process
(stock_assets/landing/workers.py) alike: what it returns is small (the fetch report, the rows
per day, the pieces it spooled), the bars themselves stay on disk in the spool.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

from stock_assets.defs.metadata import add_partition_metadata, distinct_by_day, rows_by_day
from stock_assets.defs.partitions import is_trading_day
from stock_assets.defs.quotes.resources import FetchReport, QuoteClient
from stock_assets.landing.streaming import Spool, to_table
from stock_assets.landing.workers import built_once


# A fetch's work follows its requests more than its rows (yfinance reads each answer in about 20 ms
# of interpreter time), so a daily run of the whole universe is cut into batches too, for the
# step's worker processes to share (stock_assets/landing/workers.py).
FETCH_BATCH_TICKERS = 50


@dataclass(frozen=True)
class FetchJob:
    """A batch to fetch: its symbols over [first, end), each kept on its own sessions only."""

    number: int
    symbols: Sequence[str]
    first: dt.date
    end: dt.date
    own_sessions: Mapping[str, Set[dt.date]]
    keys: Sequence[str]  # the run's partition keys
    chunks: Sequence[Sequence[str]]  # the run's month chunks (streaming.month_chunks)
    spool_root: str
    refresh_cache: bool
    client: dict[str, object] | None = None  # QuoteClient.portable(), in a worker process


@dataclass
class FetchedBatch:
    """What a fetched batch reports back; its bars are in the spool."""

    report: FetchReport
    figures: DayFigures
    dividends: int
    splits: int
    pieces: set[tuple[int, int]]


def fetch_batch(job: FetchJob, quotes: QuoteClient | None = None) -> FetchedBatch:
    """Fetch one batch (one request per ticker for the whole range), keep each listing's own
    sessions, count it and spool it by month chunk. `quotes` in the step's own process; a worker
    builds the client from `job.client` once and keeps it for its later batches."""
    if quotes is None:
        assert job.client is not None, "a batch fetched in a worker needs the client's configuration"
        quotes = built_once(QuoteClient.from_portable, job.client)
    frame, report = quotes.fetch(list(job.symbols), job.first, job.end, refresh_cache=job.refresh_cache)
    frame = own_bars(frame, job.symbols, job.own_sessions)
    figures = DayFigures(job.keys)
    figures.add(frame)
    spool = Spool(job.spool_root)
    spool.put_by_chunk(job.number, to_table(frame), job.chunks)
    return FetchedBatch(report, figures, int((frame["dividends"] > 0).sum()), int((frame["stock_splits"] > 0).sum()),
                        spool.pieces)


def own_bars(frame: pd.DataFrame, symbols, own_sessions) -> pd.DataFrame:
    """Bars inside the run's window, each on a session of its own exchange."""
    wanted = set(symbols)
    symbol_codes, found_symbols = pd.factorize(frame["symbol"])
    day_codes, found_days = pd.factorize(frame["trade_date"])
    # Which (symbol, day) pairs are kept, judged once per distinct pair: a batch has a few dozen
    # symbols and a few thousand days, but a million rows.
    allowed = np.zeros((len(found_symbols) + 1, len(found_days) + 1), dtype=bool)
    judged: dict[int, np.ndarray] = {}  # listings of one calendar share their sessions: judged once
    for row, symbol in enumerate(found_symbols):
        days = own_sessions.get(symbol) if symbol in wanted else None
        if days:
            if id(days) not in judged:
                session_set = days if isinstance(days, (set, frozenset)) else set(days)
                judged[id(days)] = np.fromiter((day in session_set for day in found_days), dtype=bool,
                                               count=len(found_days))
            allowed[row, :-1] = judged[id(days)]
    # A boolean Series, not a list: an empty list would select no *columns* of an empty frame (a
    # batch in which every ticker failed, e.g. delisted members).
    keep = pd.Series(allowed[symbol_codes, day_codes], index=frame.index, dtype=bool)
    return frame[keep]


def corporate_actions(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Splits and dividends in a fetched frame: [{symbol, date, kind, value}], date-ordered."""
    actions = []
    for kind, column in (("split", "stock_splits"), ("dividend", "dividends")):
        hits = frame[frame[column] > 0]
        actions += [{"symbol": row.symbol, "date": str(row.trade_date), "kind": kind, "value": float(getattr(row, column))}
                    for row in hits.itertuples(index=False)]
    return sorted(actions, key=lambda a: (a["date"], a["symbol"], a["kind"]))


class DayFigures:
    """Each day's own numbers (see stock_assets/defs/metadata.py), added up batch by batch: rows,
    symbols (batches never share a symbol) and the splits and dividends going ex that day."""

    def __init__(self, keys: list[str]):
        self.keys = list(keys)
        self.rows_by_day = dict.fromkeys(self.keys, 0)
        self.symbols_by_day = dict.fromkeys(self.keys, 0)
        self.actions_by_day: dict[str, list[dict[str, object]]] = {}
        self.rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        self.rows += len(frame)
        for key, count in rows_by_day(frame, self.keys).items():
            self.rows_by_day[key] += count
        for key, count in distinct_by_day(frame, self.keys, "symbol").items():
            self.symbols_by_day[key] += count
        for action in corporate_actions(frame):
            self.actions_by_day.setdefault(str(action["date"])[:10], []).append(action)

    def absorb(self, other: DayFigures) -> None:
        """Add another batch's figures (counted in a worker process) to these."""
        self.rows += other.rows
        for key in self.keys:
            self.rows_by_day[key] += other.rows_by_day[key]
            self.symbols_by_day[key] += other.symbols_by_day[key]
        for day, actions in other.actions_by_day.items():
            self.actions_by_day.setdefault(day, []).extend(actions)

    def record(self, context: dg.AssetExecutionContext, sessions: list) -> None:
        session_keys = {day.isoformat() for day in sessions}
        add_partition_metadata(context, {
            key: {"dagster/row_count": self.rows_by_day[key], "symbols": self.symbols_by_day[key],
                  "nyse_session": is_trading_day(dt.date.fromisoformat(key)),
                  "exchange_session": key in session_keys,  # a session of some tracked listing's exchange
                  "corporate_actions": dg.MetadataValue.json(sorted(
                      self.actions_by_day.get(key, []), key=lambda a: (a["symbol"], a["kind"])))}
            for key in self.keys
        })
