"""The offline Yahoo replay, checked against real recorded Yahoo responses and through yfinance.

The replay is only useful if yfinance cannot tell it from Yahoo, so most tests put the same request
through yfinance twice, once answered by the replay and once by a recorded Yahoo response
(`fixtures/yahoo_http/`), and compare what yfinance makes of each. Expected values come from the
recorded responses, from the archive read independently, or from market facts; never from the
replay's own code.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
import requests
import yfinance as yf
from requests.adapters import BaseAdapter
from yfinance.data import YfData
from yfinance.exceptions import YFPricesMissingError, YFTzMissingError

from stock_assets.yahoo.archive import PRICES_FILE, PriceArchive
from stock_assets.yahoo.replay import YahooReplayAdapter, replay_session
from stock_assets.yahoo.yfinance_caches import use_cache_dir

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

FIXTURES = Path(__file__).parent / "fixtures" / "yahoo_http"
NY = "America/New_York"
CHART_URL = "https://query2.finance.yahoo.com/v8/finance/chart/"
PRICE_COLUMNS = ["Open", "High", "Low", "Close"]
WEEKEND_FIXTURE = "chart-AAPL-2025-02-01-to-2025-02-02-includePrePost-false-interval-1m.json"
NOT_FOUND_BODY = {  # what Yahoo answers for a symbol it does not know
    "chart": {"result": None, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}
}


# ---------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def yfinance_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("yfinance-cache")
    use_cache_dir(str(path))
    return path


@pytest.fixture(autouse=True)
def fresh_yfinance(yfinance_cache_dir: Path):
    """A private yfinance cache folder, Yahoo's errors raised, and no responses cached in-process."""
    hide_exceptions = yf.config.debug.hide_exceptions
    yf.config.debug.hide_exceptions = False
    YfData.cache_get.cache_clear()
    yield
    YfData.cache_get.cache_clear()
    yf.config.debug.hide_exceptions = hide_exceptions


@pytest.fixture(scope="module")
def archive() -> PriceArchive:
    return PriceArchive.bundled()


@pytest.fixture
def session() -> requests.Session:
    return replay_session()


def adapter_of(session: requests.Session) -> YahooReplayAdapter:
    adapter = session.get_adapter("https://query2.finance.yahoo.com")
    assert isinstance(adapter, YahooReplayAdapter)
    return adapter


def recorded(name: str) -> dict[str, Any]:
    """A recorded Yahoo body; `chart-*.json` files wrap it in a request/response envelope."""
    data = json.loads((FIXTURES / name).read_text())
    return data["response"]["bodyJson"] if "response" in data else data


