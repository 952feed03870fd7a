-- Views for operators and dashboards. Re-runnable (CREATE OR REPLACE).

-- The latest stored bar of every symbol, with its sector.
CREATE OR REPLACE VIEW market.latest_quotes AS
SELECT DISTINCT ON (p.symbol)
       p.symbol, u.security, u.sector, p.trade_date, p.open, p.high, p.low, p.close, p.adj_close, p.volume
FROM market.prices p
LEFT JOIN market.ticker_universe u USING (symbol)
ORDER BY p.symbol, p.trade_date DESC;

-- Row counts and date coverage per monthly partition.
CREATE OR REPLACE VIEW market.prices_partitions AS
SELECT c.relname AS partition_name,
       pg_get_expr(c.relpartbound, c.oid) AS bounds,
       pg_total_relation_size(c.oid) AS total_bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'market.prices'::regclass
ORDER BY c.relname;
