-- One month of market.sector_monthly_summary: compounded from market.sector_daily_performance, plus
-- the average of the members' own returns over the month (point in time, market.sector_member_days).
-- Parameters: :month_start (first day of the month), :month_end (first day of the next month).
INSERT INTO market.sector_monthly_summary (
    sector, month, trading_days, members, equal_weight_return, dollar_volume_weighted_return,
    share_volume_weighted_return, mean_member_return, advancer_share, dollar_volume, best_day, worst_day
)
WITH member_months AS (
    -- Each member's return over its member days in the sector this month (buy and hold).
    SELECT sector, symbol, exp(sum(ln(1 + daily_return))) - 1 AS member_return
    FROM market.sector_member_days(CAST(:month_start AS date), CAST(:month_end AS date))
    GROUP BY sector, symbol
),
sector_members AS (
    SELECT sector, avg(member_return) AS mean_member_return
    FROM member_months
    GROUP BY sector
)
SELECT d.sector,
       CAST(:month_start AS date),
       count(*),
       max(d.members),
       exp(sum(ln(1 + d.equal_weight_return))) - 1,
       exp(sum(ln(1 + d.dollar_volume_weighted_return))) - 1,
       exp(sum(ln(1 + d.share_volume_weighted_return))) - 1,
       max(s.mean_member_return),
       sum(d.advancers)::double precision / nullif(sum(d.advancers + d.decliners + d.unchanged), 0),
       sum(d.dollar_volume),
       (array_agg(d.trade_date ORDER BY d.equal_weight_return DESC))[1],
       (array_agg(d.trade_date ORDER BY d.equal_weight_return ASC))[1]
FROM market.sector_daily_performance d
LEFT JOIN sector_members s ON s.sector = d.sector
WHERE d.trade_date >= CAST(:month_start AS date)
  AND d.trade_date < CAST(:month_end AS date)
GROUP BY d.sector
