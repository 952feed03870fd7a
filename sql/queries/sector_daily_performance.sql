-- One month of market.sector_daily_performance, point in time: each day's S&P 500 members with
-- their GICS sector of that day (market.sector_member_days, sql/020_point_in_time_sectors.sql).
-- Parameters: :month_start (first day of the month), :month_end (first day of the next month).
-- Returns use adj_close (total return); the previous close of the month's first session is the
-- previous month's last one, so that month must be loaded for the first day to have a return.
INSERT INTO market.sector_daily_performance (
    sector, trade_date, members, advancers, decliners, unchanged,
    equal_weight_return, dollar_volume_weighted_return, share_volume_weighted_return, dollar_volume
)
SELECT m.sector,
       m.trade_date,
       count(*)                                                         AS members,
       count(*) FILTER (WHERE m.daily_return > 0)                       AS advancers,
       count(*) FILTER (WHERE m.daily_return < 0)                       AS decliners,
       count(*) FILTER (WHERE m.daily_return = 0)                       AS unchanged,
       avg(m.daily_return)                                              AS equal_weight_return,
       sum(m.daily_return * m.close * m.volume) / nullif(sum(m.close * m.volume), 0)
                                                                        AS dollar_volume_weighted_return,
       sum(m.daily_return * m.volume) / nullif(sum(m.volume), 0)        AS share_volume_weighted_return,
       sum(m.close * m.volume)                                          AS dollar_volume
FROM market.sector_member_days(CAST(:month_start AS date), CAST(:month_end AS date)) m
GROUP BY m.sector, m.trade_date
