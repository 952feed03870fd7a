"""The ticker universe: S&P 500 constituents with their GICS sector, as a reference table."""


import hashlib
import json

import dagster as dg
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.metadata import asset_metadata
from stock_assets.defs.universe.constituents import load_constituents
from stock_assets.defs.universe.listings import track_listings
from stock_assets.defs.universe.resources import TickerSelection

_UPSERT = text(
    """
    INSERT INTO market.ticker_universe AS u (
        symbol, listed_symbol, security, sector, sub_industry, headquarters, date_added, cik, founded,
        tracked, updated_at
    ) VALUES (
        :symbol, :listed_symbol, :security, :sector, :sub_industry, :headquarters, :date_added, :cik,
        :founded, :tracked, now()
    )
    ON CONFLICT (symbol) DO UPDATE SET
        listed_symbol = EXCLUDED.listed_symbol, security = EXCLUDED.security, sector = EXCLUDED.sector,
        sub_industry = EXCLUDED.sub_industry, headquarters = EXCLUDED.headquarters,
        date_added = EXCLUDED.date_added, cik = EXCLUDED.cik, founded = EXCLUDED.founded,
        tracked = EXCLUDED.tracked, updated_at = now()
    WHERE (u.listed_symbol, u.security, u.sector, u.sub_industry, u.headquarters, u.date_added, u.cik,
           u.founded, u.tracked)
          IS DISTINCT FROM
          (EXCLUDED.listed_symbol, EXCLUDED.security, EXCLUDED.sector, EXCLUDED.sub_industry,
           EXCLUDED.headquarters, EXCLUDED.date_added, EXCLUDED.cik, EXCLUDED.founded, EXCLUDED.tracked)
    """
)


@dg.asset(
    group_name="reference",
    kinds={"postgres", "pandas"},
    owners=["team:market-data"],
    code_version="1",
    metadata=asset_metadata("ticker_universe"),
)
def ticker_universe(
    context: dg.AssetExecutionContext, database: PostgresResource, tickers: TickerSelection
) -> dg.MaterializeResult:
    """S&P 500 constituents with GICS sector and sub-industry, upserted into `market.ticker_universe`.

    Symbols use Yahoo's spelling (BRK.B becomes BRK-B). `tracked` marks the tickers the pipeline
    fetches (the `tickers` resource). Members that left the index are kept, untracked, so history
    stays joinable to its sector. Every tracked ticker, member or not (an ETF, OCDO.L, 4063.T), is
    also marked tracked in `market.listings` with its exchange, calendar and currency.
    """
    constituents = load_constituents()
    tracked = set(tickers.symbols())
    rows = [
        {**row, "cik": None if row["cik"] is None else int(row["cik"]), "tracked": row["symbol"] in tracked}
        for row in constituents.astype(object).where(constituents.notna(), None).to_dict("records")
    ]
    with database.begin() as conn:
        result = conn.execute(_UPSERT, rows)
        conn.execute(
            text("UPDATE market.ticker_universe SET tracked = false, updated_at = now() "
                 "WHERE tracked AND NOT (symbol = ANY(:symbols))"),
            {"symbols": sorted(tracked)},
        )
        # Every tracked listing, S&P 500 member or not, with its market (defs/universe/listings.py).
        track_listings(conn, sorted(tracked))
        sectors = conn.execute(
            text("SELECT sector, count(*) FILTER (WHERE tracked), count(*) FROM market.ticker_universe "
                 "GROUP BY sector ORDER BY sector")
        ).all()
    context.log.info("Universe: %d constituents, %d tracked", len(rows), len(tracked))
    return dg.MaterializeResult(
        # The content's own version: a refresh that changed nothing is recognisably the same, so the
        # monthly sector tables do not recompute (stock_assets.defs.automation.REFERENCE_ASSETS).
        data_version=_content_version(rows),
        metadata={
            "dagster/row_count": len(rows),
            "tracked_tickers": len(tracked),
            "tracked_outside_the_list": dg.MetadataValue.json(sorted(tracked - set(constituents["symbol"]))),
            "rows_changed": max(result.rowcount, 0),
            "sector_count": len(sectors),
            "sectors": dg.MetadataValue.md(
                "| sector | tracked | members |\n|---|---:|---:|\n"
                + "\n".join(f"| {s} | {t} | {n} |" for s, t, n in sectors)
            ),
        }
    )


def _content_version(rows: list[dict]) -> dg.DataVersion:
    canonical = json.dumps(sorted(rows, key=lambda row: row["symbol"]), sort_keys=True, default=str)
    return dg.DataVersion(hashlib.sha256(canonical.encode()).hexdigest()[:16])
