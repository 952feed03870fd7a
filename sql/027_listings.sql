-- Listings: every tracked or fetched symbol (S&P 500 member or not: QQQ, OCDO.L, 4063.T), where it
-- trades, in which time zone and currency (Yahoo's chart meta), and the trading calendar its
-- completeness is judged by. `ticker_universe` adds the tracked symbols (market from the symbol's
-- exchange suffix) and keeps `tracked`; `cleaned_prices` records what Yahoo said about each listing
-- (stock_assets/defs/universe/listings.py). Re-runnable: IF NOT EXISTS only.
--
-- Prices in market.prices are in MAJOR units of `price_currency` (a London listing quoted in pence,
-- GBp, is stored in pounds, GBP): join on symbol before adding up prices of several listings, and
-- never add figures of different `price_currency` without saying so.
CREATE TABLE IF NOT EXISTS market.listings (
    symbol             text PRIMARY KEY,        -- Yahoo's spelling (AAPL, BRK-B, OCDO.L, 4063.T)
    exchange           text,                    -- Yahoo's exchangeName (NMS, NYQ, LSE, GER, JPX, ...)
    exchange_timezone  text NOT NULL,           -- exchangeTimezoneName: trade dates are local dates there
    calendar           text NOT NULL,           -- exchange_calendars code deciding its sessions (XNYS, XLON, ...)
    quote_currency     text,                    -- currency as Yahoo quotes it (GBp = pence)
    price_currency     text NOT NULL,           -- currency of the stored prices, major units (GBP)
    price_divisor      integer NOT NULL DEFAULT 1 CHECK (price_divisor > 0),  -- quoted / divisor = stored
    instrument_type    text,                    -- EQUITY, ETF, ...
    tracked            boolean NOT NULL DEFAULT false,  -- fetched by the pipeline (the `tickers` resource)
    updated_at         timestamptz NOT NULL DEFAULT now()
);