class RecordedYahoo(BaseAdapter):
    """Yahoo as recorded: answers the cookie and crumb requests, and every chart request with one body."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__()
        self.body = json.dumps(body).encode()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.request, response.url, response.encoding = request, request.url, "utf-8"
        path = urlsplit(request.url).path
        if path.startswith("/v8/finance/chart/"):
            response.status_code, response._content = 200, self.body
        elif path == "/v1/test/getcrumb":
            response.status_code, response._content = 200, b"recordedCrb"
        else:
            response.status_code, response._content = 404, b"<html>Not Found</html>"
        return response

    def close(self) -> None:
        pass


def recorded_session(name: str) -> requests.Session:
    session = requests.Session()
    session.mount("https://", RecordedYahoo(recorded(name)))
    return session


def history(session: requests.Session, symbol: str, start: str, end: str, interval: str = "1d") -> pd.DataFrame:
    # yfinance caches past windows by URL and parameters, whichever session asks: start clean.
    YfData.cache_get.cache_clear()
    return yf.Ticker(symbol, session=session).history(
        start=start, end=end, interval=interval, auto_adjust=False, actions=True
    )


def chart(session: requests.Session, symbol: str, **params: Any) -> requests.Response:
    return session.get(CHART_URL + symbol, params=params)


def at(day: str | dt.date, time: str = "09:30") -> int:
    return int(pd.Timestamp(f"{day} {time}", tz=NY).timestamp())


def dates_of(timestamps: list[int]) -> list[dt.date]:
    return [pd.Timestamp(t, unit="s", tz="UTC").tz_convert(NY).date() for t in timestamps]


def archive_dates(archive: PriceArchive, symbol: str = "AAPL") -> list[dt.date]:
    return list(archive.bars(symbol, archive.first_date, archive.last_date + dt.timedelta(days=1))["date"])


# ---------------------------------------------------------------------------------------------
# the archive
# ---------------------------------------------------------------------------------------------


def test_archive_holds_the_recorded_csv_exactly(archive: PriceArchive) -> None:
    path = resources.files("stock_assets") / "data" / PRICES_FILE
    with gzip.open(path, "rt", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Ticker"] == "NVDA"]
    assert len(archive.symbols) == 58 and list(archive.symbols) == sorted(archive.symbols)
    assert (archive.first_date, archive.last_date) == (dt.date(2016, 1, 4), dt.date(2020, 10, 27))

    bars = archive.bars("NVDA", archive.first_date, archive.last_date + dt.timedelta(days=1))
    assert list(bars.columns) == ["date", "open", "high", "low", "close", "adj_close", "volume"]
    assert bars["volume"].dtype == "int64"
    assert all(bars[c].dtype == "float64" for c in ["open", "high", "low", "close", "adj_close"])
    assert len(bars) == len(rows) == 1214
    for row, bar in zip(rows, bars.itertuples()):
        assert bar.date == dt.date.fromisoformat(row["Date"])
        assert (bar.open, bar.high, bar.low, bar.close, bar.adj_close) == tuple(
            float(row[c]) for c in ["Open", "High", "Low", "Close", "Adj Close"]
        )
        assert bar.volume == int(row["Volume"])


def test_bars_window_is_start_inclusive_end_exclusive(archive: PriceArchive) -> None:
    bars = archive.bars("KO", dt.date(2020, 3, 2), dt.date(2020, 3, 9))
    assert list(bars["date"]) == [dt.date(2020, 3, d) for d in (2, 3, 4, 5, 6)]
    assert archive.bars("KO", dt.date(2020, 3, 7), dt.date(2020, 3, 9)).empty  # a weekend
    assert archive.bars("KO", dt.date(2020, 3, 9), dt.date(2020, 3, 2)).empty
    with pytest.raises(KeyError):
        archive.bars("ZZZZ", dt.date(2020, 3, 2), dt.date(2020, 3, 9))
    with pytest.raises(KeyError):
        archive.dividends("ZZZZ")


def test_derived_dividend_counts_match_payout_schedules(archive: PriceArchive) -> None:
    counts = {symbol: len(archive.dividends(symbol)) for symbol in archive.symbols}
    assert {s for s, n in counts.items() if n == 0} == {"AMZN", "GOOGL", "NFLX"}
    assert 55 <= counts["O"] <= 58  # Realty Income pays monthly
    # Disney paid half-yearly and then suspended; Freeport resumed paying only in 2018.
    irregular = {"AMZN", "GOOGL", "NFLX", "O", "DIS", "FCX"}
    quarterly = {s: n for s, n in counts.items() if s not in irregular}
    assert all(18 <= n <= 21 for n in quarterly.values()), quarterly


def test_derived_dividends_match_known_payments(archive: PriceArchive) -> None:
    assert archive.dividends("AAPL")[dt.date(2020, 8, 7)] == pytest.approx(0.205)  # $0.82 before the 4:1 split
    assert archive.dividends("MSFT")[dt.date(2019, 11, 20)] == pytest.approx(0.51)
    assert archive.dividends("KO")[dt.date(2020, 9, 14)] == pytest.approx(0.41)
    assert archive.dividends("O")[dt.date(2020, 9, 30)] == pytest.approx(0.234)


@pytest.mark.parametrize("symbol", ["AAPL", "O", "XOM", "NEE"])
def test_dividends_rebuild_the_adjusted_close(archive: PriceArchive, symbol: str) -> None:
    """Yahoo's multiplicative adjustment, re-applied with the rounded amounts, gives Adj Close back."""
    bars = archive.bars(symbol, archive.first_date, archive.last_date + dt.timedelta(days=1)).set_index("date")
    factor = pd.Series(1.0, index=bars.index)
    for ex_date, amount in archive.dividends(symbol).items():
        previous_close = bars["close"][bars.index < ex_date].iloc[-1]
        factor[factor.index < ex_date] *= 1 - amount / previous_close
    rebuilt = bars["close"] * factor
    assert ((rebuilt / bars["adj_close"]) - 1).abs().max() < 1e-4


