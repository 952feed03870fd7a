"""The bundled S&P 500 constituents list and the symbol rules the whole pipeline shares."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import pandas as pd

CONSTITUENTS_FILE = "sp500_constituents.csv"

# Yahoo symbols for US equities: letters and digits with an optional class suffix after a dash.
_YAHOO_SYMBOL = re.compile(r"[A-Z][A-Z0-9]{0,5}(-[A-Z]{1,2})?")


class InvalidSymbolError(ValueError):
    """A ticker symbol that is malformed or not in the universe."""


def to_yahoo_symbol(listed: str) -> str:
    """Yahoo spells share classes with a dash: BRK.B -> BRK-B."""
    return listed.strip().upper().replace(".", "-")


def validate_symbol(symbol: object) -> str:
    """Return the Yahoo spelling of `symbol`, or raise InvalidSymbolError saying why not."""
    if not isinstance(symbol, str):
        raise InvalidSymbolError(f"Ticker symbol must be a string, got {type(symbol).__name__}")
    if not symbol.strip():
        raise InvalidSymbolError("Ticker symbol is empty")
    if len(symbol) > 12:
        raise InvalidSymbolError(f"Ticker symbol is too long ({len(symbol)} characters): {symbol[:12]!r}...")
    normalised = to_yahoo_symbol(symbol)
    if not normalised.isascii() or not _YAHOO_SYMBOL.fullmatch(normalised):
        raise InvalidSymbolError(
            f"Malformed ticker symbol {symbol!r}: expected letters and digits with an optional "
            "class suffix, like AAPL or BRK-B"
        )
    return normalised


@lru_cache(maxsize=1)
def load_constituents() -> pd.DataFrame:
    """The bundled constituents, one row per share class, keyed by Yahoo symbol."""
    path = resources.files("stock_assets") / "data" / CONSTITUENTS_FILE
    with path.open("rb") as handle:
        raw = pd.read_csv(handle, dtype=str, keep_default_na=False)
    frame = pd.DataFrame(
        {
            "symbol": raw["Symbol"].map(to_yahoo_symbol),
            "listed_symbol": raw["Symbol"].str.strip(),
            "security": raw["Security"].str.strip(),
            "sector": raw["GICS Sector"].str.strip(),
            "sub_industry": raw["GICS Sub-Industry"].str.strip(),
            "headquarters": raw["Headquarters Location"].str.strip().replace("", None),
            "date_added": pd.to_datetime(raw["Date added"], errors="coerce").dt.date,
            "cik": pd.to_numeric(raw["CIK"], errors="coerce").astype("Int64"),
            "founded": raw["Founded"].str.strip().replace("", None),
        }
    )
    bad = [s for s in frame["symbol"] if not _YAHOO_SYMBOL.fullmatch(s)]
    if bad:
        raise ValueError(f"Constituents file holds malformed symbols: {bad}")
    if frame["symbol"].duplicated().any():
        raise ValueError("Constituents file lists a symbol twice")
    return frame.sort_values("symbol", ignore_index=True)


def resolve_tickers(requested: list[str] | None, default: list[str]) -> list[str]:
    """Validate the configured tickers against the universe; default when none are configured."""
    if not requested:
        return sorted(default)
    known = set(load_constituents()["symbol"])
    resolved: list[str] = []
    errors: list[str] = []
    for raw in requested:
        try:
            symbol = validate_symbol(raw)
        except InvalidSymbolError as err:
            errors.append(str(err))
            continue
        if symbol not in known:
            errors.append(f"{symbol} is not in the S&P 500 constituents list ({CONSTITUENTS_FILE})")
        elif symbol not in resolved:
            resolved.append(symbol)
    if errors:
        raise InvalidSymbolError("Invalid ticker configuration: " + "; ".join(errors))
    return sorted(resolved)
