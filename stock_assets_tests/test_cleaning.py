"""Cleaning rules on real bundled bars and on hand-made bad rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from stock_assets.defs.prices.cleaning import CLEAN_COLUMNS, clean_quotes
from stock_assets.yahoo.archive import PriceArchive


def _raw(symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
    bars = PriceArchive.bundled().bars(symbol, start, end)
    return pd.DataFrame({
        "symbol": symbol,
        "trade_date": bars["date"],
        "open": bars["open"], "high": bars["high"], "low": bars["low"], "close": bars["close"],
        "adj_close": bars["adj_close"], "volume": bars["volume"].astype("float64"),
        "dividends": 0.0, "stock_splits": 0.0, "source": "replay",
        "fetched_at": pd.Timestamp("2024-01-01", tz="UTC"),
    })


def test_pfe_zero_volume_bad_bar_is_rejected():
    raw = _raw("PFE", dt.date(2019, 11, 14), dt.date(2019, 11, 21))
    result = clean_quotes(raw)
    assert list(result.rejected["trade_date"]) == [dt.date(2019, 11, 18)]
    assert list(result.rejected["reason"]) == ["zero_volume_bar"]
    assert dt.date(2019, 11, 18) not in set(result.clean["trade_date"])
    assert len(result.clean) == len(raw) - 1


def test_real_data_is_normalised_not_rejected():
    raw = _raw("AAPL", dt.date(2020, 8, 1), dt.date(2020, 9, 1))
    result = clean_quotes(raw)
    assert result.rejected.empty
    assert list(result.clean.columns) == CLEAN_COLUMNS
    # float32 noise is gone: 6 decimals at most
    assert (result.clean["close"].round(6) == result.clean["close"]).all()
    assert result.clean["volume"].dtype == np.int64
    assert (result.clean["split_ratio"] == 1.0).all()


def _row(**overrides):
    base = {"symbol": "AAPL", "trade_date": dt.date(2020, 1, 2), "open": 10.0, "high": 11.0, "low": 9.0,
            "close": 10.5, "adj_close": 10.4, "volume": 1000.0, "dividends": 0.0, "stock_splits": 0.0,
            "source": "test", "fetched_at": pd.Timestamp("2024-01-01", tz="UTC")}
    return {**base, **overrides}


@pytest.mark.parametrize(
    "overrides, reason, detail",
    [
        ({"close": float("nan")}, "missing_price", "close is NaN"),
        ({"open": float("nan"), "adj_close": float("nan")}, "missing_price", "open is NaN, adj_close is NaN"),
        ({"high": float("inf")}, "non_finite_value", "high is infinite"),
        ({"volume": float("inf")}, "non_finite_value", "volume is infinite"),
        ({"volume": float("nan")}, "missing_volume", "volume is NaN"),
        ({"low": -1.0}, "non_positive_price", "low is not positive"),
        ({"adj_close": 0.0}, "non_positive_price", "adj_close is not positive"),
        ({"high": 1e300, "close": 1e300}, "implausible_price", "high is at or above the ceiling 1e+07, close is"),
        ({"volume": -5.0}, "negative_volume", "volume is -5"),
        ({"volume": 0.0}, "zero_volume_bar", "volume is 0"),
        ({"low": 10.2}, "ohlc_inconsistent", "l=10.2"),  # low above open
        ({"high": 10.4}, "ohlc_inconsistent", "h=10.4"),  # high below close
        ({"symbol": "AAPL'; DROP TABLE prices;--"}, "malformed_symbol", "is not a Yahoo symbol"),
        ({"trade_date": None}, "missing_date", "no trade date"),
    ],
)
def test_each_rule_rejects_with_its_reason_and_names_what_was_wrong(overrides, reason, detail):
    result = clean_quotes(pd.DataFrame([_row(), _row(**{"symbol": "MSFT", **overrides})]))
    assert list(result.clean["symbol"]) == ["AAPL"]
    assert list(result.rejected["reason"]) == [reason]
    assert detail in result.rejected["detail"].iloc[0]


def test_conflicting_duplicates_are_all_rejected_showing_both_values():
    old = _row(close=10.1, fetched_at=pd.Timestamp("2024-01-01", tz="UTC"))
    new = _row(close=10.7, fetched_at=pd.Timestamp("2024-01-02", tz="UTC"))
    other = _row(symbol="MSFT")
    result = clean_quotes(pd.DataFrame([new, old, other]))
    assert list(result.clean["symbol"]) == ["MSFT"]  # nobody knows which AAPL bar is right
    assert list(result.rejected["reason"]) == ["conflicting_duplicate"] * 2
    assert sorted(result.rejected["close"]) == [10.1, 10.7]
    detail = result.rejected["detail"].iloc[0]
    assert detail == ("2 rows for this symbol and date disagree: close 10.7 (fetched 2024-01-02 00:00 UTC) "
                      "vs close 10.1 (fetched 2024-01-01 00:00 UTC)")
    assert set(result.rejected["detail"]) == {detail}


def test_identical_refetches_collapse_onto_the_latest_fetch():
    old = _row(adj_close=10.2, fetched_at=pd.Timestamp("2024-01-01", tz="UTC"))
    new = _row(adj_close=10.4, fetched_at=pd.Timestamp("2024-01-02", tz="UTC"))  # a later dividend restated it
    same = _row(adj_close=10.4, fetched_at=pd.Timestamp("2024-01-03", tz="UTC"))
    result = clean_quotes(pd.DataFrame([same, new, old]))
    assert list(result.clean["adj_close"]) == [10.4]
    assert list(result.rejected["reason"]) == ["duplicate", "duplicate"]
    details = dict(zip(result.rejected["adj_close"], result.rejected["detail"]))
    assert details[10.2].endswith("adj_close restated from 10.2 to 10.4")
    assert details[10.4].endswith("with the same values")


def test_rounding_noise_never_breaks_ohlc():
    # open a hair above high (float32 noise): widened, not rejected
    result = clean_quotes(pd.DataFrame([_row(open=11.0000001, high=11.0)]))
    assert result.rejected.empty
    row = result.clean.iloc[0]
    assert row["low"] <= min(row["open"], row["close"]) <= max(row["open"], row["close"]) <= row["high"]


def test_splits_and_dividends_ride_along():
    result = clean_quotes(pd.DataFrame([_row(dividends=0.205, stock_splits=4.0)]))
    assert result.clean.iloc[0]["dividend"] == pytest.approx(0.205)
    assert result.clean.iloc[0]["split_ratio"] == 4.0


def test_a_price_that_rounds_to_zero_is_rejected_not_stored_as_zero():
    """Found by the property test: adj_close 1e-9 is positive, but rounds to 0 at 6 decimals,
    which market.prices' CHECK (adj_close > 0) would refuse at load time."""
    raw = _raw("AAPL", dt.date(2020, 8, 3), dt.date(2020, 8, 6))
    raw.loc[1, "adj_close"] = 1e-9
    result = clean_quotes(raw)
    assert list(result.rejected["reason"]) == ["non_positive_price"]
    assert list(result.rejected["trade_date"]) == [raw.loc[1, "trade_date"]]
    assert (result.clean[["open", "high", "low", "close", "adj_close"]] > 0).all().all()
