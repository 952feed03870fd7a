"""A Yahoo Finance emulator for tests and benchmarks: the replay's answers, Yahoo's bad manners.

Tests must prove that the quote client never gets the project banned, so they need an upstream
that punishes what Yahoo punishes. `YahooEmulator` answers with the replay's Yahoo-format payloads
(`YahooReplayAdapter`) but

- enforces its own rate limit, a GCRA bucket (rate, burst) over every request it receives,
  answering excess requests with `429 Edge: Too Many Requests` and a `Retry-After`;
- can be told to storm (429 for every request for N seconds), and to inject, for chosen symbols
  and a chosen number of times: 5xx, timeouts, truncated JSON, empty results, 404-delisted and
  an HTML page with status 200 (Yahoo's "Will be right back");
- can change its history while it runs (`use_archive`): a split or dividend going ex restates the
  past, so a test can hold what Yahoo said before it (`history_as_known_on`) against what it says
  after;
- logs every request (arrival time, kind, symbol, query, status) so tests count what reached it.

It is reachable two ways: in-process (`emulator.adapter()`, a requests transport) and over a
loopback HTTP server on 127.0.0.1 (`with emulator.serve() as url:` plus `RedirectAdapter(url)` from `stock_assets.yahoo.wire` on
the client side), which the multi-process benchmark needs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pandas as pd
import requests
from requests.adapters import BaseAdapter

from stock_assets.yahoo.archive import PriceArchive
from stock_assets.yahoo.replay import YahooReplayAdapter
from stock_assets.yahoo.wire import wire_response

FAULT_KINDS = ("5xx", "timeout", "truncated", "empty", "delisted", "html")
TOO_MANY_REQUESTS = b"Edge: Too Many Requests"
_DELISTED = {"chart": {"result": None, "error": {"code": "Not Found",
                                                 "description": "No data found, symbol may be delisted"}}}
_CHART_PATH = "/v8/finance/chart/"
_MEMO_SIZE = 512


@dataclass
class Fault:
    """Inject `kind` into chart requests for `symbols` (None: every symbol), `times` times (None:
    until removed). `history_only` spares yfinance's `range=1d` time-zone probe."""

    kind: str
    symbols: frozenset[str] | None = None
    times: int | None = None
    status: int = 503
    history_only: bool = False

    def matches(self, symbol: str | None, history: bool) -> bool:
        if symbol is None or (self.history_only and not history) or self.times == 0:
            return False
        return self.symbols is None or symbol in self.symbols


@dataclass(frozen=True)
class Logged:
    at: float  # time.monotonic() on arrival
    kind: str  # cookie, crumb, history, tz, other
    symbol: str | None
    query: dict[str, str]
    status: int  # 0 for a timeout (no answer)


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    truncate: bool = False  # send only half the body (Content-Length still says all of it)
    timeout: bool = False  # never answer


