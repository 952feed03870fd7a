"""An offline Yahoo Finance: a `requests` transport adapter that answers yfinance from the archive.

Yahoo cannot be reached from everywhere this project runs, but the pipeline should still exercise
yfinance's real code path: its cookie and crumb dance, its chart-API parsing, time zones, event
merging and error handling. So instead of faking yfinance, the replay fakes the network: a
`requests.Session` whose adapter answers the HTTP requests yfinance makes with Yahoo-format
responses built from a `PriceArchive` (the bundled one, or the archive `STOCK_ASSETS_REPLAY_ARCHIVE`
names). Each listing is answered in its own market: bars stamped at its exchange's local open, the
meta naming its exchange, time zone and currency.

The replay is frozen in time at the archive's last close: `range=` windows, "now" and the market
metadata are relative to that moment. It answers

- `GET https://fc.yahoo.com` with Yahoo's 404 page and an `A3` cookie for `.yahoo.com`;
- `GET https://query{1,2}.finance.yahoo.com/v1/test/getcrumb` with a crumb;
- `GET https://query{1,2}.finance.yahoo.com/v8/finance/chart/<SYMBOL>` for daily, weekly and
  monthly bars, with Yahoo's error bodies for unknown symbols and unsupported intervals;

and anything else with a 404 that names the request, so nothing unexpected passes silently.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from fractions import Fraction
from http import HTTPStatus
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pandas as pd
import requests
from requests.adapters import BaseAdapter

from stock_assets.yahoo.archive import NASDAQ_LISTED, Listing, PriceArchive  # noqa: F401 - re-exported
from stock_assets.yahoo.wire import session_over, wire_response

MARKET_TIMEZONE = "America/New_York"
_MARKET_TZ = ZoneInfo(MARKET_TIMEZONE)

VALID_RANGES = ("1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max")
YAHOO_INTERVALS = ("1m", "2m", "5m", "15m", "30m", "60m", "90m", "1h", "4h", "1d", "5d", "1wk", "1mo", "3mo")
# Intervals the replay can build from daily bars, and how bars are grouped for each.
_BAR_PERIODS = {"1d": None, "1wk": "W-SUN", "1mo": "M"}

CRUMB = "Rp1ayCrumb0"
# yfinance persists the A3 cookie in its on-disk cache and reuses it until it expires, also for
# live Yahoo sessions; a short lifetime keeps a replay cookie from outliving the replay.
_COOKIE_LIFETIME_S = 300
_QUERY_HOSTS = frozenset({"query1.finance.yahoo.com", "query2.finance.yahoo.com"})
_CHART_PATH = "/v8/finance/chart/"
_SYMBOL = re.compile(r"[A-Z0-9.\-^=]{1,15}")
_EPOCH = re.compile(r"-?\d{1,12}")
_CUSTOM_RANGE = re.compile(r"([1-9]\d{0,3})(d|wk|mo|y)")
_RANGE_UNITS = {"wk": "weeks", "mo": "months", "y": "years"}
_NOT_FOUND = "No data found, symbol may be delisted"


class _ChartError(Exception):
    """A request Yahoo's chart API refuses, with the status and description Yahoo uses."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


