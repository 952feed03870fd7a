"""A user-supplied sector history: GICS sectors of past S&P 500 members (and corrections before a
symbol's first dated change), merged into the bundled classification.

The bundled data knows today's constituents (their sector today) and the symbols of the 2016, 2018
and 2023 GICS revisions; a member that left the index before today has no sector at all, so its
prices cannot count in a sector figure. No openly licensed dataset of past members' sectors exists
(stock_assets/data/SOURCES.md), so the project ships none: the user may supply one, named by
`STOCK_ASSETS_SECTOR_HISTORY` (README, "Survivorship: past members").

File: a CSV with a header and the columns `symbol, sector, valid_from` and optionally `valid_to`
(other columns are ignored). A symbol is in `sector` on days `valid_from <= day < valid_to`; an
empty `valid_to` means "until today". Symbols may be spelled as Yahoo does (BRK-B) or as the index
lists do (BRK.B). Lines starting with `#` are comments.

Precedence (`merge_sector_history`):
- a symbol the bundled data does not know gets the file's periods;
- for a symbol it knows, the bundled periods from its first dated GICS change on (and, for a
  symbol of today's list, today's sector) are facts and win: a file period overlapping them is an
  error; before the first dated change the bundled data only *assumes* the symbol was in the sector
  it left (or, without dated changes, today's sector) all along, and the file's periods replace
  that assumption on their days.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from stock_assets.defs.universe.constituents import InvalidSymbolError, to_yahoo_symbol, validate_symbol
from stock_assets.defs.universe.history import CURRENT_SECTOR_SOURCE, NEGATIVE_INFINITY, POSITIVE_INFINITY

USER_SOURCE = "user sector history"
REQUIRED_COLUMNS = ("symbol", "sector", "valid_from")
OPTIONAL_COLUMNS = ("valid_to",)

# GICS sectors and the days they existed (first day, first day no longer): Real Estate was created
# on 2016-09-01, Telecommunication Services became Communication Services on 2018-09-24.
GICS_SECTORS: dict[str, tuple[dt.date, dt.date]] = {
    "Communication Services": (dt.date(2018, 9, 24), POSITIVE_INFINITY),
    "Consumer Discretionary": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
    "Consumer Staples": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
    "Energy": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
    "Financials": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
    "Health Care": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
    "Industrials": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
    "Information Technology": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
    "Materials": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
    "Real Estate": (dt.date(2016, 9, 1), POSITIVE_INFINITY),
    "Telecommunication Services": (NEGATIVE_INFINITY, dt.date(2018, 9, 24)),
    "Utilities": (NEGATIVE_INFINITY, POSITIVE_INFINITY),
}
_CANONICAL = {name.casefold(): name for name in GICS_SECTORS}


class SectorHistoryError(ValueError):
    """A user sector history file that cannot be used; the message names the file, the line and why."""


@dataclass(frozen=True)
class SectorHistory:
    """The parsed file: its periods (symbol, sector, valid_from, valid_to, line) and content hash."""

    path: Path
    periods: pd.DataFrame
    sha256: str


def read_sector_history(path: str | Path) -> SectorHistory:
    """Parse and validate the file; SectorHistoryError naming file, line and problem otherwise."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as err:
        raise SectorHistoryError(f"{path}: cannot read the sector history file ({err.strerror or err})") from None
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SectorHistoryError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise SectorHistoryError(f"{path}: empty file; expected a header `symbol,sector,valid_from,valid_to`")
    header_line, header = lines[0]
    columns = [name.strip().lower() for name in next(csv.reader([header]))]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise SectorHistoryError(f"{path}, line {header_line}: the header lacks the column(s) {', '.join(missing)} "
                                 f"(got {', '.join(columns)}); expected symbol,sector,valid_from[,valid_to]")
    rows = []
    for number, line in lines[1:]:
        values = next(csv.reader(io.StringIO(line)))
        if len(values) > len(columns):
            raise SectorHistoryError(f"{path}, line {number}: {len(values)} fields for {len(columns)} columns")
        record = dict(zip(columns, [value.strip() for value in values] + [""] * (len(columns) - len(values))))
        rows.append(_period(path, number, record))
    periods = pd.DataFrame(rows, columns=["symbol", "sector", "valid_from", "valid_to", "line"])
    _no_overlaps(path, periods)
    return SectorHistory(path=path, periods=periods.sort_values(["symbol", "valid_from"], ignore_index=True),
                         sha256=hashlib.sha256(content).hexdigest())