class YahooEmulator:
    def __init__(self, rate_per_s: float = 1.0, burst: int = 2, archive: PriceArchive | None = None,
                 timeout_delay_s: float = 2.0, latency_s: float = 0.0) -> None:
        self.rate_per_s, self.burst, self.timeout_delay_s = rate_per_s, burst, timeout_delay_s
        self.latency_s = latency_s  # added to every answer (to make concurrent requests overlap)
        self.replay = YahooReplayAdapter(archive)
        self.log: list[Logged] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._tat = float("-inf")
        self._storm_until = float("-inf")
        self._memo: dict[tuple, Answer] = {}

    # -- control -------------------------------------------------------------------------------

    def inject(self, kind: str, symbols: Iterable[str] | None = None, times: int | None = None,
               status: int = 503, history_only: bool | None = None) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULT_KINDS}")
        fault = Fault(kind, frozenset(symbols) if symbols is not None else None, times, status,
                      kind == "empty" if history_only is None else history_only)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def use_archive(self, archive: PriceArchive) -> None:
        """Answer from `archive` from now on (Yahoo's history changed, e.g. after a split)."""
        with self._lock:
            self.replay = YahooReplayAdapter(archive)
            self._memo.clear()

    def storm(self, seconds: float) -> None:
        """Answer every request with 429 for the next `seconds`."""
        with self._lock:
            self._storm_until = time.monotonic() + seconds

    # -- what reached us -----------------------------------------------------------------------

    def requests_of(self, kind: str, symbol: str | None = None, status: int | None = None) -> list[Logged]:
        with self._lock:
            return [e for e in self.log if e.kind == kind and (symbol is None or e.symbol == symbol)
                    and (status is None or e.status == status)]

    @property
    def throttled(self) -> int:
        with self._lock:
            return sum(1 for e in self.log if e.status == 429)

    # -- answering -----------------------------------------------------------------------------

    def answer(self, request: requests.PreparedRequest) -> Answer:
        url = urlsplit(request.url or "")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        symbol = unquote(url.path.removeprefix(_CHART_PATH)) if url.path.startswith(_CHART_PATH) else None
        kind = _kind(url.hostname or "", url.path, query)
        with self._lock:
            # Read under the lock: a thread that read the clock and then waited for the lock would
            # otherwise be judged at a time before requests already let through, and refused.
            now = time.monotonic()
            answer = self._refusal(now)
            fault = None
            if answer is None:
                fault = next((f for f in self.faults if f.matches(symbol, kind == "history")), None)
                if fault is not None and fault.times is not None:
                    fault.times -= 1
        if self.latency_s:
            time.sleep(self.latency_s)
        if answer is None:
            answer = self._replayed(request, url, query)
            if fault is not None:
                answer = _faulty(answer, fault)
        with self._lock:
            self.log.append(Logged(now, kind, symbol, {k: v for k, v in query.items() if k != "crumb"},
                                   0 if answer.timeout else answer.status))
        return answer

    def _replayed(self, request: requests.PreparedRequest, url, query: dict[str, str]) -> Answer:
        """The replay's answer, memoised per request (crumb aside): building a chart answer costs
        milliseconds of pandas under the GIL, which would jitter the arrival times of requests
        handled meanwhile - and arrival times are what the emulator limits and measures."""
        key = (request.method, url.hostname, url.path, tuple(sorted((k, v) for k, v in query.items() if k != "crumb")))
        with self._lock:
            memo = self._memo.get(key)
        if memo is None:
            with self._lock:
                replay = self.replay
            replayed = replay.send(request)
            memo = Answer(replayed.status_code, list(replayed.raw.headers.items()), replayed.content)
            with self._lock:
                if len(self._memo) >= _MEMO_SIZE:
                    self._memo.pop(next(iter(self._memo)))
                self._memo[key] = memo
        return Answer(memo.status, list(memo.headers), memo.body)

    def warm_up(self) -> None:
        """Answer one chart request without logging or limiting it, so the first real request is
        not slowed by one-off loading (which would look like jitter to the rate check)."""
        request = requests.Request("GET", "https://query2.finance.yahoo.com/v8/finance/chart/AAPL",
                                   params={"range": "1d", "interval": "1d"}).prepare()
        self._replayed(request, urlsplit(request.url), {"range": "1d", "interval": "1d"})

    def _refusal(self, now: float) -> Answer | None:
        """429 during a storm or above the rate limit (refused requests consume no tokens)."""
        if now < self._storm_until:
            return _too_many(self._storm_until - now)
        emission = 1.0 / self.rate_per_s
        tolerance = (self.burst - 1) * emission
        if now < self._tat - tolerance:
            return _too_many(self._tat - tolerance - now)
        self._tat = max(self._tat, now) + emission
        return None

    # -- transports ----------------------------------------------------------------------------

    def adapter(self) -> EmulatorAdapter:
        return EmulatorAdapter(self)

    def session(self) -> requests.Session:
        session = requests.Session()
        adapter = self.adapter()
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    @contextmanager
    def serve(self) -> Iterator[str]:
        """A loopback HTTP server for this emulator; yields its base URL (http://127.0.0.1:PORT)."""
        emulator = self

        class Handler(_Handler):
            pass

        Handler.emulator = emulator
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, name="yahoo-emulator", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


class EmulatorAdapter(BaseAdapter):
    """The emulator as an in-process requests transport. A timeout fault raises ReadTimeout at
    once (what the caller would see after waiting), a truncated one delivers half the body."""

    def __init__(self, emulator: YahooEmulator) -> None:
        super().__init__()
        self.emulator = emulator

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        answer = self.emulator.answer(request)
        if answer.timeout:
            raise requests.exceptions.ReadTimeout(f"emulated timeout for {request.url}", request=request)
        body = answer.body[: len(answer.body) // 2] if answer.truncate else answer.body
        return wire_response(request, answer.status, body, answer.headers)

    def close(self) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    emulator: YahooEmulator

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        host, _, rest = self.path.lstrip("/").partition("/")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = requests.Request("GET", f"https://{host}/{rest}", headers=headers).prepare()
        answer = self.emulator.answer(request)
        if answer.timeout:
            time.sleep(self.emulator.timeout_delay_s)
            self.close_connection = True
            return
        lines = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}"]
        lines += [f"{name}: {value}" for name, value in answer.headers if name.lower() not in ("server", "connection")]
        if answer.truncate:
            lines.append("Connection: close")
            self.close_connection = True
        body = answer.body[: len(answer.body) // 2] if answer.truncate else answer.body
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)  # one write, no stall

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass


