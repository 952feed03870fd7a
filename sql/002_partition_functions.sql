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
