"""Cleaning raw quotes: validate, normalise, and keep every rejected row with its reason.

Rules, applied in order (a row is rejected for the first rule it breaks; the detail names the
column(s) and values that broke it):

| reason                | rule                                                                   |
|-----------------------|------------------------------------------------------------------------|
| malformed_symbol      | symbol is not a well-formed Yahoo symbol                               |
| missing_date          | no trade date                                                          |
| missing_price         | a price is missing (NaN); detail e.g. "close is NaN"                   |
| missing_volume        | the volume is missing (NaN)                                            |
| non_finite_value      | a price or the volume is infinite; detail e.g. "high is inf"           |
| non_positive_price    | a price is zero or negative, or so small it rounds to zero (6 decimals)|
| implausible_price     | a price at or above MAX_PRICE (1e7 in its quoted unit): 1e300 etc.     |
| negative_volume       | volume below zero                                                      |
| zero_volume_bar       | volume is zero: no S&P 500 stock goes a full session without a trade,  |
|                       | so it is a bad bar (e.g. PFE 2019-11-18, O=H=L=C, volume 0). yfinance  |
|                       | reports a volume Yahoo left out as 0 too, the detail says so           |
| ohlc_inconsistent     | low > min(open, close) or high < max(open, close), beyond float noise  |
| conflicting_duplicate | two or more rows for the same (symbol, trade date) whose open, high,   |
|                       | low, close or volume differ: every one is rejected, the detail shows   |
|                       | each row's values and fetch time (nobody knows which one is right)     |
| duplicate             | a second row for the same (symbol, trade date) that agrees with the    |
|                       | latest fetch (an identical re-fetch, or adj_close restated by a later  |
|                       | dividend): the latest fetch wins; not counted by `rejected_share`      |
| split_mismatch        | open and close moved by a split ratio (x2, x3, x1/4, x1/5, ...) from   |
|                       | the previous bar without a matching split event, or a split event came |
|                       | without its move (see continuity.py for what "previous bar" means)     |
| implausible_jump      | the close moved x10 or more (or x1/10 or less) from the previous bar   |
|                       | and no split explains it (x100: the pence/pound mix-up)                |

The last two compare each bar with the symbol's previous bar (the previous sessions' raw bars,
`history`, stand in for the bar before a run's first day); they reject, rather than only warn,
because a bar they catch would put a false -80% or x100 return into every series computed
from the table. The rejection names the rule, the move and the previous close, for the operator
to refetch, or to confirm in `market.confirmed_moves` (then those two rules leave the bar alone).

yfinance's own `repair=True` is not used: measured on the bundled recorded data (every ticker's
whole history through the replay, `python -m stock_assets.tooling.bench.repair`), it rewrote adj_close
on 3,204 of 70,412 correct bars and deleted real dividends (ABBV 1.07 on 2019-10-14, WMT 0.51
on 2017-12-07); with a one-day 100x XOM bar it multiplied the correct bar before it by 100 instead
of fixing the bad one; a 1e300 close made it fail (it needs scikit-learn besides scipy); only
the misdated split was repaired (the history before the -80% move divided by 5). A pipeline
that must not store wrong data cannot let a heuristic rewrite prices silently: cleaning rejects
with a reason and the operator decides.

Normalisation: symbols upper-cased (Yahoo's spelling otherwise kept: OCDO.L stays OCDO.L), prices
in major currency units (GBp pence become GBP pounds, `currency` says which), prices rounded to 6 decimals (Yahoo's
float32 noise: 116.18000030517578 becomes 116.18), high/low widened by at most the rounding noise
so OHLC stays consistent, volume as an integer, splits as a ratio (1 when none). Columns the raw
frame carries beyond the landing schema are ignored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stock_assets.defs.prices.continuity import continuity_flags
from stock_assets.defs.prices.units import in_major_units
from stock_assets.defs.universe.constituents import InvalidSymbolError, validate_symbol

PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close"]
CLEAN_COLUMNS = [
    "symbol", "trade_date", "open", "high", "low", "close", "adj_close", "volume",
    "dividend", "split_ratio", "source", "currency",
]
REJECTED_COLUMNS = [
    "trade_date", "symbol", "reason", "detail", "open", "high", "low", "close", "adj_close", "volume",
]
PRICE_DECIMALS = 6
# Relative slack for OHLC comparisons: float32 prices carry ~1e-7 relative noise.
OHLC_TOLERANCE = 1e-6
# No listed share trades at ten million in its quoted unit (BRK-A: ~700,000 USD; LG H&H peaked near
# 1,700,000 KRW in 2021; London pence and Tokyo yen quotes stay far below): at or above it, garbage.
MAX_PRICE = 1e7
# Two rows for one symbol and day conflict when one of these differs (adj_close alone may change
# between fetches: Yahoo restates it with every later dividend).
CONFLICT_COLUMNS = ["open", "high", "low", "close", "volume"]


@dataclass(frozen=True)
class CleaningResult:
    clean: pd.DataFrame
    rejected: pd.DataFrame

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.rejected["reason"].value_counts().sort_index().items()}


def clean_quotes(
    raw: pd.DataFrame, history: pd.DataFrame | None = None, confirmed_moves: Iterable[tuple[str, dt.date]] = ()
) -> CleaningResult:
    """Split raw landing rows into clean prices and rejected rows (with reasons).

    `history`: raw rows of the sessions before `raw`'s first day (same schema), the previous bars
    the day-over-day rules compare a run's first day with. They are checked like `raw`'s rows but
    never returned, neither clean nor rejected. `confirmed_moves`: (symbol, day) pairs an operator
    confirmed (market.confirmed_moves), which the day-over-day rules leave alone.
    """
    # pandas 3 copies on write: assigning columns below never touches `raw`, so no upfront copy.
    frame = raw.reset_index(drop=True)
    context = None
    if history is not None and len(history) and len(frame):
        # Only the sessions before the run: a day of the run is judged from the run's own rows.
        first_day = pd.to_datetime(frame["trade_date"], errors="coerce").min()
        earlier = history[pd.to_datetime(history["trade_date"], errors="coerce") < first_day]
        columns = [c for c in frame.columns if c in earlier.columns]
        frame = pd.concat([frame, earlier[columns]], ignore_index=True)
        context = pd.Series(np.arange(len(frame)) >= len(raw), index=frame.index)
    for column in PRICE_COLUMNS + ["volume"]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    reason = pd.Series(pd.NA, index=frame.index, dtype="object")
    detail = pd.Series(pd.NA, index=frame.index, dtype="object")

    def reject(mask: pd.Series, why: str, explain) -> None:
        fresh = mask & reason.isna()
        reason[fresh] = why
        if fresh.any():
            detail[fresh] = [explain(row) for row in frame[fresh].itertuples(index=False)]

    # A few hundred distinct symbols over a million rows: validate each distinct value once.
    distinct = frame["symbol"].drop_duplicates()
    # (object dtype also when empty: an empty float column would clash with the string one in Parquet)
    symbols = frame["symbol"].map(dict(zip(distinct, distinct.map(_normalised_symbol)))).astype("object")
    reject(symbols.isna(), "malformed_symbol", lambda r: f"symbol {str(r.symbol)[:40]!r} is not a Yahoo symbol")
    frame["symbol"] = symbols.fillna(frame["symbol"].astype(str).str.slice(0, 40))

    reject(frame["trade_date"].isna(), "missing_date", lambda r: "no trade date")

    prices = frame[PRICE_COLUMNS]
    reject(prices.isna().any(axis=1), "missing_price", lambda r: _named(r, PRICE_COLUMNS, "is NaN", np.isnan))
    reject(frame["volume"].isna(), "missing_volume", lambda r: "volume is NaN (Yahoo sent no volume)")
    values = frame[PRICE_COLUMNS + ["volume"]].to_numpy()
    reject(pd.Series(np.isinf(values).any(axis=1), index=frame.index), "non_finite_value",
           lambda r: _named(r, PRICE_COLUMNS + ["volume"], "is infinite", np.isinf))

    reject((prices.round(PRICE_DECIMALS) <= 0).any(axis=1), "non_positive_price",
           lambda r: _named(r, PRICE_COLUMNS, "is not positive", lambda v: round(v, PRICE_DECIMALS) <= 0))
    reject((prices >= MAX_PRICE).any(axis=1), "implausible_price",
           lambda r: _named(r, PRICE_COLUMNS, f"is at or above the ceiling {MAX_PRICE:g}", lambda v: v >= MAX_PRICE))
    reject(frame["volume"] < 0, "negative_volume", lambda r: f"volume is {r.volume:g}")
    reject(frame["volume"] == 0, "zero_volume_bar",
           lambda r: f"volume is 0 (no trade, or a volume Yahoo left out, which yfinance reports as 0) "
                     f"with {_ohlc(r)}")

    slack = frame["high"].abs() * OHLC_TOLERANCE
    body_low = frame[["open", "close"]].min(axis=1)
    body_high = frame[["open", "close"]].max(axis=1)
    inconsistent = (frame["low"] > body_low + slack) | (frame["high"] < body_high - slack) | (
        frame["low"] > frame["high"] + slack)
    reject(inconsistent, "ohlc_inconsistent",
           lambda r: f"{_ohlc(r)} violates low <= open, close <= high")

    _reject_duplicates(frame, reason, detail)
    moved, why = continuity_flags(frame, reason.isna(), confirmed_moves)
    fresh = moved.notna() & reason.isna()
    reason[fresh], detail[fresh] = moved[fresh], why[fresh]

    if context is not None:
        keep = ~context
        frame, reason, detail = frame[keep], reason[keep], detail[keep]
    clean = _normalise(frame[reason.isna()])
    rejected = frame[reason.notna()].assign(reason=reason[reason.notna()], detail=detail[reason.notna()])
    return CleaningResult(clean=clean, rejected=rejected[REJECTED_COLUMNS].reset_index(drop=True))


def _ohlc(row) -> str:
    """"o=37.28 h=37.28 l=37.28 c=37.28": 7 significant digits, a float32's worth (no 37.279998779)."""
    return f"o={row.open:.7g} h={row.high:.7g} l={row.low:.7g} c={row.close:.7g}"


