-- One month of market.sector_daily_performance, from market.prices joined to the universe.
-- Parameters: :month_start (first day of the month), :month_end (first day of the next month).
-- Returns use adj_close (total return); the lag reaches back into the previous month so the
-- month's first trading day has a return too.
INSERT INTO market.sector_daily_performance (
    sector, trade_date, members, advancers, decliners, unchanged,
    equal_weight_return, volume_weighted_return, dollar_volume
)
WITH window_prices AS (
    SELECT p.symbol, p.trade_date, p.close, p.volume,
           p.adj_close / lag(p.adj_close) OVER (PARTITION BY p.symbol ORDER BY p.trade_date) - 1 AS daily_return
    FROM market.prices p
    WHERE p.trade_date >= CAST(:month_start AS date) - 14
      AND p.trade_date < CAST(:month_end AS date)
)
SELECT u.sector,
       w.trade_date,
       count(*)                                        AS members,
       count(*) FILTER (WHERE w.daily_return > 0)      AS advancers,
       count(*) FILTER (WHERE w.daily_return < 0)      AS decliners,
       count(*) FILTER (WHERE w.daily_return = 0)      AS unchanged,
       avg(w.daily_return)                             AS equal_weight_return,
       sum(w.daily_return * w.volume) / nullif(sum(w.volume), 0) AS volume_weighted_return,
       sum(w.close * w.volume)                         AS dollar_volume
FROM window_prices w
JOIN market.ticker_universe u ON u.symbol = w.symbol
WHERE w.trade_date >= CAST(:month_start AS date)
  AND w.daily_return IS NOT NULL
GROUP BY u.sector, w.trade_date
