-- One month of market.sector_monthly_summary, compounded from market.sector_daily_performance.
-- Parameters: :month_start (first day of the month), :month_end (first day of the next month).
INSERT INTO market.sector_monthly_summary (
    sector, month, trading_days, members, equal_weight_return, volume_weighted_return,
    advancer_share, dollar_volume, best_day, worst_day
)
SELECT d.sector,
       CAST(:month_start AS date),
       count(*),
       max(d.members),
       exp(sum(ln(1 + d.equal_weight_return))) - 1,
       exp(sum(ln(1 + d.volume_weighted_return))) - 1,
       sum(d.advancers)::double precision / nullif(sum(d.advancers + d.decliners + d.unchanged), 0),
       sum(d.dollar_volume),
       (array_agg(d.trade_date ORDER BY d.equal_weight_return DESC))[1],
       (array_agg(d.trade_date ORDER BY d.equal_weight_return ASC))[1]
FROM market.sector_daily_performance d
WHERE d.trade_date >= CAST(:month_start AS date)
  AND d.trade_date < CAST(:month_end AS date)
GROUP BY d.sector
