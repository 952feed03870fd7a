"""Whether a split or dividend seen in a new fetch changes the stored history.

Yahoo adjusts the past when a corporate action goes ex: every earlier `close` (and open, high, low)
is divided by a split's ratio, every earlier `adj_close` is multiplied by a dividend's step
1 - D / close (the day before the ex-date). History fetched before the action no longer matches
what Yahoo says now, history fetched after it does. Which one is stored shows at the boundary of
the fetch that saw the action: the last stored bar before its first day (an earlier fetch) against
the first bar of the new one.

- The adjustment ratio adj_close / close of the stored bar over that of the new bar must be the
  step of a dividend going ex on the new bar's day (or 1 without one). Any other step means the
  stored adj_close misses (or has extra) dividend adjustments.
- For a split in the new fetch, the stored close over the new bar's open must be nearer 1 (the
  stored prices are split-adjusted) than the split's ratio (they are not).

A ticker is refetched only when one of the two says the stored values are stale; nothing is
refetched when the stored rows already reflect the action (the replay, a history fetched later).
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from stock_assets.landing.stores import LandingStore

RAW = dg.AssetKey("raw_quotes")
# The recorded prices went through float32 (ratio noise ~2e-6); the smallest dividend step is ~1e-4.
STEP_TOLERANCE = 5e-5
# How far around the boundary the stored bars are looked for (calendar days: weekends, holidays).
SEARCH_DAYS = 14


@dataclass(frozen=True)
class Bar:
    day: dt.date
    open: float
    close: float
    adj_close: float
    dividends: float


class StoredDays:
    """The raw landing days a sensor tick looks at, each read once."""

    def __init__(self, store: LandingStore) -> None:
        self.store = store
        self._days: dict[dt.date, pd.DataFrame | None] = {}

    def bar(self, symbol: str, day: dt.date) -> Bar | None:
        if day not in self._days:
            payload = self.store.read(RAW.path, day.isoformat())
            self._days[day] = pd.read_parquet(io.BytesIO(payload)) if payload is not None else None
        frame = self._days[day]
        if frame is None or not len(frame) or "symbol" not in frame:
            return None
        rows = frame[frame["symbol"] == symbol]
        if not len(rows):
            return None
        row = rows.iloc[0]
        return Bar(day, float(row["open"]), float(row["close"]), float(row["adj_close"]),
                   float(row.get("dividends", 0.0) or 0.0))

    def last_before(self, symbol: str, day: dt.date) -> Bar | None:
        for back in range(1, SEARCH_DAYS + 1):
            bar = self.bar(symbol, day - dt.timedelta(days=back))
            if bar is not None:
                return bar
        return None

    def first_from(self, symbol: str, day: dt.date) -> Bar | None:
        for ahead in range(SEARCH_DAYS):
            bar = self.bar(symbol, day + dt.timedelta(days=ahead))
            if bar is not None:
                return bar
        return None


def stale_reason(before: Bar, first: Bar, split_ratios: Iterable[float] = ()) -> str | None:
    """Why the stored bar `before` does not match the newly fetched `first`, or None if it does."""
    if min(before.close, before.adj_close, first.close, first.adj_close, first.open) <= 0:
        return None  # a bad bar: cleaning's business, nothing to compare
    expected = 1.0 - first.dividends / before.close if first.dividends > 0 else 1.0
    step = (before.adj_close / before.close) / (first.adj_close / first.close)
    if abs(step / expected - 1.0) > STEP_TOLERANCE:
        return (f"adj_close/close steps by {step:.6f} from {before.day} to {first.day}, "
                f"the dividends imply {expected:.6f}")
    jump = before.close / first.open
    for ratio in split_ratios:
        if ratio > 0 and ratio != 1 and abs(math.log(jump / ratio)) < abs(math.log(jump)):
            return (f"close {before.close:g} on {before.day} against open {first.open:g} on {first.day}: "
                    f"not adjusted for the {ratio:g}:1 split")
    return None
