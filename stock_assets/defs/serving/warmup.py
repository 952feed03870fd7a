"""Warming what readers hit first: materialized views, the current month's pages, hot quotes."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from psycopg import sql
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource

MATERIALIZED_VIEWS = ("latest_quotes_mv", "sector_snapshot_mv")


@dataclass
class WarmupReport:
    seconds: dict[str, float] = field(default_factory=dict)
    warmed: dict[str, object] = field(default_factory=dict)

    def timed(self, name: str):
        report = self

        class _Timer:
            def __enter__(self):
                self.began = time.perf_counter()

            def __exit__(self, *exc):
                report.seconds[name] = round(time.perf_counter() - self.began, 4)

        return _Timer()


def refresh_materialized_views(database: PostgresResource, report: WarmupReport) -> None:
    """REFRESH ... CONCURRENTLY, so readers are not blocked (plain REFRESH the very first time)."""
    # CONCURRENTLY refuses to run inside a transaction block: an autocommit connection.
    with report.timed("refresh_views"), database.engine.connect().execution_options(
            isolation_level="AUTOCOMMIT") as autocommit:
        conn = autocommit.connection.driver_connection
        for view in MATERIALIZED_VIEWS:
            populated = conn.execute(
                "SELECT ispopulated FROM pg_matviews WHERE schemaname = 'market' AND matviewname = %s", [view]
            ).fetchone()[0]
            mode = sql.SQL("CONCURRENTLY ") if populated else sql.SQL("")
            conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}{}").format(mode, sql.Identifier("market", view)))
    report.warmed["materialized_views"] = list(MATERIALIZED_VIEWS)


def prewarm_latest_month(database: PostgresResource, report: WarmupReport) -> None:
    """Load the newest month's child table and its indexes into shared buffers with pg_prewarm."""
    with report.timed("prewarm"), database.begin() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm'")).first():
            report.warmed["prewarm"] = "pg_prewarm unavailable on this server"
            return
        latest = conn.execute(text("SELECT market.prices_partition_name(max(trade_date)) FROM market.prices")).scalar()
        if latest is None:
            report.warmed["prewarm"] = "no partitions yet"
            return
        rows = conn.execute(text(
            "SELECT c.relname, pg_prewarm(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'market' AND (c.relname = :child OR c.oid IN ("
            "  SELECT indexrelid FROM pg_index WHERE indrelid = ('market.' || quote_ident(:child))::regclass))"
        ), {"child": latest}).all()
    report.warmed["prewarm"] = {name: int(blocks) for name, blocks in rows}


def most_watched(database: PostgresResource, configured: list[str], count: int) -> list[str]:
    """The configured watch list, or the symbols with the most dollar volume on the latest day."""
    if configured:
        return configured
    with database.begin() as conn:
        return list(conn.execute(text(
            "SELECT symbol FROM market.latest_quotes_mv ORDER BY close * volume DESC NULLS LAST LIMIT :n"
        ), {"n": count}).scalars())


def warm_quote_cache(quotes, symbols: list[str], today: dt.date, days: int, report: WarmupReport) -> None:
    """Fetch the recent window of the watched symbols through the quote client, filling its cache."""
    with report.timed("quote_cache"):
        frame, fetch = quotes.fetch(symbols, today - dt.timedelta(days=days), today)
    report.warmed["quote_cache"] = {"symbols": symbols, "rows": len(frame), "failed": sorted(fetch.failures)}
