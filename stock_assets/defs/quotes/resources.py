"""The quote client: daily bars through yfinance, from live Yahoo or the bundled replay.

Both sources go through the same yfinance code: the replay is a `requests` transport adapter that
answers Yahoo's cookie, crumb and chart requests from recorded data, so the parsing, time zones and
corporate-action handling the pipeline sees are yfinance's own.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Literal

import dagster as dg
import pandas as pd
import requests
import yfinance as yf
from yfinance.data import YfData
from yfinance.exceptions import YFPricesMissingError, YFTzMissingError
from pydantic import Field, PrivateAttr

from stock_assets import settings
from stock_assets.partitions import MARKET_TIMEZONE
from stock_assets.defs.quotes.replay import replay_session

QuoteSource = Literal["replay", "yahoo"]

RAW_COLUMNS = [
    "symbol", "trade_date", "open", "high", "low", "close", "adj_close", "volume",
    "dividends", "stock_splits", "source", "fetched_at",
]

# yfinance keeps process-wide state (one HTTP session, a tz cache); configure it once per process.
_yf_lock = threading.Lock()
_yf_configured: set[str] = set()


class QuoteSourceUnavailable(RuntimeError):
    """The configured quote source cannot be reached at all."""


class TickerFetchError(RuntimeError):
    """One ticker could not be fetched; the others go on."""


@dataclass
class FetchReport:
    """What one batch fetch did, for materialization metadata."""

    requests: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)

    def latency_percentile(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        return float(pd.Series(self.latencies_s).quantile(q))


class QuoteClient(dg.ConfigurableResource):
    """Daily OHLCV bars with dividends and splits, fetched with yfinance.

    `source` says where quotes come from: `replay` answers from the bundled recorded Yahoo data
    (offline, the default); `yahoo` asks Yahoo Finance itself. The choice shows in the UI as this
    resource's configuration and on every materialization.
    """

    source: QuoteSource = Field(
        default="replay",
        description="'replay' = bundled recorded Yahoo data through yfinance (offline); 'yahoo' = live Yahoo Finance.",
    )
    timeout_s: float = Field(default=20.0, description="HTTP timeout per Yahoo request.")

    _session: requests.Session | None = PrivateAttr(default=None)

    def with_session(self, session: requests.Session) -> "QuoteClient":
        """A copy of this client that sends its HTTP through `session` (tests, proxies)."""
        client = self.model_copy()
        client._session = session
        return client

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = replay_session() if self.source == "replay" else _live_session()
        return self._session

    def daily_bars(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars for start <= trade date < end, in the raw landing schema (RAW_COLUMNS).

        Raises TickerFetchError when Yahoo has no data for the symbol, or answers a window that
        holds trading days with no bars at all (an empty frame is never read as "no trading"),
        and QuoteSourceUnavailable when the source cannot be reached at all.
        """
        _configure_yfinance()
        # yfinance caches past windows in-process by URL alone, whichever session asked: a cached
        # answer from another source (or an earlier failure) must never stand in for this one.
        YfData.cache_get.cache_clear()
        ticker = yf.Ticker(symbol, session=self.session)
        last_day = end - dt.timedelta(days=1)
        try:
            history = ticker.history(
                start=start.isoformat(),
                end=end.isoformat(),
                interval="1d",
                auto_adjust=False,
                actions=True,
                timeout=self.timeout_s,
            )
        except YFPricesMissingError as err:
            if err.yahoo_reason:
                raise TickerFetchError(f"{symbol}: Yahoo says {err.yahoo_reason!r}") from err
            raise TickerFetchError(
                f"{symbol}: Yahoo returned no bars for {start}..{last_day}, which holds NYSE sessions "
                "(an empty answer is never taken for 'no trading')"
            ) from err
        except YFTzMissingError as err:
            raise TickerFetchError(f"{symbol}: unknown to Yahoo (no exchange time zone; possibly delisted)") from err
        except Exception as err:  # yfinance lets transport errors through under several classes
            if _is_connection_failure(err):
                raise _unreachable(self.source, err) from err
            status = getattr(getattr(err, "response", None), "status_code", None)
            if status == 404:
                raise TickerFetchError(f"{symbol}: not found at Yahoo (HTTP 404, possibly delisted)") from err
            raise TickerFetchError(f"{symbol}: {type(err).__name__}: {err}") from err
        if history.empty:
            raise TickerFetchError(
                f"{symbol}: Yahoo returned no bars for {start}..{last_day}, which holds NYSE sessions "
                "(an empty answer is never taken for 'no trading')"
            )
        return to_raw_frame(symbol, history, source=self.source)

    def fetch(
        self, symbols: list[str], start: dt.date, end: dt.date, log: dg.DagsterLogManager | None = None
    ) -> tuple[pd.DataFrame, FetchReport]:
        """Fetch every symbol's whole window (one request per ticker); failures are per ticker."""
        report = FetchReport()
        frames: list[pd.DataFrame] = []
        for symbol in symbols:
            began = time.perf_counter()
            report.requests += 1
            try:
                frames.append(self.daily_bars(symbol, start, end))
            except TickerFetchError as err:
                report.failures[symbol] = str(err)
                if log:
                    log.warning(str(err))
            finally:
                report.latencies_s.append(time.perf_counter() - began)
        frame = pd.concat(frames, ignore_index=True) if frames else empty_raw_frame()
        return frame, report


