"""The quote client: daily bars through yfinance, from live Yahoo or the bundled replay, governed.

Both sources go through the same yfinance code: the replay is a `requests` transport adapter that
answers Yahoo's cookie, crumb and chart requests from recorded data, so the parsing, time zones and
corporate-action handling the pipeline sees are yfinance's own.

Under yfinance, every request passes the governed transport (`transport.GovernedAdapter`): one
rate limit, one circuit breaker and one response cache shared by every process that uses the same
database (`database`), retries with backoff that honour Retry-After, and per-fetch metrics. Without
a database the same governance works in this process only.

yfinance keeps ONE process-wide session (`YfData` is a singleton): tickers are fetched by a small
thread pool that shares the client's session, and a lease keeps another client from swapping its
session in while they run.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import ZoneInfo

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import requests
import yfinance as yf
from pydantic import Field, PrivateAttr
from yfinance.data import YfData
from yfinance.exceptions import YFPricesMissingError, YFTzMissingError

from stock_assets import settings
from stock_assets.database.resource import PostgresResource
from stock_assets.defs.partitions import MARKET_TIMEZONE
from stock_assets.yahoo.archive import PriceArchive
from stock_assets.yahoo.breaker import BreakerPolicy, CircuitOpenError, LocalBreaker, PostgresBreaker
from stock_assets.yahoo.cache import LocalResponseCache, PostgresResponseCache
from stock_assets.yahoo.chart_watch import LISTING_META, watch
from stock_assets.yahoo.limiter import LocalRateLimiter, PostgresRateLimiter, RateLimit
from stock_assets.yahoo.live import live_session
from stock_assets.yahoo.replay import replay_session
from stock_assets.yahoo.transport import (
    Governance,
    GovernancePolicy,
    GovernedAdapter,
    Trace,
    UpstreamError,
    UpstreamUnreachable,
    govern,
    observing,
    refreshing,
)
from stock_assets.yahoo.wire import redirected_session, session_over
from stock_assets.yahoo.yfinance_caches import use_cache_dir

QuoteSource = Literal["replay", "yahoo"]

RAW_COLUMNS = [
    "symbol", "trade_date", "open", "high", "low", "close", "adj_close", "volume",
    "dividends", "stock_splits", "source", "fetched_at",
    "currency", "exchange", "exchange_timezone", "instrument_type",
]

# Requests per second when `rate_per_s` is not set: Yahoo sustains about one per second per IP;
# the replay is local data and needs no limit.
DEFAULT_RATES = {"yahoo": 1.0, "replay": 0.0}
_DAY_S = 86400.0

# yfinance keeps process-wide state (one HTTP session, its caches): see _configure_yfinance.
_yf_lock = threading.Lock()
_yf_warnings_filtered = False


class QuoteSourceUnavailable(RuntimeError):
    """The configured quote source cannot be reached at all."""


class TickerFetchError(RuntimeError):
    """One ticker could not be fetched; the others go on."""


class SymbolNotServed(TickerFetchError):
    """The source does not know the symbol at all (Yahoo forgets delisted tickers; the replay knows
    only what it recorded): listed as `tickers_not_served` besides `failed_tickers`."""


@dataclass
class FetchReport:
    """What one batch fetch did, for materialization metadata."""

    tickers: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    not_served: list[str] = field(default_factory=list)  # of `failures`: symbols the source does not know
    trace: Trace = field(default_factory=Trace)
    breaker_state: str = "closed"
    ticker_latencies_s: list[float] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """History (chart-window) requests that went upstream: one per ticker unless retried or cached."""
        return self.trace.history_requests

    @property
    def latencies_s(self) -> list[float]:
        """Latency of every request that went upstream."""
        return self.trace.latencies_s

    def latency_percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        return round(float(pd.Series(self.latencies_s).quantile(q)), 4)

    def absorb(self, other: FetchReport) -> None:
        """Add another batch's report (fetched in a worker process) to this one."""
        self.tickers += other.tickers
        self.failures.update(other.failures)
        self.not_served.extend(other.not_served)
        self.trace.absorb(other.trace)
        self.breaker_state = other.breaker_state
        self.ticker_latencies_s.extend(other.ticker_latencies_s)

    def metadata(self) -> dict[str, object]:
        trace = self.trace
        return {
            "tickers_requested": self.tickers,
            "tickers_failed": len(self.failures),
            "failed_tickers": dg.MetadataValue.json(self.failures),
            "tickers_not_served": dg.MetadataValue.json(sorted(self.not_served)),
            "upstream_requests": trace.upstream_requests,
            "history_requests": trace.history_requests,
            "cache_hits": trace.cache_hits,
            "cache_refreshes": trace.cache_refreshes,
            "retries": trace.retries,
            "http_429s": trace.http_429,
            "failed_attempts": trace.failed_attempts,
            "empty_answers": trace.empty_answers,
            "limiter_wait_s": round(trace.limiter_wait_s, 3),
            "breaker_state": self.breaker_state,
            "latency_p50_s": self.latency_percentile(0.5),
            "latency_p95_s": self.latency_percentile(0.95),
        }


