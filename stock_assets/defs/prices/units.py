"""Prices in major currency units: pence become pounds, so every cleaned price is in its currency.

Yahoo quotes some listings in a minor unit (`GBp`/`GBX` pence in London, `ZAc` cents in
Johannesburg, `ILA` agorot in Tel Aviv; stock_assets/markets.py MINOR_UNITS): a cleaned price is
divided by 100 and its `currency` is the major one (GBP, ZAR, ILS). Dividends follow the price's
unit (Yahoo reports a GBp listing's dividends in pence as well). Rows fetched before the currency
was recorded (no `currency` column, or an empty one) came from US listings only, so they are USD.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stock_assets.markets import major_units

UNKNOWN_CURRENCY = "USD"
_SCALED = ["open", "high", "low", "close", "adj_close", "dividends"]


def in_major_units(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with prices (and dividends) in major units and `currency` the major currency."""
    quoted = frame["currency"] if "currency" in frame else pd.Series(None, index=frame.index, dtype="object")
    quoted = quoted.where(quoted.notna() & (quoted.astype(str) != ""), UNKNOWN_CURRENCY).astype(str)
    # Per distinct code, then spread by position: a batch has a handful of currencies and
    # millions of rows.
    codes, distinct = pd.factorize(quoted)
    units = [major_units(code) for code in distinct]
    major = np.array([unit[0] for unit in units], dtype=object)[codes]
    divisor = np.array([unit[1] for unit in units], dtype="float64")[codes]
    out = frame.assign(currency=pd.Series(major, index=frame.index, dtype=quoted.dtype))
    if (divisor != 1).any():
        for column in _SCALED:
            if column in out:
                out[column] = pd.to_numeric(out[column], errors="coerce") / divisor
    return out
