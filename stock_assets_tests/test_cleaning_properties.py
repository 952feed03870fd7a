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
    assert clean["symbol"].str.fullmatch(r"[A-Z][A-Z0-9]{0,5}(-[A-Z]{1,2})?").all()
    assert (clean["split_ratio"] > 0).all() and clean["dividend"].notna().all()