class QuoteClient(dg.ConfigurableResource):
    """Daily OHLCV bars with dividends and splits, fetched with yfinance, governed so that the
    project never gets banned: a shared rate limit, retries, a circuit breaker and a cache.

    `source` says where quotes come from: `replay` answers from the bundled recorded Yahoo data
    (offline, the default); `yahoo` asks Yahoo Finance itself. The choice shows in the UI as this
    resource's configuration and on every materialization. `database` holds the governance state
    shared by every process and run; without it the state is this process's own.
    """

    source: QuoteSource = Field(
        default="replay",
        description="'replay' = bundled recorded Yahoo data through yfinance (offline); 'yahoo' = live Yahoo Finance.",
    )
    timeout_s: float = Field(default=20.0, description="HTTP timeout per Yahoo request.")
    replay_archive: str | None = Field(
        default=None,
        description="For source 'replay': the archive to serve, a CSV file or a folder of recorded chart "
        "responses (README 'Your own universe'); empty = STOCK_ASSETS_REPLAY_ARCHIVE, else the bundled sample.",
    )
    upstream_url: str | None = Field(
        default=None,
        description="Send Yahoo's requests to this base URL instead (a Yahoo emulator on 127.0.0.1, for tests "
        "and benchmarks: stock_assets.testing.yahoo_emulator); empty = the real hosts.",
    )
    database: PostgresResource | None = Field(
        default=None,
        description="Where the shared rate limit, circuit breaker and response cache live; empty = this process only.",
    )
    scope: str | None = Field(
        default=None,
        description="Name of the shared limit, breaker and cache (processes with the same scope share them); "
        "empty = the source's name (with the upstream URL when one is set).",
    )
    rate_per_s: float | None = Field(
        default=None,
        description="Requests per second to the upstream, all processes together; empty = the source's default "
        "(yahoo: 1.0; replay: unlimited); 0 = unlimited.",
    )
    burst: int = Field(default=2, ge=1, description="Requests that may leave back to back before the rate applies.")
    rate_guard_s: float = Field(
        default=0.1, ge=0, description="Margin taken off the burst allowance, so network jitter cannot exceed it.")
    max_retries: int = Field(default=5, ge=0, description="Retries of a transient failure (429, 5xx, timeout, "
                             "truncated or empty answer) before the ticker fails.")
    backoff_base_s: float = Field(default=1.0, ge=0, description="First backoff; doubles per retry, full jitter.")
    backoff_max_s: float = Field(default=30.0, ge=0, description="Longest single backoff.")
    max_retry_after_s: float = Field(
        default=300.0, description="A Retry-After longer than this fails the request instead of waiting.")
    breaker_threshold: int = Field(default=5, ge=1, description="Consecutive transient failures that open the breaker.")
    breaker_cooldown_s: float = Field(default=60.0, ge=0, description="How long an open breaker refuses requests "
                                      "before one probe is let through.")
    cache_enabled: bool = Field(default=True, description="Keep chart answers in the response cache.")
    cache_past_ttl_s: float = Field(default=30 * _DAY_S, description="Cache lifetime of a range wholly in the past.")
    cache_recent_ttl_s: float = Field(default=300.0, description="Cache lifetime of a range touching today.")
    max_parallel_tickers: int = Field(default=4, ge=1, description="Tickers fetched at once (threads sharing the "
                                      "rate limit); each holds up to two database connections, so keep it "
                                      "below half the database pool (pool_size + max_overflow).")

    _session: requests.Session | None = PrivateAttr(default=None)
    _governed: bool = PrivateAttr(default=False)
    _given_session: bool = PrivateAttr(default=False)

    def portable(self) -> dict[str, object] | None:
        """This client's configuration, for the same client in a worker process
        (stock_assets/landing/workers.py); None for a client given its session (`with_session`),
        which cannot move to another process."""
        if self._given_session:
            return None
        config: dict[str, object] = {name: getattr(self, name) for name in type(self).model_fields}
        if self.database is not None:
            config["database"] = self.database.portable()
        return config

    @classmethod
    def from_portable(cls, config: dict[str, object]) -> QuoteClient:
        """The client `portable()` described."""
        database = config.get("database")
        return cls(**{**config, "database": PostgresResource(**database) if database else None})

    def with_session(self, session: requests.Session) -> QuoteClient:
        """A copy of this client that sends its HTTP through `session` (tests, proxies); the
        session's transports are governed like the client's own."""
        client = self.model_copy()
        client._session, client._governed, client._given_session = session, False, True
        return client

    def with_transport(self, adapter: requests.adapters.BaseAdapter) -> QuoteClient:
        """A copy of this client whose requests all go to `adapter` (the emulator in tests)."""
        return self.with_session(session_over(adapter))

    @property
    def effective_rate(self) -> float:
        return DEFAULT_RATES[self.source] if self.rate_per_s is None else self.rate_per_s

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            if self.upstream_url:
                self._session = redirected_session(self.upstream_url)
            else:
                self._session = replay_session(self.archive()) if self.source == "replay" else live_session()
        if not self._governed:
            govern(self._session, self._governance())
            self._governed = True
        return self._session

    def archive_path(self) -> str | None:
        """The replay archive this client serves from: its own setting, else the environment's."""
        return self.replay_archive or settings.configured_replay_archive()

    def market_today(self, now: dt.datetime | None = None) -> dt.date:
        """Today in New York; for the replay, the day after its archive's last recorded session (a
        replay's clock stands still). Sensors and assets ask the client, never the archive."""
        if self.source == "replay":
            return self.archive().last_date + dt.timedelta(days=1)
        return (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(MARKET_TIMEZONE)).date()

    def archive(self) -> PriceArchive:
        """The price archive the replay answers from (the bundled one unless configured)."""
        path = self.archive_path()
        return PriceArchive.bundled() if path is None else PriceArchive.load(path)

    @property
    def governed_adapter(self) -> GovernedAdapter:
        adapter = self.session.get_adapter("https://query2.finance.yahoo.com")
        assert isinstance(adapter, GovernedAdapter)
        return adapter

    @property
    def governance_scope(self) -> str:
        """The shared limit, breaker and cache this client uses: answers from one upstream (live
        Yahoo, the replay, an emulator) never stand in for another's."""
        if self.scope:
            return self.scope
        if self.upstream_url:
            return f"{self.source}@{self.upstream_url}"
        if self.source == "replay" and self.archive_path():
            return f"replay@{self.archive_path()}"  # another archive, other answers
        return self.source

    def _governance(self) -> Governance:
        scope = self.governance_scope
        policy = GovernancePolicy(
            scope=scope, max_retries=self.max_retries, backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s, max_retry_after_s=self.max_retry_after_s,
            cache_past_ttl_s=self.cache_past_ttl_s, cache_recent_ttl_s=self.cache_recent_ttl_s,
        )
        limit = RateLimit(self.effective_rate, self.burst, self.rate_guard_s)
        breaker = BreakerPolicy(self.breaker_threshold, self.breaker_cooldown_s,
                                probe_timeout_s=max(self.timeout_s * 2, 30.0))
        if self.database is None:
            return Governance(policy, LocalRateLimiter(limit), LocalBreaker(scope, breaker),
                              LocalResponseCache() if self.cache_enabled else None)
        engine = self.database.engine
        return Governance(policy, PostgresRateLimiter(engine, scope, limit), PostgresBreaker(engine, scope, breaker),
                          PostgresResponseCache(engine) if self.cache_enabled else None)

    def daily_bars(self, symbol: str, start: dt.date, end: dt.date, refresh_cache: bool = False) -> pd.DataFrame:
        """Bars for start <= trade date < end, in the raw landing schema (RAW_COLUMNS).

        `refresh_cache` asks Yahoo even when the response cache holds an answer for this window
        (and replaces that answer): a refetch after a split or dividend must not get old prices.

        Raises TickerFetchError when Yahoo has no data for the symbol, refuses it, keeps failing
        after every retry, or answers a window that holds trading days with no bars at all (an
        empty frame is never read as "no trading"); QuoteSourceUnavailable when the source cannot
        be reached at all; CircuitOpenError while the breaker suspends requests.
        """
        return raw_frame([self._answer(symbol, start, end, refresh_cache)])

    def _answer(self, symbol: str, start: dt.date, end: dt.date, refresh_cache: bool = False) -> RawBars:
        """One symbol's bars as yfinance read them from the answer (see `daily_bars`, which
        this raises for)."""
        _configure_yfinance()
        session = self.session
        last_day = end - dt.timedelta(days=1)
        no_bars = TickerFetchError(
            f"{symbol}: Yahoo returned no bars for {start}..{last_day}, which holds sessions of its exchange "
            "(an empty answer is never taken for 'no trading')"
        )
        watcher = watch(session)
        watcher.forget(symbol)  # what an earlier answer for this symbol left
        with _session_lease(session), observing() as governed, refreshing(refresh_cache):
            # yfinance caches past windows in-process by URL alone, whichever session asked: a cached
            # answer from another source (or an earlier failure) must never stand in for this one.
            YfData.cache_get.cache_clear()
            ticker = yf.Ticker(symbol, session=session)
            try:
                history = ticker.history(
                    start=start.isoformat(),
                    end=end.isoformat(),
                    interval="1d",
                    auto_adjust=False,
                    actions=True,
                    timeout=self.timeout_s,
                )
            except (CircuitOpenError, UpstreamError, UpstreamUnreachable) as err:
                raise self._governed_failure(symbol, err) from err
            except YFPricesMissingError as err:
                self._raise_governed(symbol, governed)
                if err.yahoo_reason and "No data found" in err.yahoo_reason:  # the chart's 404 for a symbol
                    raise SymbolNotServed(self._unknown_symbol(symbol, f"Yahoo says {err.yahoo_reason!r}")) from err
                if err.yahoo_reason:
                    raise TickerFetchError(f"{symbol}: Yahoo says {err.yahoo_reason!r}") from err
                raise no_bars from err
            except YFTzMissingError as err:
                self._raise_governed(symbol, governed)
                raise SymbolNotServed(self._unknown_symbol(symbol, "no exchange time zone")) from err
            except Exception as err:  # yfinance lets transport errors through under several classes
                self._raise_governed(symbol, governed)
                if _is_connection_failure(err):
                    raise _unreachable(self.source, err) from err
                status = getattr(getattr(err, "response", None), "status_code", None)
                if status == 404:
                    raise SymbolNotServed(self._unknown_symbol(symbol, "HTTP 404")) from err
                raise TickerFetchError(f"{symbol}: {type(err).__name__}: {err}") from err
            if history.empty:
                self._raise_governed(symbol, governed)  # yfinance may have swallowed the cause
                raise no_bars
            meta = watcher.take_listing(symbol)
        # yfinance reports a volume Yahoo left out as 0: the gap is put back for cleaning to name it.
        return raw_bars(symbol, history, source=self.source, meta=meta, volume_missing=watcher.take(symbol))

    def fetch(
        self, symbols: list[str], start: dt.date, end: dt.date, log: dg.DagsterLogManager | None = None,
        refresh_cache: bool = False, report: FetchReport | None = None,
    ) -> tuple[pd.DataFrame, FetchReport]:
        """Fetch every symbol's whole window, one request per ticker, `max_parallel_tickers` at once.

        `refresh_cache`: ask upstream for every window even if the response cache has it (see
        `daily_bars`). `report`: a report to add this fetch to (one per run over several batches).

        A ticker that fails is recorded in the report and does not stop the others. An open
        circuit breaker or an unreachable source stops the whole fetch (the exception carries the
        report as `.report`).
        """
        if report is None:
            report = FetchReport()
        report.tickers += len(symbols)  # a streamed backfill adds each ticker batch to one report
        answers: dict[str, RawBars] = {}
        session = self.session
        workers = max(1, min(self.max_parallel_tickers, len(symbols), self._threads_the_pool_serves()))
        with _session_lease(session), ThreadPoolExecutor(workers, thread_name_prefix="quotes") as pool:
            futures = {pool.submit(self._fetch_one, symbol, start, end, report, refresh_cache): symbol for symbol in symbols}
            try:
                for future in as_completed(futures):
                    symbol = futures[future]
                    try:
                        answers[symbol] = future.result()
                    except TickerFetchError as err:
                        report.failures[symbol] = str(err)
                        if isinstance(err, SymbolNotServed):
                            report.not_served.append(symbol)
                        if log:
                            log.warning(str(err))
            except BaseException as err:
                for future in futures:
                    future.cancel()
                report.breaker_state = self.governed_adapter.governance.breaker.state()
                err.report = report  # type: ignore[attr-defined]
                raise
        report.breaker_state = self.governed_adapter.governance.breaker.state()
        return raw_frame([answers[symbol] for symbol in symbols if symbol in answers]), report

    def _threads_the_pool_serves(self) -> int:
        """How many fetch threads the database pool can serve: a request holds one pooled connection
        for the response cache's key lock while it asks the breaker (and limiter) on another, so
        more threads than half the pool would wait on each other for a connection, each holding
        the one another needs."""
        if self.database is None:
            return self.max_parallel_tickers
        return max(1, (self.database.pool_size + self.database.max_overflow) // 2)

    def _fetch_one(self, symbol: str, start: dt.date, end: dt.date, report: FetchReport,
                   refresh_cache: bool = False) -> RawBars:
        began = time.perf_counter()
        try:
            with observing(report.trace):
                return self._answer(symbol, start, end, refresh_cache=refresh_cache)
        finally:
            report.ticker_latencies_s.append(time.perf_counter() - began)

    def _unknown_symbol(self, symbol: str, evidence: str) -> str:
        """Why a symbol has no data: the replay only knows what it recorded; Yahoo forgets delisted symbols."""
        if self.source == "replay":
            return (f"{symbol}: not in the bundled replay archive (it holds recorded symbols only); "
                    f"choose recorded tickers, or set {settings.QUOTE_SOURCE_ENV}=yahoo for live data")
        return f"{symbol}: unknown to Yahoo ({evidence}; possibly delisted)"

    def _governed_failure(self, symbol: str, err: BaseException) -> BaseException:
        if isinstance(err, CircuitOpenError):
            return err
        if isinstance(err, UpstreamUnreachable):
            return _unreachable(self.source, err)
        return TickerFetchError(f"{symbol}: {err}")

    def _raise_governed(self, symbol: str, governed: list[BaseException]) -> None:
        """If the governed transport failed during this call, that failure is the real cause."""
        if governed:
            raise self._governed_failure(symbol, governed[-1]) from governed[-1]


_lease = threading.Condition()
_lease_state: dict[str, object] = {"session": None, "holders": 0}


@contextmanager
def _session_lease(session: requests.Session) -> Iterator[None]:
    """Hold yfinance's process-wide session slot for `session`: nested and concurrent holders with
    the same session share it; a client with another session waits until they are done."""
    with _lease:
        while _lease_state["holders"] and _lease_state["session"] is not session:
            _lease.wait()
        _lease_state["session"] = session
        _lease_state["holders"] += 1
    try:
        yield
    finally:
        with _lease:
            _lease_state["holders"] -= 1
            if not _lease_state["holders"]:
                _lease_state["session"] = None
                _lease.notify_all()


@dataclass(frozen=True)
class RawBars:
    """One symbol's answer, before it becomes rows of the landing schema (`raw_frame`)."""

    symbol: str
    dates: np.ndarray  # the exchange's local trade dates (datetime.date)
    numbers: dict[str, np.ndarray]  # prices, volume, dividends, splits (float64)
    labels: dict[str, str | None]  # the text columns, one value for every row
    fetched_at: pd.Timestamp


def raw_bars(symbol: str, history: pd.DataFrame, source: str, meta: dict[str, str | None] | None = None,
             volume_missing: Iterable[dt.date] = ()) -> RawBars:
    """yfinance's history frame, keeping everything Yahoo said; `volume_missing`: days whose
    volume Yahoo left out (yfinance reports them as 0), kept as NaN for cleaning to name.

    The trade date is the exchange's local date: yfinance stamps a daily bar at midnight in the
    exchange's time zone, so a London or Tokyo bar keeps its own day (converted to New York it
    would fall on the previous evening)."""
    index = pd.DatetimeIndex(history.index)
    meta = meta or {}
    if index.tz is not None and not meta.get("exchange_timezone"):
        meta = {**meta, "exchange_timezone": str(index.tz)}
    rows = len(index)

    def prices(column: str) -> np.ndarray:  # yfinance leaves out the action columns it has nothing for
        return history[column].to_numpy(dtype="float64", copy=True) if column in history.columns else np.zeros(rows)

    dates = index.date
    numbers = {column: prices(name) for column, name in _YFINANCE_COLUMNS.items()}
    missing = set(volume_missing)
    if missing:
        numbers["volume"][np.fromiter((day in missing for day in dates), dtype=bool, count=rows)] = np.nan
    labels = {"source": source, **{column: meta.get(column) for column, _ in LISTING_META}}
    return RawBars(symbol, dates, numbers, labels, pd.Timestamp.now(tz="UTC"))


def raw_frame(answers: list[RawBars]) -> pd.DataFrame:
    """Answers as rows of the landing schema (RAW_COLUMNS), in the given order. Built once for
    the lot: a text column is one Arrow array taken from its few distinct values, not a column
    of Python strings per symbol (a third of a daily fetch's own time went to that)."""
    if not answers:
        return empty_raw_frame()
    lengths = np.fromiter((len(answer.dates) for answer in answers), dtype=np.int64, count=len(answers))
    owner = pa.array(np.repeat(np.arange(len(answers)), lengths))

    def repeated(values: list[str | None]) -> pd.api.extensions.ExtensionArray:
        return pd.array(pa.array(values, type=pa.string()).take(owner), dtype=_TEXT)

    columns = {
        "symbol": repeated([answer.symbol for answer in answers]),
        "trade_date": np.concatenate([answer.dates for answer in answers]),
        **{column: np.concatenate([answer.numbers[column] for answer in answers]) for column in _YFINANCE_COLUMNS},
        "fetched_at": pd.DatetimeIndex([answer.fetched_at for answer in answers]).repeat(lengths),
        **{column: repeated([answer.labels[column] for answer in answers]) for column in answers[0].labels},
    }
    return pd.DataFrame(columns, columns=RAW_COLUMNS)


# Landing column <- yfinance history column.
_YFINANCE_COLUMNS = {"open": "Open", "high": "High", "low": "Low", "close": "Close", "adj_close": "Adj Close",
                     "volume": "Volume", "dividends": "Dividends", "stock_splits": "Stock Splits"}
_TEXT = pd.StringDtype(na_value=np.nan)  # pandas' default text type ("str")


def to_raw_frame(symbol: str, history: pd.DataFrame, source: str,
                 meta: dict[str, str | None] | None = None) -> pd.DataFrame:
    """One symbol's yfinance history frame as rows of the landing schema (see `raw_bars`)."""
    return raw_frame([raw_bars(symbol, history, source, meta)])


def empty_raw_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series(dtype="object"),
            "trade_date": pd.Series(dtype="object"),
            **{c: pd.Series(dtype="float64") for c in ("open", "high", "low", "close", "adj_close", "volume",
                                                       "dividends", "stock_splits")},
            "source": pd.Series(dtype="object"),
            "fetched_at": pd.Series(dtype="datetime64[ns, UTC]"),
            **{column: pd.Series(dtype="object") for column, _ in LISTING_META},
        }
    )[RAW_COLUMNS]


