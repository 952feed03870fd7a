-- Per-ticker holes in market.prices: the (symbol, trade_date) pairs that are owed but not stored.
-- :symbols and :days are two arrays of equal length, zipped into the pairs to look for.
SELECT owed.symbol, owed.trade_date
FROM unnest(CAST(:symbols AS text[]), CAST(:days AS date[])) AS owed(symbol, trade_date)
WHERE NOT EXISTS (
    SELECT 1 FROM market.prices p
    WHERE p.symbol = owed.symbol AND p.trade_date = owed.trade_date
)
ORDER BY owed.trade_date, owed.symbol;
