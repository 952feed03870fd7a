"""Point-in-time S&P 500 membership and GICS classification, from the bundled dated histories.

- Membership: `data/sp500_membership_intervals.csv`, one row per stint of a ticker in the index
  (`start_date` = first session as a member, `end_date` = first session no longer a member, empty
  while still a member). Constituents of today's list that the history does not know (added after
  it was compiled) get a stint from their `Date added`.
- Classification: today's GICS sector (from `market.ticker_universe`) back to the latest dated change
  in `data/gics_sector_changes.csv`; before each change, the sector it moved the symbol from.

Both are plain pandas here so tests can rebuild them independently of the SQL.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from importlib import resources

import pandas as pd

from stock_assets.defs.universe.constituents import load_constituents, to_yahoo_symbol

MEMBERSHIP_FILE = "sp500_membership_intervals.csv"
GICS_CHANGES_FILE = "gics_sector_changes.csv"
MEMBERSHIP_SOURCE = "fja05680/sp500 sp500_ticker_start_end.csv"
CONSTITUENTS_SOURCE = "constituents list (Date added)"
CURRENT_SECTOR_SOURCE = "current"
# Date of the bundled constituents list (stock_assets/data/SOURCES.md): a stint the history leaves open
# for a ticker that list no longer holds (removed or renamed since) ended no later than this.
CONSTITUENTS_SNAPSHOT = dt.date(2026, 8, 8)

# Open ends of a classification period: earlier / later than any price (0001-01-01, 9999-12-31).
NEGATIVE_INFINITY = dt.date.min
POSITIVE_INFINITY = dt.date.max


class HistoryDataError(ValueError):
    """A bundled history file that contradicts itself or today's constituents list."""


def _read(name: str) -> pd.DataFrame:
    path = resources.files("stock_assets") / "data" / name
    with path.open("rb") as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False)


@lru_cache(maxsize=1)
def membership_intervals() -> pd.DataFrame:
    """Columns symbol, valid_from, valid_to (None = still a member), source; one row per stint."""
    raw = _read(MEMBERSHIP_FILE)
    frame = pd.DataFrame({
        "symbol": raw["ticker"].map(to_yahoo_symbol),
        "valid_from": pd.to_datetime(raw["start_date"], format="%Y-%m-%d").dt.date,
        "valid_to": [None if not value else dt.date.fromisoformat(value) for value in raw["end_date"]],
        "source": MEMBERSHIP_SOURCE,
    })
    bad = frame[[to is not None and to <= start for start, to in zip(frame["valid_from"], frame["valid_to"])]]
    if len(bad):
        raise HistoryDataError(f"{MEMBERSHIP_FILE}: stints ending before they start: {bad['symbol'].tolist()}")
    if frame.duplicated(["symbol", "valid_from"]).any():
        raise HistoryDataError(f"{MEMBERSHIP_FILE}: a symbol has two stints starting on the same day")
    # Today's constituents the history does not list as current members joined after it was compiled.
    constituents = load_constituents()
    gone = frame["valid_to"].isna() & ~frame["symbol"].isin(set(constituents["symbol"]))
    frame.loc[gone, "valid_to"] = CONSTITUENTS_SNAPSHOT
    open_members = set(frame.loc[frame["valid_to"].isna(), "symbol"])
    late = constituents[~constituents["symbol"].isin(open_members) & constituents["date_added"].notna()]
    extra = pd.DataFrame({
        "symbol": late["symbol"],
        "valid_from": late["date_added"],
        "valid_to": None,
        "source": CONSTITUENTS_SOURCE,
    })
    # A stint starting on the same day as a closed one in the history would clash on the key.
    known = frame.set_index(["symbol", "valid_from"]).index
    extra = extra[~extra.set_index(["symbol", "valid_from"]).index.isin(known)]
    frame = pd.concat([frame, extra], ignore_index=True)
    return frame.sort_values(["symbol", "valid_from"], ignore_index=True)


@lru_cache(maxsize=1)
def gics_changes() -> pd.DataFrame:
    """Columns symbol, effective_date, from_sector, to_sector, change."""
    raw = _read(GICS_CHANGES_FILE)
    frame = pd.DataFrame({
        "symbol": raw["symbol"].map(to_yahoo_symbol),
        "effective_date": pd.to_datetime(raw["effective_date"], format="%Y-%m-%d").dt.date,
        "from_sector": raw["from_sector"].str.strip(),
        "to_sector": raw["to_sector"].str.strip(),
        "change": raw["change"].str.strip(),
    })
    if frame.duplicated(["symbol", "effective_date"]).any():
        raise HistoryDataError(f"{GICS_CHANGES_FILE}: a symbol changes sector twice on one day")
    frame = frame.sort_values(["symbol", "effective_date"], ignore_index=True)
    for symbol, changes in frame.groupby("symbol"):
        previous = changes["to_sector"].shift(1).iloc[1:]
        if not (previous.values == changes["from_sector"].iloc[1:].values).all():
            raise HistoryDataError(f"{GICS_CHANGES_FILE}: {symbol}'s changes do not chain (a change starts "
                                   "from a sector the previous one did not move it to)")
    return frame


def classification_intervals(current: pd.DataFrame, changes: pd.DataFrame | None = None) -> pd.DataFrame:
    """Sector per symbol and period from `current` (columns symbol, sector: today's classification)
    and the dated `changes`; columns symbol, sector, valid_from, valid_to, source.

    A symbol of `current` whose latest change moved it to another sector than today's is an error
    (the history and the constituents list disagree); symbols that only appear in `changes` (renamed
    or removed since) are classified over the periods the changes describe.
    """
    changes = gics_changes() if changes is None else changes
    today = dict(zip(current["symbol"], current["sector"]))
    rows: list[dict] = []
    disagreements = []
    by_symbol = {symbol: group for symbol, group in changes.groupby("symbol")}
    for symbol in sorted(set(today) | set(by_symbol)):
        history = by_symbol.get(symbol)
        if history is None:
            rows.append(_interval(symbol, today[symbol], NEGATIVE_INFINITY, POSITIVE_INFINITY, CURRENT_SECTOR_SOURCE))
            continue
        start = NEGATIVE_INFINITY
        for change in history.itertuples():
            rows.append(_interval(symbol, change.from_sector, start, change.effective_date, change.change))
            start = change.effective_date
        last = history.iloc[-1]
        if symbol in today and today[symbol] != last["to_sector"]:
            disagreements.append(f"{symbol} (history: {last['to_sector']}, today: {today[symbol]})")
            continue
        rows.append(_interval(symbol, last["to_sector"], start, POSITIVE_INFINITY,
                              CURRENT_SECTOR_SOURCE if symbol in today else last["change"]))
    if disagreements:
        raise HistoryDataError(f"{GICS_CHANGES_FILE} disagrees with today's sectors: {', '.join(disagreements)}")
    return pd.DataFrame(rows, columns=["symbol", "sector", "valid_from", "valid_to", "source"])


def _interval(symbol: str, sector: str, start: dt.date, end: dt.date, source: str) -> dict:
    return {"symbol": symbol, "sector": sector, "valid_from": start, "valid_to": end, "source": source}
