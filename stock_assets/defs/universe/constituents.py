"""The bundled S&P 500 constituents list and the symbol rules the whole pipeline shares.

A tracked ticker is any Yahoo symbol, spelled as Yahoo spells it: S&P 500 members, ETFs, other US
listings (AAPL, QQQ, SPOT, BRK-B) and non-US listings with Yahoo's exchange suffix (OCDO.L,
WSU.DE, 4063.T). Only the constituents list's own class-share spelling (BRK.B) is rewritten to
Yahoo's (BRK-B), and only when it is read from that list.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import pandas as pd

from stock_assets.markets import UnknownExchangeError, exchange_of

CONSTITUENTS_FILE = "sp500_constituents.csv"

# Yahoo symbols of listed securities: letters and digits (Tokyo codes start with a digit), an
# optional share class after a dash (BRK-B, BT-A.L) and an optional exchange suffix (OCDO.L, 4063.T).
_YAHOO_SYMBOL = re.compile(r"[A-Z0-9][A-Z0-9]{0,9}(-[A-Z0-9]{1,3})?(\.[A-Z]{1,3})?")
# The constituents list's spelling: US symbols with an optional class after a dot (BRK.B).
_LISTED_SYMBOL = re.compile(r"[A-Z][A-Z0-9]{0,5}(\.[A-Z]{1,2})?")


class InvalidSymbolError(ValueError):
    """A ticker symbol that is malformed or not in the universe."""


def to_yahoo_symbol(listed: str) -> str:
    """The constituents list's class-share spelling in Yahoo's: BRK.B -> BRK-B (for that list only:
    a user's symbol is Yahoo's already, and OCDO.L must stay OCDO.L)."""
    return listed.strip().upper().replace(".", "-")


def validate_symbol(symbol: object) -> str:
    """Return `symbol` as Yahoo spells it (trimmed, upper-cased), or raise InvalidSymbolError saying
    why not. A dot is an exchange suffix (OCDO.L), never rewritten."""
    if not isinstance(symbol, str):
        raise InvalidSymbolError(f"Ticker symbol must be a string, got {type(symbol).__name__}")
    if not symbol.strip():
        raise InvalidSymbolError("Ticker symbol is empty")
    if len(symbol) > 12:
        raise InvalidSymbolError(f"Ticker symbol is too long ({len(symbol)} characters): {symbol[:12]!r}...")
    normalised = symbol.strip().upper()
    if not normalised.isascii() or not _YAHOO_SYMBOL.fullmatch(normalised):
        raise InvalidSymbolError(
            f"Malformed ticker symbol {symbol!r}: expected a Yahoo symbol, letters and digits with an "
            "optional class and exchange suffix, like AAPL, BRK-B, OCDO.L or 4063.T"
        )
    return normalised


def validate_listing(symbol: object) -> str:
    """`validate_symbol`, and the symbol's exchange suffix must be one whose calendar is known
    (stock_assets/markets.py); InvalidSymbolError otherwise."""
    normalised = validate_symbol(symbol)
    try:
        exchange_of(normalised)
    except UnknownExchangeError as err:
        raise InvalidSymbolError(str(err)) from None
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
    bad = [s for s in frame["listed_symbol"] if not _LISTED_SYMBOL.fullmatch(s.upper())]
    if bad:
        raise ValueError(f"Constituents file holds malformed symbols: {bad}")
    if frame["symbol"].duplicated().any():
        raise ValueError("Constituents file lists a symbol twice")
    return frame.sort_values("symbol", ignore_index=True)


def resolve_tickers(requested: list[str] | None, default: list[str]) -> list[str]:
    """Validate the configured tickers; default when none are configured.

    Any well-formed Yahoo symbol of a known exchange is accepted (S&P 500 member or not); a symbol
    whose exchange suffix is unknown is refused, since its trading calendar would be a guess."""
    if not requested:
        return sorted(default)
    resolved: list[str] = []
    errors: list[str] = []
    for raw in requested:
        try:
            symbol = validate_listing(raw)
        except InvalidSymbolError as err:
            errors.append(str(err))
            continue
        if symbol not in resolved:
            resolved.append(symbol)
    if errors:
        raise InvalidSymbolError("Invalid ticker configuration: " + "; ".join(errors))
    return sorted(resolved)
