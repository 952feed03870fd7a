-- Monthly partitions of market.prices, created on demand. Re-runnable (CREATE OR REPLACE).

-- Name of the child table that holds the month containing `day`, e.g. prices_2020_03.
CREATE OR REPLACE FUNCTION market.prices_partition_name(day date)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT 'prices_' || to_char(day, 'YYYY_MM') $$;

-- Create (if missing) the partition for the month containing `day`; returns its name.
-- Identifiers are quoted by format('%I'); the bounds are passed as literals by format('%L').
CREATE OR REPLACE FUNCTION market.ensure_prices_partition(day date)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    month_start date := date_trunc('month', day)::date;
    month_end   date := (date_trunc('month', day) + interval '1 month')::date;
    child       text := market.prices_partition_name(day);
BEGIN
    IF to_regclass(format('market.%I', child)) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS market.%I PARTITION OF market.prices FOR VALUES FROM (%L) TO (%L)',
            child, month_start, month_end
        );
    END IF;
    RETURN child;
END
$$;

-- The swap load path: a month is built in an unindexed table of its own, indexed, then swapped in
-- for the old child table in the loader's transaction (readers see the old month or the new one).

-- Create the table a swap load fills for the month containing `day`, without indexes and with the
-- month's bounds as a CHECK constraint (so ATTACH need not scan it); returns its name. A month
-- that has no child table yet is built under its final name (market.prices_YYYY_MM: nothing to
-- rename later); a month that has one is built beside it as market.prices_YYYY_MM_load. Columns are
-- spelled out rather than copied with LIKE, which would hold a lock on market.prices until commit.
CREATE OR REPLACE FUNCTION market.create_prices_load_table(day date)
RETURNS text
LANGUAGE plpgsql
AS $$
DECLARE
    month_start date := date_trunc('month', day)::date;
    month_end   date := (date_trunc('month', day) + interval '1 month')::date;
    child       text := market.prices_partition_name(day);
    load_table  text := child || '_load';
BEGIN
    IF to_regclass(format('market.%I', child)) IS NULL THEN
        load_table := child;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS market.%I', child || '_load');
    EXECUTE format(
        'CREATE TABLE market.%I (
            symbol      text             NOT NULL,
            trade_date  date             NOT NULL,
            open        double precision NOT NULL,
            high        double precision NOT NULL,
            low         double precision NOT NULL,
            close       double precision NOT NULL,
            adj_close   double precision NOT NULL,
            volume      bigint           NOT NULL,
            dividend    double precision NOT NULL DEFAULT 0,
            split_ratio double precision NOT NULL DEFAULT 1,
            source      text             NOT NULL,
            loaded_at   timestamptz      NOT NULL DEFAULT now(),
            CONSTRAINT prices_ohlc_consistent CHECK (low <= open AND low <= close AND open <= high AND close <= high),
            CONSTRAINT prices_positive CHECK (low > 0 AND adj_close > 0 AND volume >= 0),
            CONSTRAINT %I CHECK (trade_date >= %L AND trade_date < %L)
        )', load_table, load_table || '_month', month_start, month_end);
    RETURN load_table;
END
$$;

-- Index the table create_prices_load_table made like market.prices (its key, 001_schema.sql) and
-- swap it in as the month's child table. Returns the number of rows the replaced child held.
CREATE OR REPLACE FUNCTION market.swap_in_prices_load_table(day date)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    month_start date := date_trunc('month', day)::date;
    month_end   date := (date_trunc('month', day) + interval '1 month')::date;
    child       text := market.prices_partition_name(day);
    load_table  text := child || '_load';
    replaced    bigint := 0;
BEGIN
    IF to_regclass(format('market.%I', load_table)) IS NULL THEN
        -- A new month, built under its final name: index it and attach it.
        EXECUTE format('ALTER TABLE market.%I ADD CONSTRAINT %I PRIMARY KEY (symbol, trade_date) INCLUDE (close, adj_close, volume)',
                       child, child || '_pkey');
    ELSE
        EXECUTE format('ALTER TABLE market.%I ADD CONSTRAINT %I PRIMARY KEY (symbol, trade_date) INCLUDE (close, adj_close, volume)',
                       load_table, load_table || '_pkey');
        EXECUTE format('SELECT count(*) FROM market.%I', child) INTO replaced;
        EXECUTE format('ALTER TABLE market.prices DETACH PARTITION market.%I', child);
        EXECUTE format('DROP TABLE market.%I', child);
        EXECUTE format('ALTER TABLE market.%I RENAME TO %I', load_table, child);
        EXECUTE format('ALTER INDEX market.%I RENAME TO %I', load_table || '_pkey', child || '_pkey');
        EXECUTE format('ALTER TABLE market.%I RENAME CONSTRAINT %I TO %I', child, load_table || '_month', child || '_month');
    END IF;
    EXECUTE format('ALTER TABLE market.prices ATTACH PARTITION market.%I FOR VALUES FROM (%L) TO (%L)',
                   child, month_start, month_end);
    RETURN replaced;
END
$$;