def _named(row, columns: list[str], what: str, test) -> str:
    """"close is NaN, volume is NaN": the columns of `row` for which `test(value)` holds."""
    named = [f"{column} {what}" for column in columns if test(getattr(row, column))]
    return ", ".join(named) if named else what


def _reject_duplicates(frame: pd.DataFrame, reason: pd.Series, detail: pd.Series) -> None:
    """Among the rows still standing, one per (symbol, trade_date): conflicting rows all rejected,
    agreeing ones collapsed onto the latest fetch."""
    keys = ["symbol", "trade_date"]
    standing = frame.loc[reason.isna(), keys]  # key columns only: a million rows, a handful repeated
    repeated = standing.duplicated(keys, keep=False)
    if not repeated.any():
        return
    group = frame.loc[standing.index[repeated]]
    compared = group[CONFLICT_COLUMNS].round(PRICE_DECIMALS)
    conflicting = compared.groupby([group["symbol"], group["trade_date"]]).transform("nunique").gt(1).any(axis=1)
    if conflicting.any():
        rows = group[conflicting]
        for _, same in rows.groupby(keys, sort=False):
            text = _conflict(same)
            reason[same.index] = "conflicting_duplicate"
            detail[same.index] = text
    agreeing = group[~conflicting]
    if len(agreeing):
        order = agreeing.sort_values("fetched_at", kind="stable") if "fetched_at" in agreeing else agreeing
        latest = order.drop_duplicates(keys, keep="last").set_index(keys)
        earlier = order[order.duplicated(keys, keep="last")]
        reason[earlier.index] = "duplicate"
        detail[earlier.index] = [
            "another row for this symbol and date was fetched later" + (
                f" with the same prices; adj_close restated from {r.adj_close:.6g} to "
                f"{latest.loc[(r.symbol, r.trade_date), 'adj_close']:.6g}"
                if abs(r.adj_close - latest.loc[(r.symbol, r.trade_date), "adj_close"]) > 10 ** -PRICE_DECIMALS
                else " with the same values")
            for r in earlier.itertuples(index=False)]


