"""Day-over-day rules: a bar's move from the symbol's previous bar must be explained.

Yahoo's `close` is split-adjusted *as of the fetch*: history fetched after a split is divided by
its ratio, so inside one fetch a correctly reported split shows no jump at all, only the event.
A bar fetched before the split (yesterday's daily run) is not adjusted: from it to the split day's
bar the close moves by 1/ratio. So the move a bar should show depends on when its previous bar
was fetched (`fetched_at`, in New York time):

- previous bar fetched on or after the split day: adjusted, expected move x1;
- previous bar fetched before it: not adjusted, expected move x1/ratio;
- no fetch time known (the previous bar came without one): either is accepted.

"Previous bar" is the symbol's previous bar as Yahoo delivered it, among the rows that passed the
per-row rules: inside one frame the row before, and for a run's first day the bars of the
sessions before it (the asset passes them in as `history`, from the landing zone; when none are
stored, at the start of the history, the first day has nothing to be compared with). Its close is
what Yahoo said the day before, whether or not that bar was later rejected for its own move, so
a misdated split is caught on both of its days (the move without the event, the event without
the move). A one-day outlier (a bar that jumps and whose next bar jumps back) is not used as the
next bar's reference, so one bad bar does not also reject the good bar after it (nor do two bad
bars with one good bar between them).

The residual move (observed / expected) is then judged:

- `split_mismatch`: open and close both moved by a split ratio (2, 3, 4, 5, ... or 1/2, 1/3, ...,
  see SPLIT_RATIOS) within SPLIT_TOLERANCE, on a day whose own range (high / low) stays under
  SPLIT_MAX_RANGE: a split Yahoo did not report on that day, or reported without applying it (the
  bar is an ordinary day's bar, rescaled). A crash is told apart by its open and its range: OXY's
  -53% close of 2020-03-09 (x0.466, inside the x1/2 band) opened at -42% and ranged 59% that day.
  On the bundled 70,412 real bars (58 S&P 500 names, 2016-2020, March 2020 included) no bar
  matches; a real crash that opened, closed and traded within a split ratio's band would be
  rejected, and shows in the rejections table for the operator to confirm.
- `implausible_jump`: otherwise a move of JUMP_LIMIT times or more, up or down (a 100x pence/pound
  mix-up, a price off by orders of magnitude). The largest real move in the bundled data is -53%.

A lasting change of level is rejected on the day it happens, not after: the bars that follow
agree with their own previous bar and are kept (so the stored series has a gap and a break on
that day, named in the rejections table). That is deliberate for split-like breaks, where the
wrong side is as often the older history (Yahoo not adjusting it) as the newer bars, and where
rejecting everything after the break would block a ticker until Yahoo corrects itself; for a
lasting x100 unit switch it means the later bars are stored in the new unit (see the README).

Everything here is vectorised over the whole frame (one sort, grouped shifts), no per-row Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from fractions import Fraction

import numpy as np
import pandas as pd

from stock_assets.defs.partitions import MARKET_TIMEZONE
from stock_assets.defs.prices.units import in_major_units

# Split ratios (new shares per old share) a move is compared with, and their reverse splits.
SPLIT_RATIOS = (3 / 2, 2, 5 / 2, 3, 4, 5, 6, 7, 8, 10, 15, 20, 25, 30, 50)
# Half-width of the band around a ratio, in log terms (~10%): wide enough for the day's own move
# on top of the split, while no real bar of the bundled data falls in any band (measured).
SPLIT_TOLERANCE = 0.1
# A split mismatch is an ordinary day rescaled: its range (high / low) stays under this factor.
SPLIT_MAX_RANGE = 1.25
# A move of this factor or more (x100 or x0.01 included) is never a trading day's move.
JUMP_LIMIT = 10.0

# Every ratio and reverse ratio as a log move, sorted, and the midpoints between neighbours.
_SIGNED = np.sort(np.concatenate([np.log(SPLIT_RATIOS), -np.log(SPLIT_RATIOS)]))
_SIGNED_MIDPOINTS = (_SIGNED[1:] + _SIGNED[:-1]) / 2


def continuity_flags(
    frame: pd.DataFrame, candidates: pd.Series, confirmed: Iterable[tuple[str, dt.date]] = ()
) -> tuple[pd.Series, pd.Series]:
    """(reason, detail) for the rows of `frame` whose move from their previous bar is unexplained.

    `candidates` marks the rows that passed the per-row rules (one per symbol and day); only they
    are compared, and only they are used as previous bars. `confirmed` (symbol, day) moves were
    checked by an operator (market.confirmed_moves): never flagged. Rows not flagged get <NA>.
    """
    reason = pd.Series(pd.NA, index=frame.index, dtype="object")
    detail = pd.Series(pd.NA, index=frame.index, dtype="object")
    needed = [c for c in ("symbol", "trade_date", "open", "high", "low", "close", "stock_splits", "fetched_at",
                          "currency") if c in frame]
    rows = frame.loc[candidates, needed]
    if rows.empty:
        return reason, detail
    # Compared in major units: a listing Yahoo moved from GBp to GBP is not a x1/100 move.
    rows = in_major_units(rows)
    rows["split"] = _split_ratio(rows)
    rows["fetched_day"] = _fetched_day(rows)
    rows["day"] = pd.to_datetime(rows["trade_date"])
    # Symbols as integer codes once: the grouped shifts below are plain numpy over sorted rows.
    rows["code"] = pd.factorize(rows["symbol"])[0]
    rows = rows.sort_values(["code", "day"], kind="stable")
    code = rows["code"].to_numpy()
    keys = [(str(symbol), pd.Timestamp(day)) for symbol, day in confirmed]
    accepted = pd.MultiIndex.from_arrays([rows["symbol"], rows["day"]]).isin(keys) if keys else None

    first = _judge(rows, code, reference=np.ones(len(rows), dtype=bool), accepted=accepted)
    # A one-day outlier: flagged, and the next bar's move cancels it. Not a reference for the next bar.
    same_next = np.append(code[1:] == code[:-1], False)
    flagged, residual = first["flagged"].to_numpy(), first["residual"].to_numpy()
    next_flagged = np.append(flagged[1:], False) & same_next
    next_residual = np.append(residual[1:], 0.0)
    outlier = flagged & next_flagged & (np.abs(residual + next_residual) < SPLIT_TOLERANCE)
    # The bar that jumps back is the outlier's return, not an outlier itself, even when the bar
    # after it jumps again: with bad bars two days apart (up, back, up, back) every other bar is
    # the outlier. In order, over the few candidates only.
    for position in np.flatnonzero(outlier):
        if position > 0 and outlier[position - 1] and code[position - 1] == code[position]:
            outlier[position] = False
    judged = _judge(rows, code, reference=~outlier, accepted=accepted) if outlier.any() else first
    judged.loc[outlier] = first.loc[outlier]  # an outlier itself is judged against its own previous bar

    flagged = judged[judged["flagged"]]
    if flagged.empty:
        return reason, detail
    # Strings for the few flagged rows only (a million-row string column costs most of a second).
    flagged = flagged.assign(kind=np.where(flagged["split_like"], "split_mismatch", "implausible_jump"))
    reason[flagged.index] = flagged["kind"].to_numpy()
    detail[flagged.index] = [_explain(row) for row in rows.loc[flagged.index].join(
        flagged[["previous_close", "previous_day", "previous_fetched", "expected", "matched", "kind"]]
    ).itertuples()]
    return reason, detail


def _judge(rows: pd.DataFrame, code: np.ndarray, reference: np.ndarray,
           accepted: np.ndarray | None = None) -> pd.DataFrame:
    """Each row's move from the previous reference bar of its symbol, and whether it is unexplained.

    `rows` are sorted by symbol `code`, then day; `reference` marks the rows usable as previous bars;
    `accepted` the rows whose move an operator confirmed (never flagged)."""
    # Index of the last reference row strictly before each row, if it is of the same symbol.
    positions = np.arange(len(rows))
    last = np.maximum.accumulate(np.where(reference, positions, -1))
    before = np.concatenate([[-1], last[:-1]])
    has_previous = (before >= 0) & (code[np.maximum(before, 0)] == code)
    source = np.maximum(before, 0)

    def previous(column: str) -> pd.Series:
        values = rows[column].to_numpy()[source]
        return pd.Series(values, index=rows.index).where(has_previous)

    previous_close = previous("close")
    previous_day = previous("day")
    previous_fetched = previous("fetched_day")

    move = np.log(rows["close"] / previous_close)
    opening = np.log(rows["open"] / previous_close)
    split_log = np.log(rows["split"])
    # Which basis the previous bar is in (see the module docstring): adjusted, not adjusted, unknown.
    unadjusted = (rows["split"] != 1) & (previous_fetched < rows["day"])
    adjusted = (rows["split"] == 1) | (previous_fetched >= rows["day"])
    unknown = ~unadjusted & ~adjusted
    closer_unadjusted = (move + split_log).abs() < move.abs()
    expected = np.where(unadjusted | (unknown & closer_unadjusted), -split_log, 0.0)
    residual = move - expected
    residual_open = opening - expected

    # Both open and close within the band of the same ratio (or reverse ratio): the ratio nearest
    # to the close's move, then the open's distance to it (a sorted lookup, not a row x ratio table).
    close_move, open_move = residual.to_numpy(), residual_open.to_numpy()
    position = np.clip(np.searchsorted(_SIGNED_MIDPOINTS, np.nan_to_num(close_move)), 0, len(_SIGNED) - 1)
    nearest = _SIGNED[position]
    calm = (rows["high"] / rows["low"]).to_numpy() < SPLIT_MAX_RANGE
    split_like = calm & (np.abs(close_move - nearest) < SPLIT_TOLERANCE) & (
        np.abs(open_move - nearest) < SPLIT_TOLERANCE)
    matched = np.where(split_like, nearest, np.nan)
    implausible = ~split_like & (residual.abs() >= np.log(JUMP_LIMIT)).to_numpy()
    flagged = (split_like | implausible) & has_previous
    if accepted is not None:
        flagged &= ~accepted
    return pd.DataFrame({
        "flagged": flagged,
        "split_like": split_like,
        "matched": matched,
        "residual": residual.fillna(0.0),
        "expected": expected,
        "previous_close": previous_close,
        "previous_day": previous_day,
        "previous_fetched": previous_fetched,
    }, index=rows.index)


def _split_ratio(frame: pd.DataFrame) -> pd.Series:
    splits = pd.to_numeric(frame.get("stock_splits", pd.Series(0.0, index=frame.index)), errors="coerce")
    splits = splits.fillna(0.0)
    return splits.where(np.isfinite(splits) & (splits > 0), 1.0).astype("float64")


def _fetched_day(frame: pd.DataFrame) -> pd.Series:
    """The New York calendar day each row was fetched on (NaT when unknown)."""
    if "fetched_at" not in frame:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    fetched = pd.to_datetime(frame["fetched_at"], utc=True, errors="coerce")
    return fetched.dt.tz_convert(MARKET_TIMEZONE).dt.tz_localize(None).dt.normalize().astype("datetime64[ns]")


def _ratio(log_value: float) -> str:
    """A factor as a split ratio reads: x4, x1/5, x3/2."""
    fraction = Fraction(float(np.exp(log_value))).limit_denominator(10)
    return f"x{fraction.numerator}" if fraction.denominator == 1 else f"x{fraction.numerator}/{fraction.denominator}"


def _explain(row) -> str:
    previous = f"the previous close {row.previous_close:.6g} ({row.previous_day:%Y-%m-%d})"
    factor = row.close / row.previous_close
    if row.kind == "implausible_jump":
        hint = " (a unit mix-up such as pence/pounds?)" if abs(abs(np.log(factor)) - np.log(100)) < 0.05 else ""
        return (f"close {row.close:.6g} is x{factor:.4g} {previous}; no split explains a move of "
                f"x{JUMP_LIMIT:g} or more{hint}")
    if row.split == 1:
        return (f"close {row.close:.6g} moved {_ratio(row.matched)} from {previous}, open {row.open:.6g} too, "
                "like a split, but Yahoo reports no split on this day")
    split = Fraction(float(row.split)).limit_denominator(1000)
    event = f"Yahoo reports a {split.numerator}:{split.denominator} split on this day"
    if pd.isna(row.previous_fetched):
        return (f"{event}; the close should move {_ratio(-np.log(row.split))} from {previous} (fetched before "
                f"the split) or not at all (fetched after it), but it moved x{factor:.4g} (close {row.close:.6g})")
    if row.expected != 0:
        return (f"{event}; {previous} was fetched before it, so the close should move "
                f"{_ratio(row.expected)}, but it moved x{factor:.4g} (close {row.close:.6g})")
    return (f"{event}, but the close moved x{factor:.4g} from {previous} in the same adjusted history "
            f"(close {row.close:.6g}): the history is not adjusted for the split")
