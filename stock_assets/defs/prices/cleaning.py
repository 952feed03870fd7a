"""Cleaning raw quotes: validate, normalise, and keep every rejected row with its reason.

Rules, applied in order (a row is rejected for the first rule it breaks):

| reason                | rule                                                                   |
|-----------------------|------------------------------------------------------------------------|
| malformed_symbol      | symbol is not a well-formed Yahoo symbol                               |
| missing_date          | no trade date                                                          |
| non_finite_value      | a price or the volume is NaN or infinite                               |
| non_positive_price    | a price is zero or negative, or so small it rounds to zero (6 decimals)|
| negative_volume       | volume below zero                                                      |
| zero_volume_bar       | volume is zero: no S&P 500 stock goes a full session without a trade,  |
|                       | so it is a bad bar (e.g. PFE 2019-11-18, O=H=L=C, volume 0)            |
| ohlc_inconsistent     | low > min(open, close) or high < max(open, close), beyond float noise  |
| duplicate             | a second row for the same (symbol, trade date); the latest fetch wins  |

Normalisation: symbols upper-cased (Yahoo's spelling otherwise kept: OCDO.L stays OCDO.L), prices
in major currency units (GBp pence become GBP pounds, `currency` says which), prices rounded to 6 decimals (Yahoo's
float32 noise: 116.18000030517578 becomes 116.18), high/low widened by at most the rounding noise
so OHLC stays consistent, volume as an integer, splits as a ratio (1 when none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

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


@dataclass(frozen=True)
class CleaningResult:
    clean: pd.DataFrame
    rejected: pd.DataFrame

    @property
    def rejected_by_reason(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.rejected["reason"].value_counts().sort_index().items()}


def clean_quotes(raw: pd.DataFrame) -> CleaningResult:
    """Split raw landing rows into clean prices and rejected rows (with reasons)."""
    # pandas 3 copies on write: assigning columns below never touches `raw`, so no upfront copy.
    frame = raw.reset_index(drop=True)
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
    symbols = frame["symbol"].map(dict(zip(distinct, distinct.map(_normalised_symbol))))
    reject(symbols.isna(), "malformed_symbol", lambda r: f"symbol {str(r.symbol)[:40]!r} is not a Yahoo symbol")
    frame["symbol"] = symbols.fillna(frame["symbol"].astype(str).str.slice(0, 40))

    reject(frame["trade_date"].isna(), "missing_date", lambda r: "no trade date")

    values = frame[PRICE_COLUMNS + ["volume"]].to_numpy()
    reject(pd.Series(~np.isfinite(values).all(axis=1), index=frame.index), "non_finite_value",
           lambda r: "NaN or infinite price/volume")

    prices = frame[PRICE_COLUMNS]
    reject((prices.round(PRICE_DECIMALS) <= 0).any(axis=1), "non_positive_price",
           lambda r: f"prices o={r.open} h={r.high} l={r.low} c={r.close} adj={r.adj_close}")
    reject(frame["volume"] < 0, "negative_volume", lambda r: f"volume {r.volume}")
    reject(frame["volume"] == 0, "zero_volume_bar",
           lambda r: f"volume 0 with o={r.open} h={r.high} l={r.low} c={r.close}")

    slack = frame["high"].abs() * OHLC_TOLERANCE
    body_low = frame[["open", "close"]].min(axis=1)
    body_high = frame[["open", "close"]].max(axis=1)
    inconsistent = (frame["low"] > body_low + slack) | (frame["high"] < body_high - slack) | (
        frame["low"] > frame["high"] + slack)
    reject(inconsistent, "ohlc_inconsistent",
           lambda r: f"o={r.open} h={r.high} l={r.low} c={r.close} violates low <= open, close <= high")

    # Among the rows still standing, keep the latest fetch of each (symbol, trade_date).
    key_columns = ["symbol", "trade_date"] + (["fetched_at"] if "fetched_at" in frame else [])
    standing = frame.loc[reason.isna(), key_columns]
    order = standing.sort_values("fetched_at", kind="stable") if "fetched_at" in standing else standing
    dupes = order.index[order.duplicated(["symbol", "trade_date"], keep="last")]
    reject(pd.Series(frame.index.isin(dupes), index=frame.index), "duplicate",
           lambda r: "another row for this symbol and date was fetched later")

    clean = _normalise(frame[reason.isna()])
    rejected = frame[reason.notna()].assign(reason=reason[reason.notna()], detail=detail[reason.notna()])
    return CleaningResult(clean=clean, rejected=rejected[REJECTED_COLUMNS].reset_index(drop=True))


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