def _conflict(rows: pd.DataFrame) -> str:
    """"2 rows disagree: close 10.1 (fetched 2024-01-01 00:00 UTC) vs 10.7 (fetched ...)"."""
    differing = [c for c in CONFLICT_COLUMNS if rows[c].round(PRICE_DECIMALS).nunique() > 1]
    fetched = (pd.to_datetime(rows["fetched_at"], utc=True, errors="coerce").dt.strftime("%Y-%m-%d %H:%M UTC")
               if "fetched_at" in rows else pd.Series("unknown time", index=rows.index))
    versions = [", ".join(f"{c} {getattr(r, c):.6g}" for c in differing) + f" (fetched {when})"
                for r, when in zip(rows.itertuples(index=False), fetched)]
    return f"{len(rows)} rows for this symbol and date disagree: " + " vs ".join(versions)


def _normalised_symbol(value: object) -> str | None:
    try:
        return validate_symbol(value)
    except InvalidSymbolError:
        return None


def _normalise(rows: pd.DataFrame) -> pd.DataFrame:
    # Pence to pounds (GBp -> GBP) and the like, before rounding (defs/prices/units.py).
    out = in_major_units(rows)  # a fresh frame; copy-on-write keeps `frame` unchanged
    out[PRICE_COLUMNS] = out[PRICE_COLUMNS].round(PRICE_DECIMALS)
    # Rounding noise may leave open/close a hair outside high/low: widen the range to contain them.
    out["high"] = out[["high", "open", "close"]].max(axis=1)
    out["low"] = out[["low", "open", "close"]].min(axis=1)
    out["volume"] = out["volume"].round().astype("int64")
    out["dividend"] = pd.to_numeric(out.get("dividends", 0.0), errors="coerce").fillna(0.0).round(PRICE_DECIMALS)
    splits = pd.to_numeric(out.get("stock_splits", 0.0), errors="coerce").fillna(0.0)
    out["split_ratio"] = splits.where(splits > 0, 1.0)
    if "source" not in out:
        out["source"] = "unknown"
    return out[CLEAN_COLUMNS].sort_values(["trade_date", "symbol"], kind="stable", ignore_index=True)
