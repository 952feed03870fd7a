-- Moves an operator has checked and confirmed as real (a spin-off's drop that happens to look like a
-- 2:1 split, a crash that landed on a split ratio): cleaning's day-over-day rules (split_mismatch,
-- implausible_jump) do not reject the bar of that symbol and day. Every other rule still applies.
-- Insert a row, then re-materialize cleaned_prices for that day (README, "What the checks mean").
-- Re-runnable: IF NOT EXISTS only.
CREATE TABLE IF NOT EXISTS market.confirmed_moves (
    symbol        text        NOT NULL,   -- Yahoo's spelling, as in market.prices
    trade_date    date        NOT NULL,   -- the day whose move is confirmed
    note          text        NOT NULL CHECK (note <> ''),  -- why: what was checked, against what
    confirmed_by  text        NOT NULL DEFAULT current_user,
    confirmed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, trade_date)
);
