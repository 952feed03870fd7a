-- Move one month from the session's staging table into market.prices (used by the `upsert`
-- load strategy). Rows that vanished upstream are deleted; changed rows are updated; identical
-- rows are left alone (no dead tuples for unchanged data).
-- Runs on the loader's psycopg connection (the one that COPYed into stage_prices), hence
-- psycopg's parameter style. Parameters: %(month_start)s, %(month_end)s.
WITH removed AS (
    DELETE FROM market.prices p
    WHERE p.trade_date >= %(month_start)s::date AND p.trade_date < %(month_end)s::date
      AND NOT EXISTS (SELECT 1 FROM stage_prices s WHERE s.symbol = p.symbol AND s.trade_date = p.trade_date)
    RETURNING 1
)
INSERT INTO market.prices AS p (
    symbol, trade_date, open, high, low, close, adj_close, volume, dividend, split_ratio, source, loaded_at
)
SELECT symbol, trade_date, open, high, low, close, adj_close, volume, dividend, split_ratio, source, now()
FROM stage_prices
ON CONFLICT (symbol, trade_date) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    adj_close = EXCLUDED.adj_close, volume = EXCLUDED.volume, dividend = EXCLUDED.dividend,
    split_ratio = EXCLUDED.split_ratio, source = EXCLUDED.source, loaded_at = now()
WHERE (p.open, p.high, p.low, p.close, p.adj_close, p.volume, p.dividend, p.split_ratio, p.source)
      IS DISTINCT FROM
      (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.adj_close, EXCLUDED.volume,
       EXCLUDED.dividend, EXCLUDED.split_ratio, EXCLUDED.source)
