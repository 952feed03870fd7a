"""The price archive the offline replay serves: the bundled sample, or a user's own.

The bundled archive holds real daily Yahoo bars for 58 S&P 500 names, 2016-01-04..2020-10-27.
`STOCK_ASSETS_REPLAY_ARCHIVE` (settings.py) points the replay at another archive instead:

- a CSV file (`.csv` or `.csv.gz`), one row per listing and day, with the columns (header names
  are case-insensitive; `_` and space are the same)
  `Ticker, Date, Open, High, Low, Close, Adj Close, Volume` (required; Date as YYYY-MM-DD, the
  exchange's local trade date; prices in the listing's quote currency as Yahoo gives it, e.g.
  pence for a `GBp` London listing) and optionally `Dividends`, `Stock Splits` (as yfinance
  writes them: the cash amount / the ratio on the ex-date, 0 otherwise), `Currency`, `Exchange`,
  `Timezone`, `Instrument Type` (constant per ticker; by default taken from the ticker's exchange
  suffix, stock_assets/markets.py). Without `Dividends`, dividends are recovered from the
  adjusted close, as for the bundled file;
- a folder of recorded Yahoo chart responses (`*.json`, `/v8/finance/chart` bodies, bare or in
  a `{"request": ..., "response": {"bodyJson": ...}}` envelope): daily bars, dividends, splits and
  the listing's exchange, time zone and currency as Yahoo recorded them. Several files may cover
  the same listing; for a day recorded twice the latest recording (meta `regularMarketTime`) wins.

The archive has to carry everything Yahoo's chart API answers with: OHLCV bars, the adjusted
close, dividends, splits and the listing's market.

The recorded CSV holds bars only. Its `Close` is split-adjusted and its `Adj Close` is split- and
dividend-adjusted with Yahoo's multiplicative method, so each dividend leaves a step in the ratio
f_t = adj_close_t / close_t: on an ex-date t, f_{t-1} / f_t = 1 - D / close_{t-1}. The dividends are
recovered from that step. Splits leave no trace in split-adjusted prices, so they come from a small
hand-kept file instead.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from stock_assets import settings
from stock_assets.markets import UnknownExchangeError, exchange_of

PRICES_FILE = "yahoo_sp500_58tickers_daily_2016-01-04_2020-10-27.csv.gz"
SPLITS_FILE = "splits.csv"

# The recorded prices went through float32, which moves the adj/close ratio by up to ~1e-6 from
# day to day; the smallest real dividend step in the archive is ~1e-4.
_RATIO_NOISE = 2e-6
_DIVIDEND_DECIMALS = 4

_PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close"]
# Nasdaq-listed names in the bundled archive; the rest trade on the NYSE.
NASDAQ_LISTED = frozenset(
    {"AAPL", "AMZN", "CMCSA", "COST", "CSCO", "EQIX", "GOOGL", "INTC", "MSFT", "NFLX", "NVDA", "PEP", "SBUX"}
)
_REQUIRED_CSV = {"ticker": "symbol", "date": "date", "open": "open", "high": "high", "low": "low", "close": "close",
                 "adj close": "adj_close", "volume": "volume"}
_OPTIONAL_CSV = {"dividends": "dividends", "stock splits": "stock_splits", "currency": "currency",
                 "exchange": "exchange", "timezone": "timezone", "instrument type": "instrument_type"}
_LISTING_FIELDS = ("currency", "exchange", "timezone", "instrument_type")


class ArchiveError(ValueError):
    """A replay archive that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Listing:
    """Where and how a symbol trades, as Yahoo's chart meta says it."""

    symbol: str
    currency: str
    exchange: str  # Yahoo's exchangeName (NMS, NYQ, LSE, GER, JPX, ...)
    full_exchange_name: str
    timezone: str  # exchangeTimezoneName
    instrument_type: str  # EQUITY, ETF, ...
    opens: dt.time  # local session open: where Yahoo stamps daily bars

    @classmethod
    def default(cls, symbol: str, **given: str | None) -> Listing:
        """The listing's market from its exchange suffix, overridden by what is `given`."""
        try:
            exchange = exchange_of(symbol)
        except UnknownExchangeError:
            exchange = None
        values = {
            "currency": exchange.currency if exchange else "USD",
            "exchange": exchange.yahoo_code if exchange else "",
            "timezone": exchange.timezone if exchange else "America/New_York",
            "instrument_type": "EQUITY",
        }
        values.update({k: v for k, v in given.items() if k in values and v})
        return cls(symbol=symbol, full_exchange_name=(given.get("full_exchange_name") or
                                                      (exchange.name if exchange else values["exchange"])),
                   opens=exchange.opens if exchange else dt.time(9, 30), **values)


