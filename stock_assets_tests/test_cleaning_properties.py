"""Property-based tests of the cleaning step on generated OHLCV frames (fault: arbitrary bad input).

Whatever the input, cleaning never crashes, and its output keeps its invariants: low <= open,
close <= high; positive prices; one row per (symbol, date); every input row is either clean or
rejected with a reason, never both and never lost.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stock_assets.defs.prices.cleaning import clean_quotes
from stock_assets.defs.universe.constituents import validate_symbol

SYMBOLS = st.sampled_from(["AAPL", "MSFT", "BRK-B", "brk.b", "", "AAPL'; DROP TABLE prices;--", "ＡＡＰＬ", "X" * 50])
PRICES = st.one_of(
    st.floats(min_value=0.01, max_value=1e5, allow_nan=False),
    st.sampled_from([0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e-9, 116.18000030517578]),
)
VOLUMES = st.one_of(st.integers(min_value=0, max_value=10**10).map(float),
                    st.sampled_from([float("nan"), -5.0, float("inf")]))
DATES = st.one_of(st.dates(min_value=dt.date(2016, 1, 1), max_value=dt.date(2020, 12, 31)), st.none())

COLUMNS = ["symbol", "trade_date", "open", "high", "low", "close", "adj_close", "volume", "dividends",
           "stock_splits", "source", "fetched_at"]
ROW = st.fixed_dictionaries({
    "symbol": SYMBOLS, "trade_date": DATES, "open": PRICES, "high": PRICES, "low": PRICES, "close": PRICES,
    "adj_close": PRICES, "volume": VOLUMES,
    "dividends": st.sampled_from([0.0, 0.205, float("nan")]), "stock_splits": st.sampled_from([0.0, 4.0, 0.5]),
    "source": st.just("generated"),
    "fetched_at": st.integers(0, 10).map(lambda i: pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=i)),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ROW, min_size=0, max_size=40))
def test_cleaning_never_crashes_and_keeps_its_invariants(rows):
    raw = pd.DataFrame(rows, columns=COLUMNS)
    result = clean_quotes(raw)
    clean, rejected = result.clean, result.rejected

    # nothing lost, nothing counted twice
    assert len(clean) + len(rejected) == len(raw)
    # every rejected row carries a reason and a detail
    assert rejected["reason"].notna().all() and (rejected["reason"] != "").all()
    assert rejected["detail"].notna().all()
    if clean.empty:
        return
    prices = clean[["open", "high", "low", "close", "adj_close"]].to_numpy()
    assert np.isfinite(prices).all() and (prices > 0).all()
    assert (clean["low"] <= clean[["open", "close"]].min(axis=1)).all()
    assert (clean[["open", "close"]].max(axis=1) <= clean["high"]).all()
    assert not clean.duplicated(["symbol", "trade_date"]).any()
    assert (clean["volume"] > 0).all()
    assert all(validate_symbol(symbol) == symbol for symbol in clean["symbol"])  # Yahoo spelling, upper-cased
    assert (clean["split_ratio"] > 0).all() and clean["dividend"].notna().all()


# A calm random walk (daily moves within +-4%), then Yahoo's errors injected on chosen days.
FAULTS = st.sampled_from(["level", "spike", "garbage"])
RATIOS = st.sampled_from([2.0, 3.0, 4.0, 5.0, 10.0, 0.5, 0.25, 0.1, 100.0, 0.01])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(moves=st.lists(st.floats(min_value=-0.04, max_value=0.04), min_size=6, max_size=40),
       start=st.floats(min_value=1.0, max_value=5000.0),
       faults=st.lists(st.tuples(st.integers(min_value=1, max_value=39), FAULTS, RATIOS), max_size=3),
       split_at=st.none() | st.integers(min_value=1, max_value=39),
       history_days=st.integers(min_value=0, max_value=5))
def test_injected_split_mismatches_and_jumps_are_rejected_and_calm_bars_kept(
        moves, start, faults, split_at, history_days):
    closes = start * np.exp(np.cumsum(moves))
    days = pd.bdate_range("2019-01-02", periods=len(closes)).date
    frame = pd.DataFrame({
        "symbol": "AAPL", "trade_date": days, "open": closes / (1 + np.array(moves) / 3), "close": closes,
        "volume": 1000.0, "dividends": 0.0, "stock_splits": 0.0, "source": "generated",
        "fetched_at": pd.Timestamp("2024-01-01", tz="UTC"),
    })
    frame["high"] = frame[["open", "close"]].max(axis=1) * 1.001
    frame["low"] = frame[["open", "close"]].min(axis=1) * 0.999
    frame["adj_close"] = frame["close"]
    prices = ["open", "high", "low", "close", "adj_close"]
    if split_at is not None and split_at < len(frame):
        frame.loc[split_at, "stock_splits"] = 4.0  # a correct split: in one fetch, no jump at all
    expected = {}  # day index -> reason it must be rejected with
    for at, kind, ratio in sorted(faults):
        if at >= len(frame) or at - 1 in expected or at in expected or at + 1 in expected:
            continue
        if kind == "level":  # Yahoo's history not adjusted before `at`: a split-like jump on `at`
            frame.loc[: at - 1, prices] *= ratio
            expected[at] = "implausible_jump" if ratio in (100.0, 0.01) else "split_mismatch"
        elif kind == "spike" and at + 1 < len(frame):  # one day off by `ratio`
            frame.loc[at, prices] *= ratio
            expected[at] = "implausible_jump" if ratio in (100.0, 0.01) else "split_mismatch"
        elif kind == "garbage":
            frame.loc[at, ["high", "close"]] = 1e300
            expected[at] = "implausible_price"

    history, raw = frame.iloc[:history_days], frame.iloc[history_days:]
    result = clean_quotes(raw, history=history if len(history) else None)
    assert len(result.clean) + len(result.rejected) == len(raw)  # history rows are never returned
    rejected = {days.tolist().index(day): reason for day, reason in zip(result.rejected["trade_date"],
                                                                        result.rejected["reason"])}
    assert rejected == {at: reason for at, reason in expected.items() if at >= history_days}
