-- Optional extensions. Re-runnable; a server that lacks one (or a role that may not create it)
-- carries on without it, and the code that would use it says so.

-- pg_prewarm: the cache warmer loads the current month's partition and indexes into shared buffers.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_prewarm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_prewarm is not available (%): cache warming will skip prewarming', SQLERRM;
END
$$;
