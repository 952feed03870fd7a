-- One symbol's daily closes and volumes over a date range: the read dashboards and the cache
-- warmer make. Served by market.prices' covering primary key (symbol, trade_date) INCLUDE
-- (close, adj_close, volume), one child table per month after pruning.
-- Parameters: :symbol, :start (inclusive), :end (inclusive).
SELECT trade_date, close, adj_close, volume
FROM market.prices
WHERE symbol = :symbol
  AND trade_date BETWEEN CAST(:start AS date) AND CAST(:end AS date)
ORDER BY trade_date