def to_raw_frame(symbol: str, history: pd.DataFrame, source: str) -> pd.DataFrame:
    """yfinance's history frame as rows of the landing schema, keeping everything Yahoo said."""
    index = pd.DatetimeIndex(history.index)
    if index.tz is not None:
        index = index.tz_convert(MARKET_TIMEZONE)
    frame = pd.DataFrame(
        {
            "symbol": symbol,
            "trade_date": index.date,
            "open": history["Open"].to_numpy(dtype="float64"),
            "high": history["High"].to_numpy(dtype="float64"),
            "low": history["Low"].to_numpy(dtype="float64"),
            "close": history["Close"].to_numpy(dtype="float64"),
            "adj_close": history["Adj Close"].to_numpy(dtype="float64"),
            "volume": history["Volume"].to_numpy(dtype="float64"),
            "dividends": history.get("Dividends", pd.Series(0.0, index=history.index)).to_numpy(dtype="float64"),
            "stock_splits": history.get("Stock Splits", pd.Series(0.0, index=history.index)).to_numpy(
                dtype="float64"),
            "source": source,
            "fetched_at": pd.Timestamp.now(tz="UTC"),
        }
    )
    return frame[RAW_COLUMNS]


def empty_raw_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": pd.Series(dtype="object"),
            "trade_date": pd.Series(dtype="object"),
            **{c: pd.Series(dtype="float64") for c in ("open", "high", "low", "close", "adj_close", "volume",
                                                       "dividends", "stock_splits")},
            "source": pd.Series(dtype="object"),
            "fetched_at": pd.Series(dtype="datetime64[ns, UTC]"),
        }
    )[RAW_COLUMNS]


def _configure_yfinance() -> None:
    cache_dir = str(settings.state_dir() / "yfinance")
    with _yf_lock:
        if cache_dir in _yf_configured:
            return
        yf.set_tz_cache_location(cache_dir)
        # yfinance itself trips pandas 4 deprecations (inplace=...); they are not ours to fix.
        warnings.filterwarnings("ignore", category=getattr(pd.errors, "Pandas4Warning", FutureWarning),
                                module=r"yfinance(\.|$)")
        yf.config.debug.hide_exceptions = False  # surface Yahoo's errors instead of empty frames
        _yf_configured.add(cache_dir)


def _live_session() -> requests.Session:
    from yfinance._http import new_session

    return new_session()


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
