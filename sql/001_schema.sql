-- Tables of the stock_assets pipeline. Re-runnable: every statement is IF NOT EXISTS.
-- (The schema runner creates the `market` schema itself when it is missing.)

-- The ticker universe: S&P 500 constituents with GICS classification, upserted by `ticker_universe`.
CREATE TABLE IF NOT EXISTS market.ticker_universe (
    symbol        text PRIMARY KEY,           -- Yahoo spelling (BRK-B, not BRK.B)
    listed_symbol text NOT NULL,              -- spelling in the constituents list
    security      text NOT NULL,
    sector        text NOT NULL,              -- GICS sector
    sub_industry  text NOT NULL,              -- GICS sub-industry
    headquarters  text,
    date_added    date,
    cik           integer,
    founded       text,
    tracked       boolean NOT NULL DEFAULT false,  -- fetched by the pipeline
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Daily prices, one child table per month (created on demand by market.ensure_prices_partition).
CREATE TABLE IF NOT EXISTS market.prices (
    symbol      text             NOT NULL,
    trade_date  date             NOT NULL,
    open        double precision NOT NULL,
    high        double precision NOT NULL,
    low         double precision NOT NULL,
    close       double precision NOT NULL,   -- split-adjusted, as Yahoo reports it
    adj_close   double precision NOT NULL,   -- split- and dividend-adjusted
    volume      bigint           NOT NULL,
    dividend    double precision NOT NULL DEFAULT 0,  -- cash dividend going ex on trade_date
    split_ratio double precision NOT NULL DEFAULT 1,  -- e.g. 4 for a 4:1 split effective trade_date
    source      text             NOT NULL,   -- 'replay' or 'yahoo'
    loaded_at   timestamptz      NOT NULL DEFAULT now(),
    -- INCLUDE makes the key cover one symbol's close/volume reads (see 004_indexes.sql).
    CONSTRAINT prices_pkey PRIMARY KEY (symbol, trade_date) INCLUDE (close, adj_close, volume),
    CONSTRAINT prices_ohlc_consistent CHECK (low <= open AND low <= close AND open <= high AND close <= high),
    CONSTRAINT prices_positive CHECK (low > 0 AND adj_close > 0 AND volume >= 0)
) PARTITION BY RANGE (trade_date);

-- Rows the cleaning step rejected, with the reason; replaced per trading day on every run.
CREATE TABLE IF NOT EXISTS market.price_rejections (
    trade_date  date        NOT NULL,
    symbol      text        NOT NULL,
    reason      text        NOT NULL,
    detail      text,
    open        double precision,
    high        double precision,
    low         double precision,
    close       double precision,
    adj_close   double precision,
    volume      double precision,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Per sector and trading day, from market.prices joined to the universe.
CREATE TABLE IF NOT EXISTS market.sector_daily_performance (
    sector                 text             NOT NULL,
    trade_date             date             NOT NULL,
    members                integer          NOT NULL,  -- symbols with a return that day
    advancers              integer          NOT NULL,
    decliners              integer          NOT NULL,
    unchanged              integer          NOT NULL,
    equal_weight_return    double precision NOT NULL,  -- mean of total returns (adj_close)
    volume_weighted_return double precision,           -- returns weighted by share volume
    dollar_volume          double precision NOT NULL,  -- sum(close * volume)
    PRIMARY KEY (sector, trade_date)
);

-- Per sector and month, compounded from market.sector_daily_performance.
CREATE TABLE IF NOT EXISTS market.sector_monthly_summary (
    sector                 text             NOT NULL,
    month                  date             NOT NULL,  -- first day of the month
    trading_days           integer          NOT NULL,
    members                integer          NOT NULL,
    equal_weight_return    double precision NOT NULL,  -- compounded daily equal-weight returns
    volume_weighted_return double precision,
    advancer_share         double precision NOT NULL,  -- advancers / (advancers + decliners + unchanged)
    dollar_volume          double precision NOT NULL,
    best_day               date             NOT NULL,
    worst_day              date             NOT NULL,
    PRIMARY KEY (sector, month)
);