def _period(path: Path, number: int, record: dict[str, str]) -> dict:
    where = f"{path}, line {number}"
    try:
        symbol = validate_symbol(to_yahoo_symbol(record["symbol"]) if record["symbol"] else record["symbol"])
    except InvalidSymbolError as err:
        raise SectorHistoryError(f"{where}: {err}") from None
    sector = _CANONICAL.get(" ".join(record["sector"].split()).casefold())
    if sector is None:
        raise SectorHistoryError(f"{where}: unknown GICS sector {record['sector']!r}; expected one of "
                                 f"{', '.join(GICS_SECTORS)}")
    valid_from = _date(where, "valid_from", record["valid_from"], required=True)
    valid_to = _date(where, "valid_to", record.get("valid_to", ""), required=False)
    if valid_to is not None and valid_to <= valid_from:
        raise SectorHistoryError(f"{where}: valid_to {valid_to} is not after valid_from {valid_from} "
                                 "(a period is valid_from <= day < valid_to)")
    first, end = GICS_SECTORS[sector]
    if valid_from < first or (valid_to or POSITIVE_INFINITY) > end:
        existed = f"from {first}" if first != NEGATIVE_INFINITY else f"until {end} (the day before {end} is its last)"
        raise SectorHistoryError(f"{where}: the GICS sector {sector!r} existed only {existed}; "
                                 f"the period is {valid_from}..{valid_to or 'today'}")
    return {"symbol": symbol, "sector": sector, "valid_from": valid_from, "valid_to": valid_to, "line": number}


def _date(where: str, column: str, value: str, required: bool) -> dt.date | None:
    if not value:
        if required:
            raise SectorHistoryError(f"{where}: {column} is empty; expected a date like 2017-06-19")
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise SectorHistoryError(f"{where}: {column} {value[:40]!r} is not a date like 2017-06-19") from None


def _no_overlaps(path: Path, periods: pd.DataFrame) -> None:
    for symbol, group in periods.sort_values(["symbol", "valid_from"]).groupby("symbol"):
        previous = None
        for row in group.itertuples():
            if previous is not None and (previous.valid_to is None or row.valid_from < previous.valid_to):
                raise SectorHistoryError(
                    f"{path}, line {row.line}: {symbol}'s period from {row.valid_from} overlaps its period of "
                    f"line {previous.line} ({previous.valid_from}..{previous.valid_to or 'today'})")
            previous = row


@dataclass(frozen=True)
class MergeReport:
    """What the file added: symbols the bundled data did not know, periods added, and periods that
    replaced the bundled assumption before a known symbol's first dated change."""

    symbols_added: list[str]
    periods_added: int
    periods_replacing_assumptions: int


def merge_sector_history(bundled: pd.DataFrame, history: SectorHistory,
                         dated_symbols: set[str]) -> tuple[pd.DataFrame, MergeReport]:
    """The bundled classification (`classification_intervals`) with the file's periods merged in
    (module docstring: precedence). `dated_symbols`: symbols with dated GICS changes."""
    user = history.periods
    by_symbol = {symbol: group.sort_values("valid_from") for symbol, group in bundled.groupby("symbol")}
    pieces = [bundled[~bundled["symbol"].isin(set(user["symbol"]))]]
    added: list[str] = []
    replacing = 0
    for symbol, mine in user.groupby("symbol"):
        known = by_symbol.get(symbol)
        rows = [_row(symbol, period) for period in mine.itertuples()]
        if known is None:
            added.append(symbol)
            pieces.append(pd.DataFrame(rows))
            continue
        assumed = known.iloc[0]  # from NEGATIVE_INFINITY to the first dated change (or forever)
        for period in mine.itertuples():
            end = period.valid_to or POSITIVE_INFINITY
            if symbol in dated_symbols and end > assumed["valid_to"]:
                raise SectorHistoryError(
                    f"{history.path}, line {period.line}: {symbol}'s period "
                    f"{period.valid_from}..{period.valid_to or 'today'} "
                    f"overlaps the bundled classification from its dated GICS change of {assumed['valid_to']} "
                    "(gics_sector_changes.csv), which takes precedence; end the period on or before that day")
            if assumed["source"] == CURRENT_SECTOR_SOURCE and period.valid_to is None:
                raise SectorHistoryError(
                    f"{history.path}, line {period.line}: {symbol} is in today's constituents list as "
                    f"{assumed['sector']}, which takes precedence for today; give the period a valid_to")
        replacing += len(rows)
        rest = known.iloc[1:]
        carved = _carve(assumed, [(row["valid_from"], row["valid_to"]) for row in rows])
        pieces.append(pd.DataFrame(carved + rows + rest.to_dict("records")))
    merged = pd.concat([piece for piece in pieces if len(piece)], ignore_index=True)
    merged = merged[["symbol", "sector", "valid_from", "valid_to", "source"]]
    return (merged.sort_values(["symbol", "valid_from"], ignore_index=True),
            MergeReport(sorted(added), len(user), replacing))


def _row(symbol: str, period) -> dict:
    return {"symbol": symbol, "sector": period.sector, "valid_from": period.valid_from,
            "valid_to": period.valid_to or POSITIVE_INFINITY, "source": USER_SOURCE}


def _carve(interval: pd.Series, holes: list[tuple[dt.date, dt.date]]) -> list[dict]:
    """`interval` without the (sorted, non-overlapping, inside it) `holes`."""
    pieces, start = [], interval["valid_from"]
    for first, end in sorted(holes):
        if first > start:
            pieces.append({**interval.to_dict(), "valid_from": start, "valid_to": first})
        start = max(start, end)
    if start < interval["valid_to"]:
        pieces.append({**interval.to_dict(), "valid_from": start})
    return pieces
