"""Point-in-time reference tables: S&P 500 membership and GICS classification over time.

Sector figures for a day use that day's members and that day's sectors (see README, "Sector
definitions"); these two assets hold the dated histories, with their sources, as tables.
"""


import hashlib

import dagster as dg
import pandas as pd
from sqlalchemy import text

from stock_assets import settings
from stock_assets.database.resource import PostgresResource
from stock_assets.defs.metadata import asset_metadata
from stock_assets.defs.universe.history import (
    GICS_CHANGES_FILE,
    MEMBERSHIP_FILE,
    classification_intervals,
    gics_changes,
    membership_intervals,
)
from stock_assets.defs.universe.sector_history import SectorHistoryError, merge_sector_history, read_sector_history


def _data_version(frame: pd.DataFrame, *extra: str) -> dg.DataVersion:
    """The content's hash: unchanged history, unchanged version (automation can tell a no-op refresh)."""
    digest = hashlib.sha256(frame.to_csv(index=False).encode())
    for part in extra:
        digest.update(part.encode())
    return dg.DataVersion(digest.hexdigest()[:16])


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


@dg.asset(
    group_name="reference",
    kinds={"postgres", "pandas"},
    owners=["team:market-data"],
    code_version="1",
    metadata={**asset_metadata("index_membership"), "source_file": f"stock_assets/data/{MEMBERSHIP_FILE}",
              "source": "github.com/fja05680/sp500 sp500_ticker_start_end.csv @ 0803e409 (MIT); "
                        "stock_assets/data/SOURCES.md"},
)
def index_membership(context: dg.AssetExecutionContext, database: PostgresResource) -> dg.MaterializeResult:
    """S&P 500 membership over time, one row per stint of a ticker in the index, into
    `market.index_membership` (replaced as a whole, one transaction).

    From the bundled dated history (`stock_assets/data/sp500_membership_intervals.csv`, sources in
    `stock_assets/data/SOURCES.md`): a ticker is a member on days `valid_from <= day < valid_to`.
    Sector figures count a ticker only while it was a member, so removed tickers count for the days
    they belonged to the index and today's members do not count before they joined.
    """
    frame = membership_intervals()
    with database.begin() as conn:
        conn.execute(text("DELETE FROM market.index_membership"))
        conn.execute(
            text("INSERT INTO market.index_membership (symbol, valid_from, valid_to, source) "
                 "VALUES (:symbol, :valid_from, :valid_to, :source)"),
            _records(frame),
        )
    current = int(frame["valid_to"].isna().sum())
    context.log.info("Index membership: %d stints of %d tickers, %d current members",
                     len(frame), frame["symbol"].nunique(), current)
    return dg.MaterializeResult(data_version=_data_version(frame), metadata={
        "dagster/row_count": len(frame),
        "tickers": int(frame["symbol"].nunique()),
        "current_members": current,
        "sources": dg.MetadataValue.json(frame["source"].value_counts().to_dict()),
    })