class YahooReplayAdapter(BaseAdapter):
    """Answers yfinance's Yahoo requests from a `PriceArchive`.

    `requests` counts the requests answered by kind (`cookie`, `crumb`, `chart`, `unsupported`),
    and `chart_requests` keeps each chart request's symbol and query, so callers can assert how
    often, and for what, "Yahoo" was asked.
    """

    def __init__(self, archive: PriceArchive | None = None) -> None:
        super().__init__()
        self.archive = archive or PriceArchive.configured()
        self.requests: Counter[str] = Counter()
        self.chart_requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._symbols = frozenset(self.archive.symbols)
        last = self.archive.last_date
        self._now = _epoch(last, dt.time(16))
        self._until = last + dt.timedelta(days=1)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        is_get = request.method == "GET"
        if is_get and url.hostname == "fc.yahoo.com" and url.path in ("", "/"):
            kind, response = "cookie", _cookie_response(request)
        elif is_get and url.hostname in _QUERY_HOSTS and url.path == "/v1/test/getcrumb":
            kind, response = "crumb", _response(request, 200, CRUMB.encode(), "text/plain;charset=utf-8")
        elif is_get and url.hostname in _QUERY_HOSTS and url.path.startswith(_CHART_PATH):
            kind, response = "chart", self._chart(request, url)
        else:
            description = f"The Yahoo replay does not serve {request.method} {url.scheme}://{url.netloc}{url.path}"
            body = {"error": {"code": "Not Found", "description": description}}
            kind, response = "unsupported", _json_response(request, 404, body)
        with self._lock:
            self.requests[kind] += 1
            if kind == "chart":
                query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                self.chart_requests.append({"symbol": unquote(url.path.removeprefix(_CHART_PATH)), **query})
        return response

    def close(self) -> None:
        """Nothing to release: no connections are ever opened."""

    def _chart(self, request: requests.PreparedRequest, url: SplitResult) -> requests.Response:
        symbol = unquote(url.path.removeprefix(_CHART_PATH))
        if not _SYMBOL.fullmatch(symbol) or symbol not in self._symbols:
            return _json_response(request, 404, _chart_error("Not Found", _NOT_FOUND))
        query = {name: values[-1] for name, values in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body = self._chart_body(symbol, query)
        except _ChartError as err:
            return _json_response(request, err.status, _chart_error(HTTPStatus(err.status).phrase, err.description))
        return _json_response(request, 200, body)

    def _chart_body(self, symbol: str, query: Mapping[str, str]) -> dict[str, Any]:
        interval = query.get("interval", "1d")
        if interval not in YAHOO_INTERVALS:
            valid = ", ".join(YAHOO_INTERVALS)
            raise _ChartError(400, f"Invalid input - interval={interval} is not supported. Valid intervals: [{valid}]")
        bars = self.archive.bar_arrays(symbol)
        listing = self.archive.listing(symbol)
        opens = _opening_times(bars["date"], listing)
        start, end, range_name = self._window(query, opens)
        if interval not in _BAR_PERIODS:
            raise _ChartError(
                422,
                f"{interval} data not available for startTime={start} and endTime={end}. "
                "The Yahoo replay holds daily bars only.",
            )
        in_window = (opens >= start) & (opens < end)
        result: dict[str, Any] = {"meta": self._meta(listing, bars, opens, start, interval, range_name)}
        if not in_window.any():
            result["indicators"] = {"quote": [{}]}
        else:
            timestamps, window = _aggregate({column: values[in_window] for column, values in bars.items()},
                                            opens[in_window], interval, listing.timezone)
            result["timestamp"] = timestamps
            events = self._events(listing, query.get("events", ""), start, end)
            if events:
                result["events"] = events
            result["indicators"] = {
                "quote": [{column: window[column].tolist() for column in ("open", "high", "low", "close", "volume")}],
                "adjclose": [{"adjclose": window["adj_close"].tolist()}],
            }
        return {"chart": {"result": [result], "error": None}}

    def _window(self, query: Mapping[str, str], opens: np.ndarray) -> tuple[int, int, str]:
        """The requested [start, end) in epoch seconds, and the range name Yahoo echoes in meta."""
        if "period1" in query:
            start = _parse_epoch(query, "period1")
            end = _parse_epoch(query, "period2") if "period2" in query else self._now
            if start > end:
                raise _ChartError(
                    400, f"Invalid input - start date cannot be after end date. startDate = {start}, endDate = {end}"
                )
            return start, end, ""
        range_name = query.get("range")
        if range_name is None:
            raise _ChartError(400, "Invalid input - either range or period1 is required")
        custom = _CUSTOM_RANGE.fullmatch(range_name)
        if range_name == "max":
            start = int(opens[0])
        elif range_name == "ytd":
            start = _epoch(dt.date(self.archive.last_date.year, 1, 1), dt.time(0))
        elif custom and custom[2] == "d":  # Yahoo counts day ranges in trading days
            start = int(opens[-min(int(custom[1]), len(opens))])
        elif custom:
            now = pd.Timestamp(self._now, unit="s", tz=_MARKET_TZ)
            start = int((now - pd.DateOffset(**{_RANGE_UNITS[custom[2]]: int(custom[1])})).timestamp())
        else:
            raise _ChartError(
                400, f"Invalid input - range={range_name} is not supported. Valid ranges: [{', '.join(VALID_RANGES)}]"
            )
        return start, self._now, range_name

    def _meta(
        self, listing: Listing, bars: Mapping[str, np.ndarray], opens: np.ndarray, start: int, interval: str,
        range_name: str,
    ) -> dict[str, Any]:
        zone = ZoneInfo(listing.timezone)
        close_time = dt.datetime.fromtimestamp(self._now, zone)
        gmtoffset, timezone = int(close_time.utcoffset().total_seconds()), close_time.tzname()
        earlier = bars["close"][opens < start]
        previous_close = {"chartPreviousClose": round(float(earlier[-1]), 4)} if len(earlier) else {}
        last = self.archive.last_date

        def trading_period(begin: dt.time, finish: dt.time) -> dict[str, Any]:
            return {"timezone": timezone, "start": _epoch(last, begin, zone), "end": _epoch(last, finish, zone),
                    "gmtoffset": gmtoffset}

        opens_at = dt.datetime.combine(last, listing.opens)
        regular_end = (opens_at + dt.timedelta(hours=6, minutes=30)).time()
        return {
            "currency": listing.currency,
            "symbol": listing.symbol,
            "exchangeName": listing.exchange,
            "fullExchangeName": listing.full_exchange_name,
            "instrumentType": listing.instrument_type,
            "firstTradeDate": int(opens[0]),
            "regularMarketTime": self._now,
            "hasPrePostMarketData": True,
            "gmtoffset": gmtoffset,
            "timezone": timezone,
            "exchangeTimezoneName": listing.timezone,
            "regularMarketPrice": round(float(bars["close"][-1]), 4),
            **previous_close,
            "priceHint": 2,
            "currentTradingPeriod": {
                "pre": trading_period((opens_at - dt.timedelta(hours=5, minutes=30)).time(), listing.opens),
                "regular": trading_period(listing.opens, regular_end),
                "post": trading_period(regular_end, (opens_at + dt.timedelta(hours=10, minutes=30)).time()),
            },
            "dataGranularity": interval,
            "range": range_name,
            "validRanges": list(VALID_RANGES),
        }

    def _events(self, listing: Listing, requested: str, start: int, end: int) -> dict[str, Any]:
        """Yahoo's `events` object: only the kinds asked for, only inside [start, end)."""
        kinds = set(re.split(r"[,|]", requested))
        events: dict[str, Any] = {}
        if "div" in kinds:
            dividends = self.archive.dividends(listing.symbol)
            events["dividends"] = {
                str(stamp): {"amount": amount, "date": stamp}
                for stamp, amount in zip(_opening_times(dividends.index, listing).tolist(), dividends.tolist())
                if start <= stamp < end
            }
        if kinds & {"split", "splits"}:
            splits = self.archive.splits(listing.symbol)
            events["splits"] = {
                str(stamp): _split_event(stamp, ratio)
                for stamp, ratio in zip(_opening_times(splits.index, listing).tolist(), splits.tolist())
                if start <= stamp < end
            }
        return {kind: entries for kind, entries in events.items() if entries}


def replay_session(archive: PriceArchive | None = None) -> requests.Session:
    """A new `requests.Session` whose every http(s) request is answered by a `YahooReplayAdapter`.

    Hand it to yfinance (`yf.Ticker(symbol, session=session)`); the adapter, and its request
    counter, is `session.get_adapter("https://query2.finance.yahoo.com")`.
    """
    return session_over(YahooReplayAdapter(archive))


def _epoch(day: dt.date, time: dt.time, zone: ZoneInfo = _MARKET_TZ) -> int:
    return int(dt.datetime.combine(day, time, zone).timestamp())


def _opening_times(dates: Iterable[dt.date] | np.ndarray, listing: Listing | None = None) -> np.ndarray:
    """Epoch seconds of the session open in the listing's exchange time on each date (09:30 New
    York for a US listing, 08:00 London, 09:00 Tokyo): where Yahoo stamps daily bars and events."""
    opens, zone = (dt.time(9, 30), MARKET_TIMEZONE) if listing is None else (listing.opens, listing.timezone)
    days = dates if isinstance(dates, np.ndarray) else np.array(list(dates), dtype="datetime64[D]")
    opening = days.astype("datetime64[s]") + np.timedelta64(opens.hour * 3600 + opens.minute * 60, "s")
    return _seconds(pd.DatetimeIndex(opening).tz_localize(zone))


def _seconds(stamps: pd.DatetimeIndex) -> np.ndarray:
    return stamps.as_unit("s").asi8.astype("int64", copy=False)


def _aggregate(bars: Mapping[str, np.ndarray], opens: np.ndarray, interval: str,
               timezone: str = MARKET_TIMEZONE) -> tuple[list[int], Mapping[str, Any]]:
    """Bars and their timestamps at `interval`: daily as they are; weekly (stamped Monday 00:00) and
    monthly (stamped on the 1st, 00:00) aggregated from the daily bars, like Yahoo."""
    period = _BAR_PERIODS[interval]
    if period is None:
        return opens.tolist(), bars
    frame = pd.DataFrame({column: values for column, values in bars.items() if column != "date"})
    starts = pd.DatetimeIndex(bars["date"].astype("datetime64[s]")).to_period(period).start_time
    grouped = frame.groupby(starts, sort=True).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "adj_close": "last", "volume": "sum"}
    )
    return _seconds(grouped.index.tz_localize(timezone)).tolist(), grouped


