"""Which daily bars Yahoo sent without a volume.

yfinance turns a `null` volume in Yahoo's chart answer into 0 (`df['Volume'].fillna(0)`), so a
bar whose volume Yahoo left out would reach cleaning as a zero-volume bar: a real "no trade"
and a missing figure would look the same. A `requests` response hook on the client's session
reads the chart answers as they pass (live, replayed, emulated or from the response cache) and
notes the local dates whose bar has prices but no volume; `QuoteClient.daily_bars` puts NaN back
into those rows' volume, so cleaning can reject them as `missing_volume`.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import requests

_CHART_PATH = "/v8/finance/chart/"


class MissingVolumes:
    """Per symbol, the local dates of bars Yahoo answered with prices but a null volume."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dates: dict[str, set[dt.date]] = {}

    def hook(self, response: requests.Response, *args, **kwargs) -> requests.Response:
        """The session's response hook: never changes the response, never raises."""
        try:
            self._note(response)
        except (ValueError, KeyError, TypeError, IndexError):
            pass  # not a chart answer we can read: yfinance reports it as it sees fit
        return response

    def take(self, symbol: str) -> set[dt.date]:
        """The dates noted for `symbol` since the last take, forgetting them."""
        with self._lock:
            return self._dates.pop(symbol, set())

    def _note(self, response: requests.Response) -> None:
        path = urlsplit(response.url or "").path
        if response.status_code != 200 or not path.startswith(_CHART_PATH):
            return
        body = response.content
        if b'"volume"' not in body or b"null" not in body:
            return  # the common case, without parsing the answer
        result = json.loads(body)["chart"]["result"][0]
        quote = result["indicators"]["quote"][0]
        zone = ZoneInfo(result["meta"].get("exchangeTimezoneName") or "America/New_York")
        missing = {
            dt.datetime.fromtimestamp(stamp, zone).date()
            for stamp, volume, close in zip(result.get("timestamp") or [], quote.get("volume") or [],
                                            quote.get("close") or [])
            if volume is None and close is not None
        }
        if missing:
            symbol = unquote(path.removeprefix(_CHART_PATH))
            with self._lock:
                self._dates.setdefault(symbol, set()).update(missing)


def watch(session: requests.Session) -> MissingVolumes:
    """The session's MissingVolumes, hooked into it on first use."""
    watcher = getattr(session, "_missing_volumes", None)
    if watcher is None:
        watcher = MissingVolumes()
        session.hooks.setdefault("response", []).append(watcher.hook)
        session._missing_volumes = watcher  # type: ignore[attr-defined]
    return watcher