def test_splits_inside_the_range(archive: PriceArchive) -> None:
    expected = {
        "AAPL": (dt.date(2020, 8, 31), 4.0),
        "NEE": (dt.date(2020, 10, 27), 4.0),
        "CMCSA": (dt.date(2017, 2, 21), 2.0),
    }
    for symbol in archive.symbols:
        splits = archive.splits(symbol)
        assert list(splits.items()) == ([expected[symbol]] if symbol in expected else []), symbol
    for symbol, (day, _) in expected.items():
        closes = archive.bars(symbol, day - dt.timedelta(days=7), day + dt.timedelta(days=1))["close"]
        # Prices are already split-adjusted: no jump anywhere near the ratio on the ex-date.
        assert abs(closes.iloc[-1] / closes.iloc[-2] - 1) < 0.1, symbol


# ---------------------------------------------------------------------------------------------
# the replay against recorded Yahoo responses, through yfinance
# ---------------------------------------------------------------------------------------------


def test_history_matches_recorded_yahoo_around_the_aapl_split(session: requests.Session) -> None:
    name = "chart-AAPL-2020-08-31-to-2020-11-07.json"
    yahoo = history(recorded_session(name), "AAPL", "2020-08-31", "2020-11-07")
    replay = history(session, "AAPL", "2020-08-31", "2020-11-07")
    yahoo = yahoo.loc[: pd.Timestamp("2020-10-27", tz=NY)]  # the archive ends there

    assert list(replay.columns) == list(yahoo.columns)
    assert replay.dtypes.equals(yahoo.dtypes)
    assert str(replay.index.tz) == NY and replay.index.equals(yahoo.index)
    assert (replay[PRICE_COLUMNS] - yahoo[PRICE_COLUMNS]).abs().max().max() < 0.01
    # Yahoo has since revised a few days' volumes by well under 1%.
    volume_error = (replay["Volume"] / yahoo["Volume"] - 1).abs()
    assert volume_error.max() < 0.005 and (volume_error == 0).mean() > 0.9
    for frame in (yahoo, replay):
        splits = frame.loc[frame["Stock Splits"] != 0, "Stock Splits"]
        assert splits.to_dict() == {pd.Timestamp("2020-08-31", tz=NY): 4.0}
        assert (frame["Dividends"] == 0).all()
        # No ex-date inside the window, so Adj Close is Close times one constant factor.
        ratio = frame["Adj Close"] / frame["Close"]
        assert ratio.max() - ratio.min() < 1e-6


@pytest.mark.parametrize(
    ("name", "symbol", "split_since"),
    [
        ("chart-AAPL-2020-01-01-to-2020-01-03.json", "AAPL", 1),
        ("historical-via-chart-AAPL-2020-01-01-to-2020-01-03.json", "AAPL", 1),
        ("chart-ABBV-2020-01-01-to-2020-01-03.json", "ABBV", 1),
        # Recorded in 2025, after Amazon's 20:1 split of 2022; the archive predates it.
        ("chart-AMZN-2020-01-01-to-2020-01-03.json", "AMZN", 20),
    ],
)
def test_history_matches_recorded_yahoo_on_single_days(
    session: requests.Session, name: str, symbol: str, split_since: int
) -> None:
    yahoo = history(recorded_session(name), symbol, "2020-01-01", "2020-01-03")
    replay = history(session, symbol, "2020-01-01", "2020-01-03")
    assert replay.dtypes.equals(yahoo.dtypes) and replay.index.equals(yahoo.index)
    assert list(replay.index.date) == [dt.date(2020, 1, 2)]
    assert (replay[PRICE_COLUMNS] - yahoo[PRICE_COLUMNS] * split_since).abs().max().max() < 0.01
    assert (replay["Volume"] * split_since / yahoo["Volume"] - 1).abs().max() < 0.005


