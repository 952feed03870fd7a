-- Shared state of the quote client's governance: one rate limit, one circuit breaker and one
-- response cache for every process and run that uses this database (stock_assets/defs/quotes/).
-- Dagster runs steps in separate processes, so state kept in memory would protect nothing.
-- Re-runnable: IF NOT EXISTS / CREATE OR REPLACE only.

CREATE SCHEMA IF NOT EXISTS quotes;

-- Rate limit: a GCRA ("virtual scheduling") bucket per name. `tat` is the theoretical arrival
-- time of the next request at the sustained rate; a request may leave at tat - tolerance, where
-- tolerance = (burst - 1) / rate. `hold_until` is set when the upstream answered 429 with a
-- Retry-After: nothing leaves before it, whoever reserved a slot earlier.
CREATE TABLE IF NOT EXISTS quotes.rate_buckets (
    name        text PRIMARY KEY,
    tat         timestamptz NOT NULL,
    hold_until  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Reserve the next slot and return how many seconds to wait for it (0 = go now). One statement
-- per request; the row lock serialises reservations, so slots never overlap across processes.
-- The clock is the database's, read after the lock is held: every process agrees on it.
-- `p_guard_s` trims the burst tolerance a little so that network jitter between the slot and the
-- request reaching the upstream cannot make two requests look closer than allowed.
CREATE OR REPLACE FUNCTION quotes.reserve_slot(p_name text, p_rate float8, p_burst integer, p_guard_s float8)
RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    v_emission  interval := make_interval(secs => 1.0 / p_rate);
    v_tolerance interval := make_interval(secs => greatest((p_burst - 1) / p_rate - p_guard_s, 0));
    v_tat       timestamptz;
    v_hold      timestamptz;
    v_now       timestamptz;
    v_slot      timestamptz;
BEGIN
    INSERT INTO quotes.rate_buckets (name, tat) VALUES (p_name, clock_timestamp())
    ON CONFLICT (name) DO NOTHING;
    SELECT b.tat, b.hold_until INTO v_tat, v_hold FROM quotes.rate_buckets b WHERE b.name = p_name FOR UPDATE;
    v_now := clock_timestamp();
    v_slot := greatest(v_now, v_tat - v_tolerance, coalesce(v_hold, v_now));
    UPDATE quotes.rate_buckets
       SET tat = greatest(v_tat, v_slot) + v_emission, updated_at = v_now
     WHERE name = p_name;
    RETURN extract(epoch FROM v_slot - v_now);
END
$$;

-- Seconds left of a Retry-After hold (0 when none): checked just before sending, because a slot
-- reserved before the 429 arrived must not be used during the hold.
CREATE OR REPLACE FUNCTION quotes.hold_remaining(p_name text)
RETURNS float8
LANGUAGE sql STABLE AS $$
    SELECT coalesce(greatest(extract(epoch FROM max(hold_until) - clock_timestamp()), 0), 0)
      FROM quotes.rate_buckets WHERE name = p_name
$$;

-- The upstream said "wait p_seconds" (429 + Retry-After): hold every process until then and
-- spend the burst, so requests resume one at a time at the sustained rate.
CREATE OR REPLACE FUNCTION quotes.hold_bucket(p_name text, p_rate float8, p_burst integer, p_seconds float8)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_until timestamptz := clock_timestamp() + make_interval(secs => p_seconds);
BEGIN
    INSERT INTO quotes.rate_buckets (name, tat) VALUES (p_name, clock_timestamp())
    ON CONFLICT (name) DO NOTHING;
    UPDATE quotes.rate_buckets
       SET hold_until = greatest(coalesce(hold_until, v_until), v_until),
           tat = greatest(tat, v_until + make_interval(secs => (p_burst - 1) / p_rate)),
           updated_at = clock_timestamp()
     WHERE name = p_name;
END
$$;

-- Circuit breaker, one row per name. `failures` counts consecutive transient failures; at the
-- threshold the breaker opens until `open_until`; then exactly one caller gets the probe
-- (half_open, `probe_started_at`); the probe's outcome closes or re-opens it. A probe that never
-- reports (its process died) is given away again after the probe timeout.
CREATE TABLE IF NOT EXISTS quotes.breakers (
    name              text PRIMARY KEY,
    state             text NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open')),
    failures          integer NOT NULL DEFAULT 0,
    opened_at         timestamptz,
    open_until        timestamptz,
    probe_started_at  timestamptz,
    last_cause        text,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- May a request go upstream now? Closed: yes (a plain read, no lock: the common path). Open and
-- cooling down: no, with the seconds left and the cause. Cool-down over: this caller becomes the
-- single probe (the row lock makes that a race with one winner).
CREATE OR REPLACE FUNCTION quotes.breaker_admit(p_name text, p_probe_timeout_s float8)
RETURNS TABLE (allowed boolean, state text, probe boolean, retry_in_s float8, cause text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    b   quotes.breakers%ROWTYPE;
    now timestamptz;
BEGIN
    SELECT * INTO b FROM quotes.breakers WHERE name = p_name;
    IF NOT FOUND OR b.state = 'closed' THEN
        RETURN QUERY SELECT true, 'closed'::text, false, 0::float8, NULL::text;
        RETURN;
    END IF;
    SELECT * INTO b FROM quotes.breakers WHERE name = p_name FOR UPDATE;
    now := clock_timestamp();
    IF b.state = 'closed' THEN
        RETURN QUERY SELECT true, 'closed'::text, false, 0::float8, NULL::text;
    ELSIF b.state = 'open' AND now < b.open_until THEN
        RETURN QUERY SELECT false, 'open'::text, false, extract(epoch FROM b.open_until - now)::float8, b.last_cause;
    ELSIF b.state = 'half_open' AND now < b.probe_started_at + make_interval(secs => p_probe_timeout_s) THEN
        RETURN QUERY SELECT false, 'half_open'::text, false,
            extract(epoch FROM b.probe_started_at + make_interval(secs => p_probe_timeout_s) - now)::float8,
            b.last_cause;
    ELSE
        UPDATE quotes.breakers SET state = 'half_open', probe_started_at = now, updated_at = now
         WHERE name = p_name;
        RETURN QUERY SELECT true, 'half_open'::text, true, 0::float8, b.last_cause;
    END IF;
END
$$;

-- Record the outcome of an admitted request; returns the state afterwards. A success resets the
-- count (and closes the breaker when it was the probe); a transient failure counts, opens the
-- breaker at the threshold, and re-opens it when the probe fails.
CREATE OR REPLACE FUNCTION quotes.breaker_record(
    p_name text, p_ok boolean, p_probe boolean, p_cause text, p_threshold integer, p_cooldown_s float8
)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    b   quotes.breakers%ROWTYPE;
    now timestamptz;
BEGIN
    IF p_ok THEN
        UPDATE quotes.breakers SET failures = 0, updated_at = clock_timestamp()
         WHERE name = p_name AND state = 'closed' AND failures <> 0;
        IF p_probe THEN
            UPDATE quotes.breakers
               SET state = 'closed', failures = 0, open_until = NULL, probe_started_at = NULL,
                   updated_at = clock_timestamp()
             WHERE name = p_name AND state = 'half_open';
        END IF;
        SELECT * INTO b FROM quotes.breakers WHERE name = p_name;
        RETURN coalesce(b.state, 'closed');
    END IF;
    INSERT INTO quotes.breakers (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    SELECT * INTO b FROM quotes.breakers WHERE name = p_name FOR UPDATE;
    now := clock_timestamp();
    IF b.state = 'closed' AND b.failures + 1 >= p_threshold
       OR b.state = 'half_open' AND p_probe THEN
        UPDATE quotes.breakers
           SET state = 'open', failures = b.failures + 1, opened_at = now,
               open_until = now + make_interval(secs => p_cooldown_s), probe_started_at = NULL,
               last_cause = p_cause, updated_at = now
         WHERE name = p_name;
        RETURN 'open';
    END IF;
    UPDATE quotes.breakers
       SET failures = CASE WHEN b.state = 'closed' THEN b.failures + 1 ELSE b.failures END,
           last_cause = p_cause, updated_at = now
     WHERE name = p_name;
    RETURN b.state;
END
$$;

-- Response cache: successful chart answers, keyed by a hash of the canonical request (scope,
-- symbol, range, interval, events and adjustment flags; never the crumb). The body is stored
-- compressed exactly as the upstream sent it, so yfinance parses a hit like a fresh answer.
CREATE TABLE IF NOT EXISTS quotes.response_cache (
    cache_key     text PRIMARY KEY,
    scope         text NOT NULL,
    symbol        text NOT NULL,
    request       text NOT NULL,
    range_end     timestamptz,
    status        integer NOT NULL,
    content_type  text NOT NULL,
    body          bytea NOT NULL,
    fetched_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS response_cache_expires_at ON quotes.response_cache (expires_at);
CREATE INDEX IF NOT EXISTS response_cache_scope_symbol ON quotes.response_cache (scope, symbol);
