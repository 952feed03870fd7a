-- The index strategy, each index justified by a query the project runs. Re-runnable.
--
-- market.prices primary key (symbol, trade_date) INCLUDE (close, adj_close, volume), declared in
-- 001_schema.sql. It serves
--   * one symbol's history (sql/queries/symbol_history.sql: `WHERE symbol = $1 AND trade_date
--     BETWEEN $2 AND $3`, reading close/adj_close/volume) as an index-only scan: partition pruning
--     picks the months, the key finds the symbol, the INCLUDE columns answer without the heap;
--   * the latest bar per symbol (market.latest_quotes_mv) and the loader's ON CONFLICT upsert.
--
-- No separate trade_date index: every date-range query the project runs (the sector
-- aggregations, sql/queries/sector_*.sql) reads whole months, which partition pruning already
-- narrows to the right child tables; an index would cost every load and serve no query.
DROP INDEX IF EXISTS market.prices_trade_date_covering;

-- BRIN on market.price_rejections (trade_date): the cleaning step deletes and re-inserts a
-- date range on every run (`DELETE ... WHERE trade_date >= $1 AND trade_date < $2`); rows arrive
-- in date order, so a BRIN index of a few pages replaces a B-tree that would grow with the table.
CREATE INDEX IF NOT EXISTS price_rejections_trade_date_brin
    ON market.price_rejections USING brin (trade_date) WITH (pages_per_range = 16);
DROP INDEX IF EXISTS market.price_rejections_trade_date_idx;

-- Sector tables are keyed (sector, trade_date) / (sector, month); their monthly refresh deletes by
-- date, served by these small B-trees.
CREATE INDEX IF NOT EXISTS sector_daily_performance_trade_date_idx
    ON market.sector_daily_performance (trade_date);