class PriceArchive:
    """Daily bars, dividends and splits per symbol, read-only.

    `prices` has one row per symbol and trading day with columns symbol, date (datetime64),
    open, high, low, close, adj_close, volume; `splits` has symbol, date, numerator, denominator.
    """

    def __init__(self, prices: pd.DataFrame, splits: pd.DataFrame, dividends: pd.DataFrame | None = None,
                 listings: dict[str, Listing] | None = None, source: str = "bundled") -> None:
        prices = prices.sort_values(["symbol", "date"], ignore_index=True)
        self._prices = prices
        self._by_symbol = {symbol: frame.reset_index(drop=True) for symbol, frame in prices.groupby("symbol")}
        self._splits = splits
        self._given_dividends = dividends  # None: recovered from the adjusted close
        self._listings = dict(listings or {})
        self.source = source
        self._dates = pd.DatetimeIndex(prices["date"].unique()).sort_values()
        if not len(self._dates):
            raise ArchiveError(f"{source}: the archive holds no bars")

    @classmethod
    def configured(cls) -> PriceArchive:
        """The archive `STOCK_ASSETS_REPLAY_ARCHIVE` names, or the bundled one when it is unset."""
        path = settings.configured_replay_archive()
        return cls.bundled() if path is None else cls.load(path)

    @classmethod
    def load(cls, path: str | Path) -> PriceArchive:
        """A CSV archive or a folder of recorded chart responses (see the module docstring)."""
        return _load_cached(str(Path(path).expanduser().resolve()))

    @classmethod
    def from_csv(cls, path: str | Path) -> PriceArchive:
        """An archive from a CSV file in the documented schema (module docstring)."""
        path = Path(path)
        try:
            raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as err:
            raise ArchiveError(f"{path}: cannot be read as CSV: {err}") from err
        columns = {" ".join(str(c).strip().lower().replace("_", " ").split()): c for c in raw.columns}
        missing = [name for name in _REQUIRED_CSV if name not in columns]
        if missing:
            raise ArchiveError(f"{path}: missing column(s) {', '.join(missing)}; required: "
                               "Ticker, Date, Open, High, Low, Close, Adj Close, Volume")
        wanted = {**_REQUIRED_CSV, **{k: v for k, v in _OPTIONAL_CSV.items() if k in columns}}
        frame = pd.DataFrame({target: raw[columns[name]].str.strip() for name, target in wanted.items()})
        return _from_rows(frame, str(path))

    @classmethod
    def from_chart_responses(cls, folder: str | Path) -> PriceArchive:
        """An archive from a folder of recorded `/v8/finance/chart` responses (module docstring)."""
        return _from_chart_folder(Path(folder))

    @classmethod
    @functools.cache
    def bundled(cls) -> PriceArchive:
        """The archive shipped inside the package, loaded once per process.

        Splits inside the range come from the companies' announcements (AAPL 4:1 on 2020-08-31,
        NEE 4:1 on 2020-10-27, CMCSA 2:1 on 2017-02-21), recorded in `data/splits.csv`.
        """
        data = resources.files("stock_assets") / "data"
        with resources.as_file(data / PRICES_FILE) as path:
            raw = pd.read_csv(path)
        prices = pd.DataFrame(
            {
                "symbol": raw["Ticker"].astype(str),
                "date": pd.to_datetime(raw["Date"], format="%Y-%m-%d"),
                "open": raw["Open"].astype("float64"),
                "high": raw["High"].astype("float64"),
                "low": raw["Low"].astype("float64"),
                "close": raw["Close"].astype("float64"),
                "adj_close": raw["Adj Close"].astype("float64"),
                "volume": raw["Volume"].astype("int64"),
            }
        )
        with resources.as_file(data / SPLITS_FILE) as path:
            splits = pd.read_csv(path, parse_dates=["date"], dtype={"symbol": str})
        listings = {
            symbol: Listing.default(symbol, exchange="NMS", full_exchange_name="NasdaqGS") if symbol in NASDAQ_LISTED
            else Listing.default(symbol, exchange="NYQ", full_exchange_name="NYSE")
            for symbol in prices["symbol"].unique()
        }
        return cls(prices, splits, listings=listings)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted(self._by_symbol))

    @property
    def first_date(self) -> dt.date:
        return self._dates[0].date()

    @property
    def last_date(self) -> dt.date:
        return self._dates[-1].date()

    def bars(self, symbol: str, start: dt.date, end: dt.date) -> pd.DataFrame:
        """Bars with start <= date < end, sorted by date; KeyError for a symbol not in the archive."""
        frame = self._frame(symbol)
        first, stop = frame["date"].searchsorted([pd.Timestamp(start), pd.Timestamp(end)])
        window = frame.iloc[first:max(first, stop)]
        return pd.DataFrame(
            {
                "date": window["date"].dt.date.to_numpy(dtype=object),
                **{column: window[column].to_numpy(dtype="float64") for column in _PRICE_COLUMNS},
                "volume": window["volume"].to_numpy(dtype="int64"),
            }
        )

    def bar_arrays(self, symbol: str) -> dict[str, np.ndarray]:
        """Every bar of the symbol as arrays, dates as datetime64[D] (what the replay answers from:
        no per-row Python objects). KeyError for a symbol not in the archive."""
        frame = self._frame(symbol)
        return {
            "date": frame["date"].to_numpy(dtype="datetime64[D]"),
            **{column: frame[column].to_numpy(dtype="float64") for column in _PRICE_COLUMNS},
            "volume": frame["volume"].to_numpy(dtype="int64"),
        }

    def listing(self, symbol: str) -> Listing:
        """The symbol's market: recorded, given in the CSV, or from its exchange suffix."""
        self._frame(symbol)
        return self._listings.get(symbol) or Listing.default(symbol)

    def dividends(self, symbol: str) -> pd.Series:
        """Cash dividend per (split-adjusted) share, indexed by ex-date."""
        self._frame(symbol)
        rows = self._dividends_by_symbol.get(symbol, self._no_dividends)
        return _dated_series(rows["date"], rows["amount"], "dividends")

    def splits(self, symbol: str) -> pd.Series:
        """Split ratio (new shares per old share, e.g. 4.0), indexed by ex-date."""
        self._frame(symbol)
        rows = self._splits_by_symbol.get(symbol, self._splits.iloc[:0])
        return _dated_series(rows["date"], rows["numerator"] / rows["denominator"], "splits")

    def _frame(self, symbol: str) -> pd.DataFrame:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise KeyError(f"{symbol!r} is not in the price archive") from None

    # Each symbol's events, grouped once: a replay of a whole market asks for every symbol's.
    @functools.cached_property
    def _dividends_by_symbol(self) -> dict[str, pd.DataFrame]:
        every = self._all_dividends if self._given_dividends is None else self._given_dividends
        return {symbol: rows.sort_values("date") for symbol, rows in every.groupby("symbol", sort=False)}

    @functools.cached_property
    def _no_dividends(self) -> pd.DataFrame:
        every = self._all_dividends if self._given_dividends is None else self._given_dividends
        return every.iloc[:0]

    @functools.cached_property
    def _splits_by_symbol(self) -> dict[str, pd.DataFrame]:
        return {symbol: rows.sort_values("date") for symbol, rows in self._splits.groupby("symbol", sort=False)}

    @functools.cached_property
    def _all_dividends(self) -> pd.DataFrame:
        """Every symbol's dividends at once: symbol, date, amount."""
        prices = self._prices
        factor = prices["adj_close"] / prices["close"]
        by_symbol = prices["symbol"]
        previous_factor = factor.groupby(by_symbol).shift()
        previous_close = prices["close"].groupby(by_symbol).shift()
        step = previous_factor / factor
        ex_date = (step - 1).abs() > _RATIO_NOISE
        amount = (previous_close * (1 - step)).round(_DIVIDEND_DECIMALS)
        return pd.DataFrame(
            {"symbol": by_symbol[ex_date], "date": prices["date"][ex_date], "amount": amount[ex_date]}
        ).reset_index(drop=True)


