"""The bundled price archive: real daily Yahoo bars for 58 S&P 500 names, 2016-01-04..2020-10-27.

The archive is what the offline replay serves, so it has to carry everything Yahoo's chart API
answers with: OHLCV bars, the adjusted close, dividends and splits.

The recorded CSV holds bars only. Its `Close` is split-adjusted and its `Adj Close` is split- and
dividend-adjusted with Yahoo's multiplicative method, so each dividend leaves a step in the ratio
f_t = adj_close_t / close_t: on an ex-date t, f_{t-1} / f_t = 1 - D / close_{t-1}. The dividends are
recovered from that step. Splits leave no trace in split-adjusted prices, so they come from a small
hand-kept file instead.
"""

from __future__ import annotations

import datetime as dt
import functools
from importlib import resources

import pandas as pd

PRICES_FILE = "yahoo_sp500_58tickers_daily_2016-01-04_2020-10-27.csv.gz"
SPLITS_FILE = "splits.csv"

# The recorded prices went through float32, which moves the adj/close ratio by up to ~1e-6 from
# day to day; the smallest real dividend step in the archive is ~1e-4.
_RATIO_NOISE = 2e-6
_DIVIDEND_DECIMALS = 4

_PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close"]


class PriceArchive:
    """Daily bars, dividends and splits per symbol, read-only.

    `prices` has one row per symbol and trading day with columns symbol, date (datetime64),
    open, high, low, close, adj_close, volume; `splits` has symbol, date, numerator, denominator.
    """

    def __init__(self, prices: pd.DataFrame, splits: pd.DataFrame) -> None:
        prices = prices.sort_values(["symbol", "date"], ignore_index=True)
        self._prices = prices
        self._by_symbol = {symbol: frame.reset_index(drop=True) for symbol, frame in prices.groupby("symbol")}
        self._splits = splits
        self._dates = pd.DatetimeIndex(prices["date"].unique()).sort_values()

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
        return cls(prices, splits)

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

    def dividends(self, symbol: str) -> pd.Series:
        """Cash dividend per (split-adjusted) share, indexed by ex-date."""
        self._frame(symbol)
        rows = self._all_dividends[self._all_dividends["symbol"] == symbol]
        return _dated_series(rows["date"], rows["amount"], "dividends")

    def splits(self, symbol: str) -> pd.Series:
        """Split ratio (new shares per old share, e.g. 4.0), indexed by ex-date."""
        self._frame(symbol)
        rows = self._splits[self._splits["symbol"] == symbol].sort_values("date")
        return _dated_series(rows["date"], rows["numerator"] / rows["denominator"], "splits")

    def _frame(self, symbol: str) -> pd.DataFrame:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise KeyError(f"{symbol!r} is not in the price archive") from None

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
