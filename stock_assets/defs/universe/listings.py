"""`market.listings`: each tracked or fetched symbol's exchange, time zone, calendar and currency.

`ticker_universe` adds every tracked symbol (its market from the exchange suffix until Yahoo says
more) and keeps the `tracked` flag, so a tracked listing outside the S&P 500 list is known too.
`cleaned_prices` records what Yahoo said, from the raw quotes, whose rows carry what Yahoo's chart meta said about the listing
(`currency`, `exchange`, `exchange_timezone`, `instrument_type`). The calendar comes from the
symbol's exchange suffix (stock_assets/markets.py). Rows fetched before these columns existed say
nothing, and leave a listing's row as it was.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy import text

from stock_assets.database.resource import PostgresResource
from stock_assets.markets import UnknownExchangeError, exchange_of, major_units

_UPSERT = text(
    """
    INSERT INTO market.listings AS l (symbol, exchange, exchange_timezone, calendar, quote_currency,
                                      price_currency, price_divisor, instrument_type, updated_at)
    VALUES (:symbol, :exchange, :exchange_timezone, :calendar, :quote_currency, :price_currency,
            :price_divisor, :instrument_type, now())
    ON CONFLICT (symbol) DO UPDATE SET
        exchange = EXCLUDED.exchange, exchange_timezone = EXCLUDED.exchange_timezone,
        calendar = EXCLUDED.calendar, quote_currency = EXCLUDED.quote_currency,
        price_currency = EXCLUDED.price_currency, price_divisor = EXCLUDED.price_divisor,
        instrument_type = EXCLUDED.instrument_type, updated_at = now()
    WHERE (l.exchange, l.exchange_timezone, l.calendar, l.quote_currency, l.price_currency,
           l.price_divisor, l.instrument_type)
          IS DISTINCT FROM
          (EXCLUDED.exchange, EXCLUDED.exchange_timezone, EXCLUDED.calendar, EXCLUDED.quote_currency,
           EXCLUDED.price_currency, EXCLUDED.price_divisor, EXCLUDED.instrument_type)
    """
)


def listing_rows(raw: pd.DataFrame) -> list[dict[str, object]]:
    """One row per symbol whose raw rows say where it trades (the latest fetch wins)."""
    if not len(raw) or "currency" not in raw or "exchange_timezone" not in raw:
        return []
    wanted = [column for column in ("symbol", "currency", "exchange", "exchange_timezone", "instrument_type",
                                    "fetched_at") if column in raw]
    said = raw.loc[raw["exchange_timezone"].notna() & raw["symbol"].notna(), wanted]
    if "fetched_at" in said:
        said = said.sort_values("fetched_at", kind="stable")
    rows = []
    for row in said.drop_duplicates("symbol", keep="last").itertuples(index=False):
        try:
            calendar = exchange_of(str(row.symbol)).calendar
        except UnknownExchangeError:
            continue  # not a tracked listing (cleaning rejects or reports it)
        currency = row.currency if isinstance(row.currency, str) and row.currency else None
        major, divisor = major_units(currency or "USD")
        rows.append({
            "symbol": str(row.symbol), "exchange": _text(row.exchange), "exchange_timezone": str(row.exchange_timezone),
            "calendar": calendar, "quote_currency": currency, "price_currency": major, "price_divisor": divisor,
            "instrument_type": _text(row.instrument_type),
        })
    return sorted(rows, key=lambda r: r["symbol"])


def upsert_listings(database: PostgresResource, raw: pd.DataFrame) -> int:
    """Record the listings `raw` describes; returns how many symbols were described."""
    rows = listing_rows(raw)
    if rows:
        with database.begin() as conn:
            conn.execute(_UPSERT, rows)
    return len(rows)


_TRACK = text(
    """
    INSERT INTO market.listings AS l (symbol, exchange, exchange_timezone, calendar, quote_currency,
                                      price_currency, price_divisor, tracked, updated_at)
    VALUES (:symbol, :exchange, :exchange_timezone, :calendar, :quote_currency, :price_currency,
            :price_divisor, true, now())
    ON CONFLICT (symbol) DO UPDATE SET tracked = true, updated_at = now() WHERE NOT l.tracked
    """
)


def track_listings(conn, symbols: list[str]) -> None:
    """Mark exactly `symbols` tracked (adding the missing ones with their exchange's defaults)."""
    rows = []
    for symbol in symbols:
        exchange = exchange_of(symbol)
        major, divisor = major_units(exchange.currency)
        rows.append({"symbol": symbol, "exchange": exchange.yahoo_code, "exchange_timezone": exchange.timezone,
                     "calendar": exchange.calendar, "quote_currency": exchange.currency, "price_currency": major,
                     "price_divisor": divisor})
    if rows:
        conn.execute(_TRACK, rows)
    conn.execute(text("UPDATE market.listings SET tracked = false, updated_at = now() "
                      "WHERE tracked AND NOT (symbol = ANY(:symbols))"), {"symbols": sorted(symbols)})


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