def _dated_series(dates: pd.Series, values: pd.Series, name: str) -> pd.Series:
    index = pd.Index(dates.dt.date.to_numpy(dtype=object), name="date")
    return pd.Series(values.to_numpy(dtype="float64"), index=index, name=name)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str) -> PriceArchive:
    target = Path(path)
    if target.is_dir():
        return _from_chart_folder(target)
    if target.is_file():
        return PriceArchive.from_csv(target)
    raise ArchiveError(f"{settings.REPLAY_ARCHIVE_ENV}: {path} is neither a CSV file nor a folder")


def _from_rows(frame: pd.DataFrame, source: str) -> PriceArchive:
    """Validate CSV rows (all text) and build the archive; errors name the first bad rows."""
    from stock_assets.defs.universe.constituents import InvalidSymbolError, validate_symbol

    symbols = {}
    for value in frame["symbol"].unique():
        try:
            symbols[value] = validate_symbol(value)
            exchange_of(symbols[value])
        except (InvalidSymbolError, UnknownExchangeError) as err:
            raise ArchiveError(f"{source}: {err}") from None
    prices = pd.DataFrame({"symbol": frame["symbol"].map(symbols),
                           "date": pd.to_datetime(frame["date"], format="%Y-%m-%d", errors="coerce")})
    for column in [*_PRICE_COLUMNS, "volume", "dividends", "stock_splits"]:
        if column in frame:
            prices[column] = pd.to_numeric(frame[column].replace("", "0" if column in (
                "dividends", "stock_splits") else ""), errors="coerce")
    bad = prices[prices.drop(columns="symbol").isna().any(axis=1)]
    if len(bad):
        lines = ", ".join(str(i + 2) for i in bad.index[:5])
        raise ArchiveError(f"{source}: {len(bad)} row(s) with a missing or non-numeric date, price or volume "
                           f"(CSV line(s) {lines})")
    duplicated = prices.duplicated(["symbol", "date"])
    if duplicated.any():
        first = prices[duplicated].iloc[0]
        raise ArchiveError(f"{source}: {first['symbol']} {first['date'].date()} is listed twice")
    prices["volume"] = prices["volume"].round().astype("int64")
    dividends = None
    if "dividends" in prices:
        paid = prices[prices["dividends"] > 0]
        dividends = pd.DataFrame({"symbol": paid["symbol"], "date": paid["date"], "amount": paid["dividends"]})
    split_rows = prices[prices["stock_splits"] > 0] if "stock_splits" in prices else prices.iloc[:0]
    splits = pd.DataFrame({"symbol": split_rows["symbol"].astype(str), "date": split_rows.get("date"),
                           "numerator": split_rows.get("stock_splits", pd.Series(dtype=float)).astype(float),
                           "denominator": 1.0})
    listings = {}
    given = [field for field in _LISTING_FIELDS if field in frame]
    for raw_symbol, rows in frame.groupby("symbol"):
        values = {}
        for field in given:
            distinct = sorted(set(rows[field]) - {""})
            if len(distinct) > 1:
                raise ArchiveError(f"{source}: {symbols[raw_symbol]} has several {field} values {distinct}")
            values[field] = distinct[0] if distinct else None
        listings[symbols[raw_symbol]] = Listing.default(symbols[raw_symbol], **values)
    columns = ["symbol", "date", *_PRICE_COLUMNS, "volume"]
    return PriceArchive(prices[columns], splits.reset_index(drop=True),
                        None if dividends is None else dividends.reset_index(drop=True), listings, source)


