-- The index strategy, each index justified by a query the project runs. Re-runnable.
--
-- market.prices primary key (symbol, trade_date), declared in 001_schema.sql:
--   one symbol's history (`market.latest_quotes`, `WHERE symbol = $1 AND trade_date BETWEEN ...`),
--   the loader's ON CONFLICT upsert, and uniqueness. Monthly partitioning prunes the date range
--   first, so a one-symbol, one-month query touches a single child table and its PK index.
--
-- Covering index for the sector aggregations (sql/queries/sector_daily_performance.sql): they
-- scan a date range of every symbol and read only symbol, close, adj_close and volume, so an
-- index on trade_date that INCLUDEs those columns serves them from the index alone once the
-- partition is vacuumed (the loader analyzes each month it loads).
CREATE INDEX IF NOT EXISTS prices_trade_date_covering
    ON market.prices (trade_date) INCLUDE (symbol, close, adj_close, volume);

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