def _kind(host: str, path: str, query: dict[str, str]) -> str:
    if host == "fc.yahoo.com":
        return "cookie"
    if path == "/v1/test/getcrumb":
        return "crumb"
    if path.startswith(_CHART_PATH):
        return "history" if "period1" in query else "tz"
    return "other"


def _too_many(wait_s: float) -> Answer:
    return Answer(429, [("Content-Type", "text/html;charset=utf-8"), ("Content-Length", str(len(TOO_MANY_REQUESTS))),
                        ("Retry-After", str(max(math.ceil(wait_s), 1)))], TOO_MANY_REQUESTS)


def _faulty(answer: Answer, fault: Fault) -> Answer:
    if fault.kind == "timeout":
        return Answer(0, [], b"", timeout=True)
    if fault.kind == "5xx":
        body = b"<html><body>Service Unavailable</body></html>"
        return Answer(fault.status, [("Content-Type", "text/html"), ("Content-Length", str(len(body)))], body)
    if fault.kind == "html":
        body = b"<html><head><title>Yahoo</title></head><body>Will be right back...</body></html>"
        return Answer(200, [("Content-Type", "text/html;charset=utf-8"), ("Content-Length", str(len(body)))], body)
    if fault.kind == "delisted":
        return _json(404, _DELISTED)
    if fault.kind == "truncated":
        return Answer(answer.status, answer.headers, answer.body, truncate=True)
    document = json.loads(answer.body)  # empty: the meta, no bars
    result = (document.get("chart", {}).get("result") or [None])[0]
    if result is None:
        return answer
    result.pop("timestamp", None)
    result.pop("events", None)
    result["indicators"] = {"quote": [{}]}
    return _json(200, document)


def _json(status: int, document: dict) -> Answer:
    body = json.dumps(document, separators=(",", ":")).encode()
    return Answer(status, [("Content-Type", "application/json;charset=utf-8"), ("Content-Length", str(len(body)))], body)


# -- histories that change -------------------------------------------------------------------------


def history_as_known_on(archive: PriceArchive, day: dt.date) -> PriceArchive:
    """`archive` as Yahoo would have answered before `day`: no bars from `day` on, and the past not
    yet adjusted for the splits and dividends going ex on or after it (prices times the later split
    ratios, adj_close without the later dividend steps)."""
    prices, splits = archive._prices, archive._splits  # noqa: SLF001 - a copy is built, never changed
    cut = pd.Timestamp(day)
    known = prices[prices["date"] < cut].copy()
    later = splits[splits["date"] >= cut]
    for symbol, rows in known.groupby("symbol"):
        ratio = float((later.loc[later["symbol"] == symbol, "numerator"]
                       / later.loc[later["symbol"] == symbol, "denominator"]).prod())
        factor = rows["adj_close"] / rows["close"]
        last_factor = float(factor.iloc[-1])  # the later dividends' steps, all of them
        index = rows.index
        known.loc[index, ["open", "high", "low", "close"]] = rows[["open", "high", "low", "close"]] * ratio
        known.loc[index, "adj_close"] = known.loc[index, "close"] * (factor / last_factor)
        known.loc[index, "volume"] = (rows["volume"] / ratio).round().astype("int64")
    return PriceArchive(known.reset_index(drop=True), splits[splits["date"] < cut].reset_index(drop=True))


def with_bar(archive: PriceArchive, symbol: str, day: dt.date, **values: float) -> PriceArchive:
    """`archive` with one bar's values replaced (a bad value Yahoo answered, e.g. close=-1)."""
    prices = archive._prices.copy()  # noqa: SLF001
    row = (prices["symbol"] == symbol) & (prices["date"] == pd.Timestamp(day))
    if not row.any():
        raise KeyError(f"no bar of {symbol} on {day} in the archive")
    for column, value in values.items():
        prices.loc[row, column] = value
    return PriceArchive(prices, archive._splits)  # noqa: SLF001