def _split_event(stamp: int, ratio: float) -> dict[str, Any]:
    fraction = Fraction(ratio).limit_denominator(1000)
    return {
        "date": stamp,
        "numerator": fraction.numerator,
        "denominator": fraction.denominator,
        "splitRatio": f"{fraction.numerator}:{fraction.denominator}",
    }


def _parse_epoch(query: Mapping[str, str], name: str) -> int:
    value = query[name]
    if not _EPOCH.fullmatch(value):
        raise _ChartError(400, f"Invalid input - {name}={value} is not a number of seconds")
    return int(value)


def _chart_error(code: str, description: str) -> dict[str, Any]:
    return {"chart": {"result": None, "error": {"code": code, "description": description}}}


def _cookie_response(request: requests.PreparedRequest) -> requests.Response:
    cookie = (
        "A3=d=AQABBReplayCookieForTheOfflineYahooReplay&S=AQAAAReplay; "
        f"Max-Age={_COOKIE_LIFETIME_S}; Domain=.yahoo.com; Path=/; SameSite=None; Secure; HttpOnly"
    )
    body = b"<!DOCTYPE html><html><head><title>Yahoo</title></head><body>Not Found</body></html>"
    return _response(request, 404, body, "text/html;charset=utf-8", [("Set-Cookie", cookie)])


def _json_response(request: requests.PreparedRequest, status: int, body: Mapping[str, Any]) -> requests.Response:
    # orjson writes a missing value (NaN) as null, as Yahoo does, and 20 years of bars 5x faster.
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return _response(request, status, content, "application/json;charset=utf-8")


def _response(
    request: requests.PreparedRequest,
    status: int,
    body: bytes,
    content_type: str,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> requests.Response:
    """A `requests.Response` as `HTTPAdapter` would build it from the wire.

    The head is serialised and parsed by `http.client`, because `requests` reads `Set-Cookie`
    headers from the parsed message of the underlying response, not from `Response.headers`.
    """
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Date", formatdate(usegmt=True)),
        ("Cache-Control", "public, max-age=10, stale-while-revalidate=20"),
        *extra_headers,
    ]
    return wire_response(request, status, body, headers)