def _from_chart_folder(folder: Path) -> PriceArchive:
    from stock_assets.defs.universe.constituents import InvalidSymbolError, validate_symbol

    files = sorted(folder.glob("*.json"))
    if not files:
        raise ArchiveError(f"{folder}: no recorded chart responses (*.json) in the folder")
    bars, dividends, splits, listings, as_of = [], [], [], {}, {}
    for path in files:
        try:
            document = json.loads(path.read_text())
            body = document["response"]["bodyJson"] if "response" in document else document
            results = body["chart"]["result"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ArchiveError(f"{path.name}: not a recorded Yahoo chart response ({type(err).__name__}: {err})") \
                from None
        if not results or not results[0].get("timestamp"):
            continue  # an error or a window without bars: nothing to replay
        result = results[0]
        meta = result.get("meta") or {}
        symbol, timezone = meta.get("symbol"), meta.get("exchangeTimezoneName")
        granularity = meta.get("dataGranularity", "1d")
        if not symbol or not timezone:
            raise ArchiveError(f"{path.name}: the chart meta names no symbol or exchange time zone")
        try:
            exchange_of(validate_symbol(symbol))
        except (InvalidSymbolError, UnknownExchangeError) as err:
            raise ArchiveError(f"{path.name}: {err}") from None
        if granularity != "1d":
            raise ArchiveError(f"{path.name}: {symbol} bars at interval {granularity}; the replay archive holds "
                               "daily (1d) bars only")
        recorded = int(meta.get("regularMarketTime") or 0)
        stamps = pd.to_datetime(result["timestamp"], unit="s", utc=True).tz_convert(timezone)
        quote = result["indicators"]["quote"][0]
        adjclose = (result["indicators"].get("adjclose") or [{}])[0].get("adjclose") or quote["close"]
        frame = pd.DataFrame({
            "symbol": symbol, "date": pd.to_datetime(stamps.date),
            **{c: pd.to_numeric(pd.Series(quote[c], dtype=object), errors="coerce").to_numpy(dtype="float64")
               for c in ("open", "high", "low", "close", "volume")},
            "adj_close": pd.to_numeric(pd.Series(adjclose, dtype=object), errors="coerce").to_numpy(dtype="float64"),
            "recorded": recorded,
        }).dropna()  # Yahoo's null bars (no trade) carry nothing to replay
        bars.append(frame)
        events = result.get("events") or {}
        for event in (events.get("dividends") or {}).values():
            day = pd.Timestamp(event["date"], unit="s", tz="UTC").tz_convert(timezone).date()
            dividends.append({"symbol": symbol, "date": pd.Timestamp(day), "amount": float(event["amount"]),
                              "recorded": recorded})
        for event in (events.get("splits") or {}).values():
            day = pd.Timestamp(event["date"], unit="s", tz="UTC").tz_convert(timezone).date()
            splits.append({"symbol": symbol, "date": pd.Timestamp(day), "numerator": float(event["numerator"]),
                           "denominator": float(event["denominator"]), "recorded": recorded})
        if recorded >= as_of.get(symbol, -1):
            as_of[symbol] = recorded
            listings[symbol] = Listing.default(
                symbol, currency=meta.get("currency"), exchange=meta.get("exchangeName"), timezone=timezone,
                instrument_type=meta.get("instrumentType"), full_exchange_name=meta.get("fullExchangeName"))
    if not bars:
        raise ArchiveError(f"{folder}: none of the {len(files)} chart responses holds daily bars")
    prices = pd.concat(bars, ignore_index=True).sort_values(["symbol", "date", "recorded"], kind="stable")
    prices = prices.drop_duplicates(["symbol", "date"], keep="last")
    prices["volume"] = prices["volume"].round().astype("int64")

    def latest(rows: list[dict], columns: list[str]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=["symbol", "date", *columns, "recorded"])
        frame["date"] = pd.to_datetime(frame["date"])
        frame = frame.sort_values(["symbol", "date", "recorded"], kind="stable")
        return frame.drop_duplicates(["symbol", "date"], keep="last").drop(columns="recorded").reset_index(drop=True)

    return PriceArchive(prices.drop(columns="recorded"), latest(splits, ["numerator", "denominator"]),
                        latest(dividends, ["amount"]), listings, str(folder))
