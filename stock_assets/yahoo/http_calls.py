"""What a request to Yahoo is, and what its answer means: the governed transport's vocabulary.

Every answer gets one verdict:

- OK: use it (a 200 chart answer with bars, a cookie, a crumb, anything not Yahoo's chart API).
- PERMANENT: Yahoo refused the question itself (404 "No data found, symbol may be delisted",
  400/422 invalid input). Retrying cannot help; the ticker is reported as failed.
- THROTTLED: 429 (`Edge: Too Many Requests`). Yahoo is fine and asks us to slow down: wait for
  Retry-After (or back off), then retry. Not counted by the breaker attempt by attempt.
- FAILED: 5xx, a body shorter than its Content-Length, or chart JSON that does not parse (a
  truncated body, Yahoo's "Will be right back" page). Retried and counted by the breaker.
- EMPTY: a 200 chart answer without bars for a window in which the symbol traded (its exchange's sessions
  between its first trade and its last) - Yahoo's silent throttling. Retried, never taken for
  "no trading". A window outside the symbol's trading life is a real empty answer (OK).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from zoneinfo import ZoneInfo

import requests

from stock_assets.defs.partitions import MARKET_TIMEZONE, trading_days
from stock_assets.markets import UnknownExchangeError, exchange_of, sessions
from stock_assets.yahoo.chart_json import parsed

CHART, AUTH, OTHER = "chart", "auth", "other"
_QUERY_HOSTS = frozenset({"query1.finance.yahoo.com", "query2.finance.yahoo.com"})
_AUTH_HOSTS = frozenset({"fc.yahoo.com", "guce.yahoo.com", "consent.yahoo.com"})
_CHART_PATH = "/v8/finance/chart/"
_MARKET_TZ = ZoneInfo(MARKET_TIMEZONE)


class Verdict(enum.Enum):
    OK = "ok"
    PERMANENT = "permanent"
    THROTTLED = "throttled"
    FAILED = "failed"
    EMPTY = "empty"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str = ""
    retry_after_s: float | None = None


@dataclass(frozen=True)
class UpstreamCall:
    """One request as the governance sees it. `canonical` (and its hash, the cache key) holds
    everything that changes Yahoo's answer - scope (which upstream), symbol, range, interval,
    events, pre/post and adjustment flags - and nothing that does not (the crumb)."""

    kind: str
    scope: str
    symbol: str | None
    query: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, request: requests.PreparedRequest, scope: str) -> UpstreamCall:
        url = urlsplit(request.url or "")
        host = url.hostname or ""
        if request.method == "GET" and host in _QUERY_HOSTS and url.path.startswith(_CHART_PATH):
            query = tuple(sorted((k, v) for k, v in parse_qsl(url.query, keep_blank_values=True) if k != "crumb"))
            return cls(CHART, scope, unquote(url.path.removeprefix(_CHART_PATH)), query)
        if host in _AUTH_HOSTS or url.path == "/v1/test/getcrumb":
            return cls(AUTH, scope, None, ())
        return cls(OTHER, scope, None, ())

    @property
    def params(self) -> dict[str, str]:
        return dict(self.query)

    @property
    def is_history(self) -> bool:
        """A chart request for an explicit window (what a fetch is for), as opposed to yfinance's
        `range=1d` time-zone probe."""
        return self.kind == CHART and "period1" in self.params

    @property
    def canonical(self) -> str:
        return json.dumps([self.scope, self.symbol, list(self.query)], separators=(",", ":"))

    @property
    def cache_key(self) -> str:
        return hashlib.sha256(self.canonical.encode()).hexdigest()

    @property
    def range_end(self) -> dt.datetime | None:
        period2 = self.params.get("period2")
        return dt.datetime.fromtimestamp(int(period2), dt.UTC) if period2 and period2.isdigit() else None

    @property
    def label(self) -> str:
        if self.kind != CHART:
            return self.kind
        params = self.params
        if self.is_history and params.get("period2", "").isdigit():
            first = _market_date(int(params["period1"]))
            last = _market_date(int(params["period2"]) - 1)
            return f"{self.symbol} {first}..{last}"
        return f"{self.symbol} range={params.get('range', '?')}"

    def cache_ttl_s(self, past_ttl_s: float, recent_ttl_s: float, now: dt.datetime | None = None) -> float:
        """Long for a window that ended before today (New York) began, short when it touches today."""
        end = self.range_end
        now = now or dt.datetime.now(dt.UTC)
        today_began = dt.datetime.combine(now.astimezone(_MARKET_TZ).date(), dt.time(0), _MARKET_TZ)
        return past_ttl_s if self.is_history and end is not None and end <= today_began else recent_ttl_s


def judge(call: UpstreamCall, response: requests.Response) -> Judgement:
    """The verdict on an answer whose body has been read (`response.content`)."""
    status = response.status_code
    if status == 429:
        return Judgement(Verdict.THROTTLED, f"HTTP 429 {_body_hint(response) or 'Too Many Requests'}",
                         parse_retry_after(response.headers.get("Retry-After")))
    if status >= 500:
        return Judgement(Verdict.FAILED, f"HTTP {status} {response.reason or ''}".strip())
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) != len(response.content):
        return Judgement(Verdict.FAILED, f"truncated body ({len(response.content)} of {declared} bytes)")
    if call.kind != CHART:
        return Judgement(Verdict.OK)
    if status != 200:
        return Judgement(Verdict.PERMANENT, f"HTTP {status}: {_chart_error(response) or response.reason}")
    try:
        document = parsed(response)
        chart = document["chart"]
    except (ValueError, KeyError, TypeError):
        if _looks_like_html(response):
            return Judgement(Verdict.FAILED, f"an HTML page instead of chart JSON{_html_title(response)}")
        return Judgement(Verdict.FAILED, "chart answer is not complete JSON (truncated body?)")
    if chart.get("error"):
        return Judgement(Verdict.PERMANENT, str(chart["error"].get("description") or chart["error"]))
    results = chart.get("result") or [{}]
    if call.is_history and not results[0].get("timestamp") and _traded_within(call, results[0].get("meta") or {}):
        return Judgement(Verdict.EMPTY, "empty chart answer for a window with trading sessions")
    return Judgement(Verdict.OK)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds (fractions tolerated) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def _traded_within(call: UpstreamCall, meta: dict[str, Any]) -> bool:
    """Whether the window holds a session of the symbol's exchange (NYSE for a US listing, London
    for OCDO.L, ...) inside the symbol's trading life (meta)."""
    params = call.params
    try:
        start, end = int(params["period1"]), int(params.get("period2") or meta["regularMarketTime"] + 1)
    except (KeyError, ValueError, TypeError):
        return True  # cannot tell: an empty answer is suspicious
    if isinstance(meta.get("firstTradeDate"), int):
        start = max(start, meta["firstTradeDate"])
    if isinstance(meta.get("regularMarketTime"), int):
        end = min(end, meta["regularMarketTime"] + 1)
    if start >= end:
        return False
    try:
        exchange = exchange_of(call.symbol or "")
    except UnknownExchangeError:
        return bool(trading_days(_market_date(start), _market_date(end - 1) + dt.timedelta(days=1)))
    zone = ZoneInfo(exchange.timezone)
    return bool(sessions(exchange.calendar, _market_date(start, zone), _market_date(end - 1, zone) + dt.timedelta(days=1)))


def _market_date(epoch: int, zone: ZoneInfo = _MARKET_TZ) -> dt.date:
    return dt.datetime.fromtimestamp(epoch, zone).date()


def _chart_error(response: requests.Response) -> str | None:
    try:
        return parsed(response)["chart"]["error"]["description"]
    except (ValueError, KeyError, TypeError):
        return None


def _looks_like_html(response: requests.Response) -> bool:
    content_type = response.headers.get("Content-Type", "").lower()
    start = response.content[:200].lstrip().lower()
    return "html" in content_type or start.startswith((b"<!doctype html", b"<html"))


def _html_title(response: requests.Response) -> str:
    """` ("Will be right back")`: the page's title, when it has one."""
    text = response.content[:4000].decode("utf-8", "replace")
    lower = text.lower()
    start, end = lower.find("<title>"), lower.find("</title>")
    if start < 0 or end <= start:
        return ""
    title = " ".join(text[start + len("<title>"):end].split())[:120]
    return f" ({title!r})" if title else ""


def _body_hint(response: requests.Response) -> str:
    text = response.content[:80].decode("utf-8", "replace").strip()
    return text if text and "<" not in text else ""
