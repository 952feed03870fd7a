"""What the client notes from each chart answer as it passes: missing volumes and the listing.

- *Missing volumes.* yfinance turns a `null` volume in Yahoo's chart answer into 0
  (`df['Volume'].fillna(0)`), so a bar whose volume Yahoo left out would reach cleaning as a
  zero-volume bar: a real "no trade" and a missing figure would look the same. The watcher notes
  the local dates whose bar has prices but no volume; `QuoteClient.daily_bars` puts NaN back into
  those rows' volume, so cleaning can reject them as `missing_volume`.
- *The listing.* The answer's `meta` names the exchange, its time zone, the currency and the
  instrument type. Read here from the document the transport already parsed (`chart_json`), it
  costs nothing; yfinance's `get_history_metadata()` would format the whole meta again (~1 ms a
  ticker, a tenth of a one-day request).

A `requests` response hook on the client's session reads the chart answers (live, replayed,
emulated or from the response cache).
"""

from __future__ import annotations

import datetime as dt
import threading
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import requests

from stock_assets.yahoo.chart_json import parsed

_CHART_PATH = "/v8/finance/chart/"
# The listing columns of the landing schema and the chart meta keys they come from.
LISTING_META = [("currency", "currency"), ("exchange", "exchangeName"),
                ("exchange_timezone", "exchangeTimezoneName"), ("instrument_type", "instrumentType")]


class ChartWatcher:
    """Per symbol, the local dates of bars Yahoo answered with prices but a null volume, and the
    listing its latest history answer described."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dates: dict[str, set[dt.date]] = {}
        self._listings: dict[str, dict[str, str | None]] = {}

    def hook(self, response: requests.Response, *args, **kwargs) -> requests.Response:
        """The session's response hook: never changes the response, never raises."""
        try:
            self._note(response)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            pass  # not a chart answer we can read: yfinance reports it as it sees fit
        return response

    def take(self, symbol: str) -> set[dt.date]:
        """The missing-volume dates noted for `symbol` since the last take, forgetting them."""
        with self._lock:
            return self._dates.pop(symbol, set())

    def take_listing(self, symbol: str) -> dict[str, str | None]:
        """The listing columns (`LISTING_META`) of `symbol`'s last chart answer, forgetting them
        (every column None when no answer was seen)."""
        with self._lock:
            return self._listings.pop(symbol, None) or {column: None for column, _ in LISTING_META}

    def forget(self, symbol: str) -> None:
        with self._lock:
            self._dates.pop(symbol, None)
            self._listings.pop(symbol, None)

    def _note(self, response: requests.Response) -> None:
        path = urlsplit(response.url or "").path
        if response.status_code != 200 or not path.startswith(_CHART_PATH):
            return
        symbol = unquote(path.removeprefix(_CHART_PATH))
        result = parsed(response)["chart"]["result"][0]
        meta = result.get("meta") or {}
        listing = {column: (str(meta[key]) if meta.get(key) else None) for column, key in LISTING_META}
        missing = set()
        body = response.content
        if b'"volume"' in body and b"null" in body:  # the common case needs no walk over the bars
            quote = result["indicators"]["quote"][0]
            zone = ZoneInfo(meta.get("exchangeTimezoneName") or "America/New_York")
            missing = {
                dt.datetime.fromtimestamp(stamp, zone).date()
                for stamp, volume, close in zip(result.get("timestamp") or [], quote.get("volume") or [],
                                                quote.get("close") or [])
                if volume is None and close is not None
            }
        with self._lock:
            self._listings[symbol] = listing
            if missing:
                self._dates.setdefault(symbol, set()).update(missing)


def watch(session: requests.Session) -> ChartWatcher:
    """The session's ChartWatcher, hooked into it on first use."""
    watcher = getattr(session, "_chart_watcher", None)
    if watcher is None:
        watcher = ChartWatcher()
        session.hooks.setdefault("response", []).append(watcher.hook)
        session._chart_watcher = watcher  # type: ignore[attr-defined]
    return watcher