@pytest.mark.parametrize(
    "name",
    [
        "chart-AAPL-2020-01-01-to-2020-01-03.json",
        "chart-ABBV-2020-01-01-to-2020-01-03.json",
        "chart-AMZN-2020-01-01-to-2020-01-03.json",
        "historical-via-chart-AAPL-2020-01-01-to-2020-01-03.json",
        "chart-AAPL-2020-08-31-to-2020-11-07.json",
    ],
)
def test_replayed_json_has_the_recorded_structure(session: requests.Session, archive: PriceArchive, name: str) -> None:
    """The exact recorded request, replayed: same JSON structure, same timestamps, same events shape."""
    envelope = json.loads((FIXTURES / name).read_text())
    yahoo = envelope["response"]["bodyJson"]
    response = session.get(envelope["request"]["url"])
    assert response.status_code == envelope["response"]["status"] == 200
    assert response.headers["content-type"] == envelope["response"]["headers"]["content-type"]
    replay = response.json()

    assert replay.keys() == yahoo.keys() and replay["chart"].keys() == yahoo["chart"].keys()
    assert replay["chart"]["error"] is None is yahoo["chart"]["error"]
    ours, theirs = replay["chart"]["result"][0], yahoo["chart"]["result"][0]
    assert ours.keys() == theirs.keys()
    assert_meta_like(ours["meta"], theirs["meta"])

    archive_end = at(archive.last_date + dt.timedelta(days=1), "00:00")
    assert ours["timestamp"] == [t for t in theirs["timestamp"] if t < archive_end]
    assert_indicators_like(ours, theirs)
    for kind, entries in ours.get("events", {}).items():
        recorded_entries = theirs["events"][kind]
        for stamp, entry in entries.items():
            assert entry.keys() == next(iter(recorded_entries.values())).keys()
            if stamp in recorded_entries:
                assert entry == recorded_entries[stamp]


