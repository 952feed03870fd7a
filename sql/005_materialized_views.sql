-- Materialized views that dashboards read, refreshed CONCURRENTLY after loads (each has the
-- unique index REFRESH ... CONCURRENTLY requires). Re-runnable.

-- The latest stored bar of every symbol with its sector: one indexed row per symbol.
CREATE MATERIALIZED VIEW IF NOT EXISTS market.latest_quotes_mv AS
SELECT DISTINCT ON (p.symbol)
       p.symbol, u.security, u.sector, p.trade_date, p.open, p.high, p.low, p.close, p.adj_close, p.volume
FROM market.prices p
LEFT JOIN market.ticker_universe u USING (symbol)
ORDER BY p.symbol, p.trade_date DESC
WITH NO DATA;
CREATE UNIQUE INDEX IF NOT EXISTS latest_quotes_mv_symbol ON market.latest_quotes_mv (symbol);

-- Per sector: the latest trading day's figures and trailing 21-session compounded return.
CREATE MATERIALIZED VIEW IF NOT EXISTS market.sector_snapshot_mv AS
WITH ranked AS (
    SELECT d.*, row_number() OVER (PARTITION BY d.sector ORDER BY d.trade_date DESC) AS age
    FROM market.sector_daily_performance d
)
SELECT sector,
       max(trade_date)                                              AS as_of,
       (array_agg(equal_weight_return ORDER BY trade_date DESC))[1] AS last_day_return,
       exp(sum(ln(1 + equal_weight_return))) - 1                    AS trailing_21d_return,
       sum(dollar_volume)                                           AS trailing_21d_dollar_volume,
       sum(advancers)::double precision / nullif(sum(advancers + decliners + unchanged), 0) AS advancer_share
FROM ranked
WHERE age <= 21
GROUP BY sector
WITH NO DATA;
CREATE UNIQUE INDEX IF NOT EXISTS sector_snapshot_mv_sector ON market.sector_snapshot_mv (sector);