def _configure_yfinance() -> None:
    use_cache_dir(str(settings.state_dir() / "yfinance"))
    yf.config.debug.hide_exceptions = False  # surface Yahoo's errors instead of empty frames
    global _yf_warnings_filtered
    with _yf_lock:
        if not _yf_warnings_filtered:
            # yfinance itself trips pandas 4 deprecations (inplace=...); they are not ours to fix.
            warnings.filterwarnings("ignore", category=getattr(pd.errors, "Pandas4Warning", FutureWarning),
                                    module=r"yfinance(\.|$)")
            _yf_warnings_filtered = True


def _is_connection_failure(err: Exception) -> bool:
    """Whether `err` (or what caused it) means the source could not be reached at all."""
    for cause in _causes(err):
        if isinstance(cause, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
            return True
        if type(cause).__name__ in {"DNSError", "CurlError", "ConnectionError", "Timeout"}:  # curl_cffi
            return True
    return False


def _causes(err: BaseException):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def _unreachable(source: str, err: Exception) -> QuoteSourceUnavailable:
    if source == "yahoo":
        return QuoteSourceUnavailable(
            "Live Yahoo Finance cannot be reached from this machine "
            f"({type(err).__name__}: {err}). Check the network or proxy, or set "
            f"{settings.QUOTE_SOURCE_ENV}=replay to use the bundled recorded data."
        )
    return QuoteSourceUnavailable(f"The quote source {source!r} failed: {err}")