@dg.asset(
    deps=["ticker_universe"],
    group_name="reference",
    kinds={"postgres", "pandas"},
    owners=["team:market-data"],
    code_version="1",
    metadata={**asset_metadata("sector_classification"), "source_file": f"stock_assets/data/{GICS_CHANGES_FILE}",
              "source": "S&P Dow Jones Indices / MSCI GICS announcements of 2016, 2018 and 2023; "
                        "stock_assets/data/SOURCES.md",
              "user_sector_history": f"the CSV named by {settings.SECTOR_HISTORY_ENV}, when set "
                                     "(README 'Survivorship')"},
)
def sector_classification(context: dg.AssetExecutionContext, database: PostgresResource) -> dg.MaterializeResult:
    """GICS sector per symbol and period, into `market.sector_classification` (replaced as a whole).

    Today's sector (`market.ticker_universe`) holds back to the symbol's latest dated GICS change
    (`stock_assets/data/gics_sector_changes.csv`: the 2016 Real Estate sector, the 2018
    Communication Services sector, the 2023 reclassification); before a change, the symbol is in
    the sector the change moved it from. So V and MA are Information Technology until 2023-03-17,
    GOOGL until 2018-09-21, AMT Financials until 2016-08-31. The dated changes are also stored as
    published, in `market.gics_sector_changes`. Fails, changing nothing, when the history and
    today's sectors disagree.

    Past members the bundled data does not know (removed before today's list) get their sectors
    from the user's sector history file, `STOCK_ASSETS_SECTOR_HISTORY` (README "Survivorship"):
    its periods classify unknown symbols, and replace the bundled assumption before a known
    symbol's first dated change; a period overlapping a bundled fact, or a malformed file, fails
    the run with the file, line and problem, changing nothing. The file's content hash is part of
    the data version, so a changed file makes the sector figures stale.
    """
    changes = gics_changes()
    history_path = settings.configured_sector_history()
    try:
        history = read_sector_history(history_path) if history_path else None
    except SectorHistoryError as err:
        raise dg.Failure(description=str(err), allow_retries=False) from err
    with database.begin() as conn:
        current = pd.DataFrame(
            conn.execute(text("SELECT symbol, sector FROM market.ticker_universe")).all(), columns=["symbol", "sector"]
        )
        if current.empty:
            raise dg.Failure("market.ticker_universe is empty: materialize ticker_universe first, "
                             "today's sectors are where the classification history starts from")
        periods = classification_intervals(current, changes)
        merged = None
        if history is not None:
            try:
                periods, merged = merge_sector_history(periods, history, set(changes["symbol"]))
            except SectorHistoryError as err:
                raise dg.Failure(description=str(err), allow_retries=False) from err
        conn.execute(text("DELETE FROM market.gics_sector_changes"))
        conn.execute(
            text("INSERT INTO market.gics_sector_changes (symbol, effective_date, from_sector, to_sector, change) "
                 "VALUES (:symbol, :effective_date, :from_sector, :to_sector, :change)"),
            _records(changes),
        )
        conn.execute(text("DELETE FROM market.sector_classification"))
        conn.execute(
            text("INSERT INTO market.sector_classification (symbol, sector, valid_from, valid_to, source) "
                 "VALUES (:symbol, :sector, :valid_from, :valid_to, :source)"),
            _records(periods),
        )
    moved = sorted(set(changes["symbol"]) & set(current["symbol"]))
    context.log.info("Classification: %d periods of %d symbols; %d of today's symbols changed sector",
                     len(periods), periods["symbol"].nunique(), len(moved))
    return dg.MaterializeResult(data_version=_data_version(periods, history.sha256 if history else ""), metadata={
        "dagster/row_count": len(periods),
        "gics_changes": len(changes),
        **_sector_history_metadata(history, merged),
        "symbols_reclassified": len(moved),
        "changes": dg.MetadataValue.md(
            "| effective | change | symbols |\n|---|---|---:|\n" + "\n".join(
                f"| {day} | {change} | {count} |"
                for (day, change), count in changes.groupby(["effective_date", "change"]).size().items()
            )
        ),
    })


def _sector_history_metadata(history, merged) -> dict[str, object]:
    """What the user's sector history file contributed (README "Survivorship")."""
    if history is None:
        return {"sector_history_file": dg.MetadataValue.text(f"none ({settings.SECTOR_HISTORY_ENV} not set)")}
    return {
        "sector_history_file": dg.MetadataValue.path(str(history.path)),
        "sector_history_sha256": history.sha256,
        "sector_history_periods": merged.periods_added,
        "sector_history_symbols_added": len(merged.symbols_added),
        "sector_history_symbols": dg.MetadataValue.json(merged.symbols_added[:50]),
        "sector_history_periods_replacing_assumptions": merged.periods_replacing_assumptions,
    }