def assert_meta_like(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert set(ours) <= set(theirs), set(ours) - set(theirs)
    for key, value in ours.items():
        assert type(value) is type(theirs[key]) or {type(value), type(theirs[key])} == {int, float}, key
    same = ["currency", "symbol", "exchangeName", "fullExchangeName", "instrumentType", "hasPrePostMarketData",
            "exchangeTimezoneName", "priceHint", "dataGranularity", "range", "validRanges"]
    assert {k: ours[k] for k in same} == {k: theirs[k] for k in same}
    assert ours["currentTradingPeriod"].keys() == theirs["currentTradingPeriod"].keys()
    for period in ours["currentTradingPeriod"].values():
        assert period.keys() == theirs["currentTradingPeriod"]["regular"].keys()


def assert_indicators_like(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["indicators"].keys() == theirs["indicators"].keys() == {"quote", "adjclose"}
    quote, recorded_quote = ours["indicators"]["quote"], theirs["indicators"]["quote"]
    assert len(quote) == len(recorded_quote) == 1 and quote[0].keys() == recorded_quote[0].keys()
    assert ours["indicators"]["adjclose"][0].keys() == theirs["indicators"]["adjclose"][0].keys()
    for series in [*quote[0].values(), ours["indicators"]["adjclose"][0]["adjclose"]]:
        assert len(series) == len(ours["timestamp"])
    assert all(type(v) is int for v in quote[0]["volume"])
    assert all(type(v) is float for v in quote[0]["close"])


def test_range_request_is_shaped_like_recorded_history_chart(session: requests.Session, archive: PriceArchive) -> None:
    theirs = recorded("history_chart_AAPL.json")["chart"]["result"][0]
    ours = chart(session, "AAPL", range="6mo", interval="1d", events="div,splits").json()["chart"]["result"][0]
    assert ours.keys() == theirs.keys()
    assert_meta_like(ours["meta"], theirs["meta"])
    assert_indicators_like(ours, theirs)
    assert ours["events"]["dividends"] and ours["events"]["dividends"].keys() <= set(map(str, ours["timestamp"]))
    for stamp, entry in ours["events"]["dividends"].items():
        assert entry.keys() == next(iter(theirs["events"]["dividends"].values())).keys()
        assert entry["date"] == int(stamp)

    # Yahoo's range=6mo runs from the day after "now minus six months" to now; so does the replay's.
    recorded_now = dates_of([theirs["meta"]["regularMarketTime"]])[0]
    six_months = pd.DateOffset(months=6)
    assert dates_of(theirs["timestamp"])[0] == (pd.Timestamp(recorded_now) - six_months).date() + dt.timedelta(days=1)
    since = (pd.Timestamp(archive.last_date) - six_months).date()
    assert dates_of(ours["timestamp"]) == [d for d in archive_dates(archive) if d > since]


# ---------------------------------------------------------------------------------------------
# windows without bars, unknown symbols, errors
# ---------------------------------------------------------------------------------------------


def test_empty_window_is_answered_like_the_recorded_weekend(session: requests.Session) -> None:
    theirs = recorded(WEEKEND_FIXTURE)["chart"]["result"][0]
    ours = chart(session, "AAPL", period1=at("2020-02-01", "00:00"), period2=at("2020-02-03", "00:00"),
                 interval="1d", events="div|split").json()["chart"]["result"][0]
    assert ours.keys() == theirs.keys() == {"meta", "indicators"}
    assert ours["indicators"] == theirs["indicators"] == {"quote": [{}]}
    assert set(ours["meta"]) <= set(theirs["meta"])


def test_yfinance_treats_an_empty_replayed_window_like_yahoos(session: requests.Session) -> None:
    with pytest.raises(YFPricesMissingError) as yahoo:
        history(recorded_session(WEEKEND_FIXTURE), "AAPL", "2025-02-01", "2025-02-02", interval="1m")
    with pytest.raises(YFPricesMissingError) as replay:
        history(session, "AAPL", "2020-02-01", "2020-02-03")
    assert yahoo.value.rationale.startswith("no price data found")
    assert replay.value.rationale.startswith("no price data found")
    assert yahoo.value.yahoo_reason is None is replay.value.yahoo_reason

    yf.config.debug.hide_exceptions = True  # the fixture restores it
    quiet_yahoo = history(recorded_session(WEEKEND_FIXTURE), "AAPL", "2025-02-01", "2025-02-02", interval="1m")
    quiet_replay = history(session, "AAPL", "2020-02-01", "2020-02-03")
    assert quiet_yahoo.empty and quiet_replay.empty
    assert list(quiet_yahoo.columns) == list(quiet_replay.columns)


@pytest.mark.parametrize(
    ("start", "end"),
    [("2020-07-03", "2020-07-04"), ("2015-12-01", "2016-01-04"), ("2020-10-28", "2020-11-07")],
    ids=["holiday", "before-the-archive", "after-the-archive"],
)
def test_windows_outside_trading_days_have_no_bars(session: requests.Session, start: str, end: str) -> None:
    with pytest.raises(YFPricesMissingError, match="no price data found"):
        history(session, "AAPL", start, end)


def test_unknown_symbol_gets_yahoos_not_found(session: requests.Session) -> None:
    for symbol in ["ZZZZ", "aapl", "%3Cscript%3E", "A" * 16]:
        response = chart(session, symbol, range="1d", interval="1d")
        assert response.status_code == 404
        assert response.json() == NOT_FOUND_BODY


def test_yfinance_reports_an_unknown_symbol_as_delisted(session: requests.Session) -> None:
    """Without a timezone for the symbol, yfinance asks quoteSummary (at most twice per process,
    which Yahoo answers 404 too) and then gives up with "possibly delisted"."""
    errors: list[Exception] = []
    for symbol in ["ZZZA", "ZZZB", "ZZZC"]:
        try:
            history(session, symbol, "2020-01-01", "2020-02-01")
        except Exception as err:  # noqa: BLE001 - the type is what is being checked
            errors.append(err)
    assert len(errors) == 3
    fallbacks = [err for err in errors if isinstance(err, requests.HTTPError)]
    assert len(fallbacks) <= 2 and errors[: len(fallbacks)] == fallbacks
    for err in fallbacks:
        assert err.response.status_code == 404 and "/v10/finance/quoteSummary/" in err.response.url
    for err in errors[len(fallbacks):]:
        assert isinstance(err, YFTzMissingError) and "possibly delisted" in str(err)


def test_yfinance_surfaces_yahoos_not_found_reason(session: requests.Session) -> None:
    """With the timezone known (cached from before a delisting), Yahoo's own reason comes through."""
    tz_cache = yf.cache.get_tz_cache()
    tz_cache.store("ZZZD", NY)
    try:
        with pytest.raises(YFPricesMissingError) as raised:
            history(session, "ZZZD", "2020-01-01", "2020-02-01")
    finally:
        tz_cache.store("ZZZD", None)
    assert str(raised.value) == "$ZZZD: No data found, symbol may be delisted"


def test_intraday_intervals_get_yahoos_422(session: requests.Session) -> None:
    for interval in ["1m", "1h", "90m", "5d", "3mo"]:
        response = chart(session, "AAPL", period1=at("2020-03-02"), period2=at("2020-03-04"), interval=interval)
        assert response.status_code == 422, interval
        body = response.json()
        assert body["chart"]["result"] is None
        assert body["chart"]["error"]["code"] == "Unprocessable Entity"
        assert body["chart"]["error"]["description"].startswith(f"{interval} data not available")
    with pytest.raises(YFPricesMissingError, match="1h data not available"):
        history(session, "AAPL", "2020-03-02", "2020-03-04", interval="1h")


def test_bad_parameters_get_yahoos_400(session: requests.Session) -> None:
    cases = [
        {"range": "1d", "interval": "1w"},
        {"range": "7x", "interval": "1d"},
        {"period1": "yesterday", "period2": at("2020-03-04")},
        {"period1": at("2020-03-04"), "period2": at("2020-03-02")},
        {"interval": "1d"},
    ]
    for params in cases:
        response = chart(session, "AAPL", **params)
        assert response.status_code == 400, params
        assert response.json()["chart"]["error"]["code"] == "Bad Request"
        assert response.json()["chart"]["error"]["description"].startswith("Invalid input")


def test_anything_else_is_a_named_404(session: requests.Session) -> None:
    requests_made = [
        session.get("https://query2.finance.yahoo.com/v10/finance/quoteSummary/AAPL", params={"modules": "price"}),
        session.get("https://guce.yahoo.com/consent"),
        session.post(CHART_URL + "AAPL", data={"range": "1d"}),
        session.get("http://fc.yahoo.com/anything"),
    ]
    for response in requests_made:
        assert response.status_code == 404
        description = response.json()["error"]["description"]
        assert urlsplit(response.url).path in description and response.request.method in description
    # A chart path with more segments names a symbol that cannot exist.
    assert chart(session, "AAPL/extra", range="1d").json() == NOT_FOUND_BODY
    assert dict(adapter_of(session).requests) == {"unsupported": 4, "chart": 1}


# ---------------------------------------------------------------------------------------------
# windows, ranges, intervals and events
# ---------------------------------------------------------------------------------------------


def test_period_bounds_are_honoured_to_the_second(session: requests.Session) -> None:
    def days(period1: int, period2: int) -> list[dt.date]:
        body = chart(session, "MSFT", period1=period1, period2=period2, interval="1d").json()
        return dates_of(body["chart"]["result"][0]["timestamp"])

    march = [dt.date(2020, 3, day) for day in range(3, 7)]
    assert days(at("2020-03-03"), at("2020-03-06")) == march[:3]  # a bar at period1 is in, at period2 out
    assert days(at("2020-03-03") + 1, at("2020-03-06") + 1) == march[1:]


def test_yfinance_start_end_windows(session: requests.Session, archive: PriceArchive) -> None:
    for start, end in [("2018-12-24", "2019-01-07"), ("2016-01-01", "2016-01-06"), ("2020-10-20", "2020-10-28")]:
        frame = history(session, "JNJ", start, end)
        expected = archive.bars("JNJ", dt.date.fromisoformat(start), dt.date.fromisoformat(end))
        assert list(frame.index.date) == list(expected["date"])
        assert frame["Close"].tolist() == expected["close"].tolist()
        assert frame["Volume"].tolist() == expected["volume"].tolist()
    # An end on a trading day is exclusive.
    assert history(session, "JNJ", "2020-10-26", "2020-10-27").index.date.tolist() == [dt.date(2020, 10, 26)]


@pytest.mark.parametrize("range_name", ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"])
def test_ranges_end_at_the_frozen_now(session: requests.Session, archive: PriceArchive, range_name: str) -> None:
    body = chart(session, "PEP", range=range_name, interval="1d").json()["chart"]["result"][0]
    all_days, last = archive_dates(archive, "PEP"), archive.last_date
    expected = {
        "1d": all_days[-1:],
        "5d": all_days[-5:],  # Yahoo counts day ranges in trading days
        "ytd": [d for d in all_days if d.year == last.year],
        "max": all_days,
    }.get(range_name)
    if expected is None:
        count, unit = int(range_name[:-2] if range_name.endswith("mo") else range_name[:-1]), range_name[-2:]
        offset = pd.DateOffset(months=count) if unit == "mo" else pd.DateOffset(years=count)
        since = (pd.Timestamp(last) - offset).date()
        expected = [d for d in all_days if d > since]
    assert dates_of(body["timestamp"]) == expected
    assert body["meta"]["range"] == range_name


def test_yfinance_period_uses_the_range(session: requests.Session, archive: PriceArchive) -> None:
    frame = yf.Ticker("PEP", session=session).history(period="5d", auto_adjust=False)
    assert list(frame.index.date) == archive_dates(archive, "PEP")[-5:]


RESAMPLE = {"open": "first", "high": "max", "low": "min", "close": "last", "adj_close": "last", "volume": "sum"}


@pytest.mark.parametrize(
    ("interval", "rule", "start", "end"),
    [("1wk", "W-MON", "2019-11-04", "2020-03-30"), ("1mo", "MS", "2019-01-01", "2020-10-01")],
)
def test_weekly_and_monthly_bars_aggregate_the_daily_ones(
    session: requests.Session, archive: PriceArchive, interval: str, rule: str, start: str, end: str
) -> None:
    daily = archive.bars("MSFT", dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    expected = (
        daily.set_index(pd.DatetimeIndex(pd.to_datetime(daily["date"])))
        .drop(columns="date")
        .resample(rule, label="left", closed="left")
        .agg(RESAMPLE)
        .dropna()
    )
    frame = history(session, "MSFT", start, end, interval=interval)
    assert list(frame.index.date) == list(expected.index.date)
    for ours, theirs in [("Open", "open"), ("High", "high"), ("Low", "low"), ("Close", "close"),
                         ("Adj Close", "adj_close")]:
        assert frame[ours].tolist() == expected[theirs].tolist(), ours
    assert frame["Volume"].tolist() == expected["volume"].astype("int64").tolist()
    dividends = archive.dividends("MSFT")
    in_window = dividends[(dividends.index >= daily["date"].iloc[0]) & (dividends.index <= daily["date"].iloc[-1])]
    assert frame["Dividends"].sum() == pytest.approx(in_window.sum()) and len(in_window) > 0

    raw = chart(session, "MSFT", period1=at(start, "00:00"), period2=at(end, "00:00"), interval=interval).json()
    assert raw["chart"]["result"][0]["timestamp"] == [at(d.date(), "00:00") for d in expected.index]


def test_events_only_when_asked_and_only_inside_the_window(session: requests.Session, archive: PriceArchive) -> None:
    first, last = dt.date(2020, 8, 3), dt.date(2020, 9, 4)

    def events(kinds: str, start: dt.date = first, end: dt.date = last) -> dict[str, Any] | None:
        window = {"period1": at(start, "00:00"), "period2": at(end, "00:00")}
        response = chart(session, "AAPL", **window, interval="1d", events=kinds)
        return response.json()["chart"]["result"][0].get("events")

    dividends = {
        str(at(day)): {"amount": amount, "date": at(day)}
        for day, amount in archive.dividends("AAPL").items() if first <= day < last
    }
    splits = {
        str(at(day)): {"date": at(day), "numerator": int(ratio), "denominator": 1, "splitRatio": f"{int(ratio)}:1"}
        for day, ratio in archive.splits("AAPL").items() if first <= day < last
    }
    assert len(dividends) == len(splits) == 1
    assert events("") is None
    assert events("earn") is None
    assert events("div") == {"dividends": dividends}
    assert events("split") == events("splits") == {"splits": splits}
    assert events("div|split") == events("div,splits,capitalGains") == {"dividends": dividends, "splits": splits}
    assert events("div,splits", first, dt.date(2020, 8, 7)) is None  # the ex-date is outside
    assert events("div,splits", dt.date(2020, 8, 7), dt.date(2020, 8, 31)) == {"dividends": dividends}


def test_meta_describes_the_frozen_market(session: requests.Session, archive: PriceArchive) -> None:
    window = {"period1": at("2020-09-01", "00:00"), "period2": at("2020-09-08", "00:00"), "interval": "1d"}
    for symbol, exchange in [("AAPL", "NMS"), ("EQIX", "NMS"), ("JPM", "NYQ"), ("O", "NYQ")]:
        meta = chart(session, symbol, **window).json()["chart"]["result"][0]["meta"]
        close = archive.bars(symbol, dt.date(2020, 8, 31), dt.date(2020, 9, 1))["close"].iloc[0]
        last_close = archive.bars(symbol, archive.last_date, archive.last_date + dt.timedelta(days=1))["close"].iloc[0]
        assert meta["exchangeName"] == exchange and meta["symbol"] == symbol
        assert meta["chartPreviousClose"] == pytest.approx(close, abs=1e-4)
        assert meta["regularMarketPrice"] == pytest.approx(last_close, abs=1e-4)
        assert meta["regularMarketTime"] == at(archive.last_date, "16:00")
        assert (meta["timezone"], meta["gmtoffset"]) == ("EDT", -4 * 3600)
        assert meta["currentTradingPeriod"]["regular"] == {
            "timezone": "EDT",
            "start": at(archive.last_date),
            "end": at(archive.last_date, "16:00"),
            "gmtoffset": -14400,
        }
        assert meta["firstTradeDate"] == at(archive.first_date)


# ---------------------------------------------------------------------------------------------
# the session: cookie, crumb, counting
# ---------------------------------------------------------------------------------------------


def test_cookie_lands_in_the_jar_and_goes_with_the_crumb_request(session: requests.Session) -> None:
    cookie_response = session.get("https://fc.yahoo.com", allow_redirects=True)
    assert cookie_response.status_code == 404  # as Yahoo: a "not found" page that sets the cookie
    [cookie] = list(session.cookies)
    assert (cookie.name, cookie.domain, cookie.path) == ("A3", ".yahoo.com", "/")
    # yfinance persists this cookie and later reads `expires` (and fails without one).
    assert cookie.expires is not None and cookie.expires > dt.datetime.now().timestamp()

    crumb = session.get("https://query1.finance.yahoo.com/v1/test/getcrumb")
    assert crumb.status_code == 200 and crumb.headers["content-type"].startswith("text/plain")
    assert crumb.text and "<html>" not in crumb.text
    assert crumb.request.headers["Cookie"] == f"A3={cookie.value}"
    assert session.get("https://query2.finance.yahoo.com/v1/test/getcrumb").text == crumb.text
    assert dict(adapter_of(session).requests) == {"cookie": 1, "crumb": 2}
    assert "Mozilla" in crumb.request.headers["User-Agent"]
    assert session.get_adapter("http://fc.yahoo.com") is adapter_of(session)


def test_yfinance_request_counts_and_its_cache(session: requests.Session) -> None:
    yf.cache.get_tz_cache().store("KO", None)  # make yfinance look up the time zone
    counts = adapter_of(session).requests

    history(session, "KO", "2019-03-01", "2019-04-01")
    assert counts["chart"] == 2  # range=1d for the time zone, then the window
    YfData.cache_get.cache_clear()
    ticker = yf.Ticker("KO", session=session)
    ticker.history(start="2019-03-01", end="2019-04-01")
    ticker.history(start="2019-03-01", end="2019-04-01", auto_adjust=False)  # same URL: cached in-process
    assert counts["chart"] == 3  # the time zone now comes from yfinance's on-disk cache
    assert counts["unsupported"] == 0


def test_the_counter_is_thread_safe(session: requests.Session) -> None:
    def fetch(i: int) -> int:
        return chart(session, "AAPL", range="1d", interval="1d").status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(fetch, range(200)))
    assert statuses == [200] * 200
    assert adapter_of(session).requests["chart"] == 200
