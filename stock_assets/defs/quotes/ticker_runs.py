"""Run requests that fetch some tickers only and merge them into the stored days.

The new-ticker, gap and restatement sensors all ask for the same kind of run: `raw_quotes` (and
what follows) over a range of days, configured with `only_tickers`, optionally refreshing the
response cache. One builder keeps their tags, run keys and configuration alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import dagster as dg

from stock_assets.defs.partitions import range_tags

TRIGGER_TAG = "stock_assets/trigger"
TICKERS_TAG = "stock_assets/tickers"
# Tag values are indexed by Dagster's run storage: a universe's worth of symbols is abbreviated
# (the run configuration always holds the full list).
MAX_TAG_CHARS = 200


def tickers_tag(symbols: list[str]) -> str:
    """`AAPL,MSFT,...` or, when long, the first ones and how many more."""
    joined = ",".join(symbols)
    if len(joined) <= MAX_TAG_CHARS:
        return joined
    shown: list[str] = []
    for symbol in symbols:
        if len(",".join([*shown, symbol])) > MAX_TAG_CHARS - 20:
            break
        shown.append(symbol)
    return f"{','.join(shown)} (+{len(symbols) - len(shown)} more)"


def ticker_run_request(
    symbols: list[str], first: dt.date, last: dt.date, trigger: str, *, refresh_cache: bool = False,
    key_suffix: str = "",
) -> dg.RunRequest:
    """One run fetching `symbols` over [first, last] and merging them into the stored days.

    `refresh_cache` makes the quote client ask Yahoo again instead of answering from the response
    cache (a restatement after a split or dividend must not get the old prices back).
    """
    config: dict[str, object] = {"only_tickers": list(symbols)}
    if refresh_cache:
        config["refresh_cache"] = True
    names = ",".join(symbols)
    if len(names) > 60:
        names = f"{len(symbols)}-tickers-{hashlib.sha256(names.encode()).hexdigest()[:12]}"
    return dg.RunRequest(
        run_key=f"{trigger}:{names}:{first}:{last}{key_suffix}",
        run_config={"ops": {"raw_quotes": {"config": config}}},
        tags={**range_tags(first, last), TRIGGER_TAG: trigger, TICKERS_TAG: tickers_tag(list(symbols))},
    )
