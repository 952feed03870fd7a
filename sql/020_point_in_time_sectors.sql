-- Point-in-time sector figures: index membership and GICS classification as dated histories, and
-- the sector tables' return columns named for what they weight by. Re-runnable.

-- S&P 500 membership, one row per stint: a symbol is a member on days valid_from <= day < valid_to
-- (valid_to NULL: still a member). Loaded by the `index_membership` asset from
-- stock_assets/data/sp500_membership_intervals.csv (see stock_assets/data/SOURCES.md).
CREATE TABLE IF NOT EXISTS market.index_membership (
    symbol     text NOT NULL,              -- Yahoo spelling (BRK-B)
    valid_from date NOT NULL,              -- first session as a member
    valid_to   date,                       -- first session no longer a member; NULL = still a member
    source     text NOT NULL,              -- which dataset the stint comes from
    PRIMARY KEY (symbol, valid_from),
    CONSTRAINT index_membership_dates CHECK (valid_to IS NULL OR valid_to > valid_from)
);

-- Dated GICS sector changes (2016 Real Estate, 2018 Communication Services, 2023 reclassification),
-- as published; stock_assets/data/gics_sector_changes.csv.
CREATE TABLE IF NOT EXISTS market.gics_sector_changes (
    symbol         text NOT NULL,
    effective_date date NOT NULL,          -- first session under the new sector
    from_sector    text NOT NULL,
    to_sector      text NOT NULL,
    change         text NOT NULL,          -- which GICS revision
    PRIMARY KEY (symbol, effective_date)
);

-- GICS sector per symbol and period: the current sector (market.ticker_universe) back to the latest
-- change, the sector each change moved a symbol from before it. A symbol is in `sector` on days
-- valid_from <= day < valid_to; 0001-01-01 / 9999-12-31 for open ends. Built by `sector_classification`.
CREATE TABLE IF NOT EXISTS market.sector_classification (
    symbol     text NOT NULL,
    sector     text NOT NULL,
    valid_from date NOT NULL,
    valid_to   date NOT NULL,
    source     text NOT NULL,              -- 'current' (constituents list) or the GICS revision
    PRIMARY KEY (symbol, valid_from),
    CONSTRAINT sector_classification_dates CHECK (valid_to > valid_from)
);

-- "Volume-weighted" was share-volume weighted: renamed to say so; dollar-volume weighting added.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'market'
               AND table_name = 'sector_daily_performance' AND column_name = 'volume_weighted_return') THEN
        ALTER TABLE market.sector_daily_performance RENAME COLUMN volume_weighted_return TO share_volume_weighted_return;
    END IF;
    IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'market'
               AND table_name = 'sector_monthly_summary' AND column_name = 'volume_weighted_return') THEN
        ALTER TABLE market.sector_monthly_summary RENAME COLUMN volume_weighted_return TO share_volume_weighted_return;
    END IF;
END
$$;
ALTER TABLE market.sector_daily_performance
    ADD COLUMN IF NOT EXISTS dollar_volume_weighted_return double precision;
ALTER TABLE market.sector_monthly_summary
    ADD COLUMN IF NOT EXISTS dollar_volume_weighted_return double precision,
    ADD COLUMN IF NOT EXISTS mean_member_return double precision;

COMMENT ON COLUMN market.sector_daily_performance.members IS
    'point-in-time members (index membership and GICS sector of that day) with a stored return that day';
COMMENT ON COLUMN market.sector_daily_performance.equal_weight_return IS
    'mean of the members'' total returns (adj_close over the previous stored close)';
COMMENT ON COLUMN market.sector_daily_performance.dollar_volume_weighted_return IS
    'members'' total returns weighted by that day''s dollar volume (close * volume)';
COMMENT ON COLUMN market.sector_daily_performance.share_volume_weighted_return IS
    'members'' total returns weighted by that day''s share volume (shares traded; not dollar volume)';
COMMENT ON COLUMN market.sector_monthly_summary.equal_weight_return IS
    'daily equal-weight returns compounded: a portfolio rebalanced to equal weights every day';
COMMENT ON COLUMN market.sector_monthly_summary.mean_member_return IS
    'average of the members'' own returns over their member days of the month (buy and hold per member)';
COMMENT ON COLUMN market.sector_monthly_summary.dollar_volume_weighted_return IS
    'daily dollar-volume-weighted returns compounded';
COMMENT ON COLUMN market.sector_monthly_summary.share_volume_weighted_return IS
    'daily share-volume-weighted returns compounded';

-- One row per member and session of [month_start, month_end): the members of that day (membership
-- and sector as of that day), with the day's total return over the previous stored close, which may
-- lie in the previous month (up to 14 days back). The one definition both sector queries use.
CREATE OR REPLACE FUNCTION market.sector_member_days(month_start date, month_end date)
RETURNS TABLE (symbol text, trade_date date, sector text, daily_return double precision,
               close double precision, volume bigint)
LANGUAGE sql STABLE
AS $$
    WITH window_prices AS (
        SELECT p.symbol, p.trade_date, p.close, p.volume,
               p.adj_close / lag(p.adj_close) OVER (PARTITION BY p.symbol ORDER BY p.trade_date) - 1 AS daily_return
        FROM market.prices p
        WHERE p.trade_date >= month_start - 14
          AND p.trade_date < month_end
          -- Only symbols that are members at some point of the window: the returns are per symbol,
          -- so leaving the others out changes no member's return, and a universe with many
          -- non-members (ETFs, listings abroad, a whole market) no longer sorts them all first.
          AND EXISTS (SELECT 1 FROM market.index_membership im
                      WHERE im.symbol = p.symbol
                        AND im.valid_from < month_end
                        AND (im.valid_to IS NULL OR im.valid_to > month_start - 14))
    )
    SELECT w.symbol, w.trade_date, c.sector, w.daily_return, w.close, w.volume
    FROM window_prices w
    JOIN market.index_membership m
      ON m.symbol = w.symbol AND w.trade_date >= m.valid_from AND (m.valid_to IS NULL OR w.trade_date < m.valid_to)
    JOIN market.sector_classification c
      ON c.symbol = w.symbol AND w.trade_date >= c.valid_from AND w.trade_date < c.valid_to
    WHERE w.trade_date >= month_start
      AND w.daily_return IS NOT NULL
$$;
