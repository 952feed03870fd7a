"""Any universe, any market, any history: a user's own tickers (ETFs, other US listings, London,
Tokyo), exchange-local trade dates, currencies in major units, completeness by each listing's own
calendar, a configurable first partition day and a user's own replay archive.

Every pipeline test runs the real graph (yfinance over the replay transport, embedded PostgreSQL)
and asserts what is stored. The archives are written by the tests: a CSV archive with a London
listing quoted in pence (GBp) and a Tokyo listing, and a folder of chart responses shaped like the
recorded ones in fixtures/yahoo_http (plus some of those recordings themselves). The prices of the
written listings are made up for the test; only their calendars and units matter.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import exchange_calendars
import pandas as pd
import pytest
from sqlalchemy import text

from stock_assets.defs.partitions import monthly_partitions, trading_day_partitions
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets.markets import exchange_of, sessions
from stock_assets.yahoo.archive import ArchiveError, PriceArchive
from stock_assets_tests.test_pipeline import ALL_ASSETS, RANGE_TAGS

FIXTURES = Path(__file__).parent / "fixtures" / "yahoo_http"


def _sessions(code: str, first: str, last: str) -> list[dt.date]:
    """Test data only: the exchange's sessions, straight from exchange_calendars."""
    calendar = exchange_calendars.get_calendar(code, start=f"{int(first[:4]) - 1}-01-01")
    return [ts.date() for ts in calendar.sessions_in_range(first, last)]


def _run(selection, resources, first: str, last: str | None = None) -> dg.ExecuteInProcessResult:
    tags = {} if last is None else dict(zip(RANGE_TAGS, (first, last)))
    return dg.materialize(ALL_ASSETS, selection=selection, resources=resources,
                          instance=dg.DagsterInstance.ephemeral(), partition_key=first if last is None else None,
                          tags=tags)


def _resources(database, tmp_path: Path, archive: Path, tickers: list[str]) -> dict[str, object]:
    with database.begin() as conn:
        conn.execute(text("DELETE FROM market.listings"))
    return {
        "database": database,
        "quotes": QuoteClient(replay_archive=str(archive)),
        "tickers": TickerSelection(tickers=tickers),
        "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing")),
    }


def _stored(database, symbol: str) -> pd.DataFrame:
    with database.begin() as conn:
        return pd.read_sql(text("SELECT trade_date, open, high, low, close, adj_close, volume, dividend "
                                "FROM market.prices WHERE symbol = :symbol ORDER BY trade_date"),
                           conn, params={"symbol": symbol})


def _listings(database) -> dict[str, dict[str, object]]:
    with database.begin() as conn:
        rows = conn.execute(text("SELECT symbol, exchange, exchange_timezone, calendar, quote_currency, "
                                 "price_currency, price_divisor, instrument_type FROM market.listings")).mappings().all()
    return {row["symbol"]: dict(row) for row in rows}


# -- symbols and calendars ------------------------------------------------------------------------

def test_each_listing_has_its_exchanges_calendar():
    assert [exchange_of(s).calendar for s in ("AAPL", "QQQ", "OCDO.L", "WSU.DE", "4063.T")] == [
        "XNYS", "XNYS", "XLON", "XETR", "XTKS"]
    # 2020-08-31: UK summer bank holiday, a NYSE session; 2020-07-03: NYSE closed, London open;
    # 2020-07-23/24: Tokyo's Olympic holidays.
    assert sessions("XLON", dt.date(2020, 8, 31), dt.date(2020, 9, 1)) == []
    assert sessions("XNYS", dt.date(2020, 8, 31), dt.date(2020, 9, 1)) == [dt.date(2020, 8, 31)]
    assert sessions("XLON", dt.date(2020, 7, 3), dt.date(2020, 7, 4)) == [dt.date(2020, 7, 3)]
    assert sessions("XTKS", dt.date(2020, 7, 22), dt.date(2020, 7, 25)) == [dt.date(2020, 7, 22)]


# -- a CSV archive: London in pence, Tokyo, and a US listing --------------------------------------

JULY, AUGUST_END = "2020-07-01", "2020-08-31"
MISSING_TOKYO_DAY = dt.date(2020, 7, 15)  # a Tokyo session the archive leaves out


def _csv_archive(path: Path) -> dict[str, list[dt.date]]:
    """OCDO.L in pence (GBp) with a 3.5p dividend, 4063.T in yen (market from its suffix), AAPL."""
    rows, days = [], {}
    for symbol, code, base in (("OCDO.L", "XLON", 2250.0), ("4063.T", "XTKS", 11800.0), ("AAPL", "XNYS", 91.0)):
        days[symbol] = [d for d in _sessions(code, JULY, AUGUST_END)
                        if not (symbol == "4063.T" and d == MISSING_TOKYO_DAY)]
        for i, day in enumerate(days[symbol]):
            close = base + i
            rows.append({
                "Ticker": symbol, "Date": day.isoformat(), "Open": close - 1, "High": close + 2, "Low": close - 2,
                "Close": close, "Adj Close": close, "Volume": 1000 + i,
                "Dividends": 3.5 if symbol == "OCDO.L" and day == dt.date(2020, 7, 9) else 0,
                "Stock Splits": 0,
                "Currency": {"OCDO.L": "GBp", "AAPL": "USD"}.get(symbol, ""),
                "Exchange": {"OCDO.L": "LSE"}.get(symbol, ""),
                "Timezone": {"OCDO.L": "Europe/London"}.get(symbol, ""),
            })
    pd.DataFrame(rows).to_csv(path, index=False)
    return days


def test_csv_archive_with_london_pence_and_tokyo_through_the_graph(database, tmp_path):
    archive = tmp_path / "my_archive.csv"
    days = _csv_archive(archive)
    resources = _resources(database, tmp_path, archive, ["AAPL", "OCDO.L", "4063.T"])

    # A month per run: a run records every day's check results (up to 31 days, see cleaned_prices).
    checks, in_session = {}, {}
    for first, last in ((JULY, "2020-07-31"), ("2020-08-01", AUGUST_END)):
        daily = _run(["raw_quotes", "cleaned_prices"], resources, first, last)
        assert daily.success
        checks.update({(c.partition, c.check_name): c for c in daily.get_asset_check_evaluations()})
        in_session.update({m.partition: m.metadata["listings_in_session"].value
                           for m in daily.asset_materializations_for_node("cleaned_prices")})
        assert _run(["monthly_prices"], resources, first).success

    london, tokyo, us = _stored(database, "OCDO.L"), _stored(database, "4063.T"), _stored(database, "AAPL")
    # Exchange-local trade dates: every bar on the day the archive (the exchange) gave it.
    assert list(london["trade_date"]) == days["OCDO.L"]
    assert list(tokyo["trade_date"]) == days["4063.T"]
    assert list(us["trade_date"]) == days["AAPL"]
    # A NYSE holiday with London open, a London holiday with New York open, Tokyo's holidays.
    assert dt.date(2020, 7, 3) in set(london["trade_date"]) and dt.date(2020, 7, 3) not in set(us["trade_date"])
    assert dt.date(2020, 8, 31) in set(us["trade_date"]) and dt.date(2020, 8, 31) not in set(london["trade_date"])
    assert not {dt.date(2020, 7, 23), dt.date(2020, 7, 24)} & set(tokyo["trade_date"])
    # Pence stored as pounds, dividend included; yen and dollars as they are.
    first = london.iloc[0]
    assert (first["open"], first["high"], first["low"], first["close"]) == (22.49, 22.52, 22.48, 22.5)
    assert london.set_index("trade_date").loc[dt.date(2020, 7, 9), "dividend"] == pytest.approx(0.035)
    assert tokyo.iloc[0]["close"] == 11800.0 and us.iloc[0]["close"] == 91.0

    listings = _listings(database)
    assert listings["OCDO.L"] == {"symbol": "OCDO.L", "exchange": "LSE", "exchange_timezone": "Europe/London",
                                  "calendar": "XLON", "quote_currency": "GBp", "price_currency": "GBP",
                                  "price_divisor": 100, "instrument_type": "EQUITY"}
    assert listings["4063.T"] == {"symbol": "4063.T", "exchange": "JPX", "exchange_timezone": "Asia/Tokyo",
                                  "calendar": "XTKS", "quote_currency": "JPY", "price_currency": "JPY",
                                  "price_divisor": 1, "instrument_type": "EQUITY"}
    assert listings["AAPL"]["calendar"] == "XNYS" and listings["AAPL"]["price_currency"] == "USD"
    # The README's query: each stored price with the currency it is in.
    with database.begin() as conn:
        priced = conn.execute(text(
            "SELECT p.symbol, p.trade_date, p.close, l.price_currency "
            "FROM market.prices p JOIN market.listings l USING (symbol) "
            "WHERE p.symbol IN ('OCDO.L', '4063.T', 'AAPL') AND p.trade_date = '2020-07-06' ORDER BY p.symbol")).all()
    assert [(row.symbol, row.price_currency) for row in priced] == [("4063.T", "JPY"), ("AAPL", "USD"),
                                                                    ("OCDO.L", "GBP")]
    assert dict((row.symbol, row.close) for row in priced)["OCDO.L"] == 22.53  # 2253 pence: the 4th London session of July

    # Completeness by each listing's calendar: holidays of one exchange expect nothing from it;
    # the one Tokyo session the archive lacks is the only incomplete day.
    assert (in_session["2020-07-03"], in_session["2020-07-04"], in_session["2020-08-31"]) == (2, 0, 2)
    failed = sorted(day for (day, name), c in checks.items() if name == "tickers_complete" and not c.passed)
    assert failed == [MISSING_TOKYO_DAY.isoformat()]
    assert "4063.T" in checks[(MISSING_TOKYO_DAY.isoformat(), "tickers_complete")].description
    for day, expected in (("2020-07-03", 2), ("2020-07-23", 2), ("2020-08-31", 2), ("2020-07-22", 3)):
        complete = checks[(day, "tickers_complete")]
        assert complete.passed and complete.metadata["expected_listings"].value == expected, day


# -- a folder of chart responses: recorded US listings, written London and Tokyo ones -----------

def _chart_response(symbol: str, meta: dict, stamps: list[int], closes: list[float]) -> dict:
    """A `/v8/finance/chart` exchange in the envelope of the recorded fixtures."""
    body = {"chart": {"result": [{
        "meta": {"symbol": symbol, "dataGranularity": "1d", "regularMarketTime": stamps[-1] + 30000,
                 "priceHint": 2, **meta},
        "timestamp": stamps,
        "indicators": {"quote": [{"open": closes, "high": [c + 10 for c in closes], "low": [c - 10 for c in closes],
                                  "close": closes, "volume": [5000] * len(closes)}],
                       "adjclose": [{"adjclose": closes}]},
    }], "error": None}}
    return {"request": {"url": f"https://query2.finance.yahoo.com/v8/finance/chart/{symbol}", "method": "GET"},
            "response": {"ok": True, "status": 200, "statusText": "OK", "bodyJson": body}}


def _chart_folder(folder: Path) -> dict[str, list[dt.date]]:
    folder.mkdir()
    for name in ("chart-QQQ-2020-01-01-to-2020-01-03.json", "chart-SPOT-2020-01-01-to-2020-01-03.json",
                 "chart-AFRAF-2020-01-01-to-2020-01-03.json"):
        shutil.copy(FIXTURES / name, folder / name)
    days = {}
    for symbol, code, zone, opens, meta, base in (
        ("OCDO.L", "XLON", "Europe/London", "08:00",
         {"currency": "GBp", "exchangeName": "LSE", "fullExchangeName": "LSE", "instrumentType": "EQUITY"}, 1800.0),
        ("4063.T", "XTKS", "Asia/Tokyo", "09:00",
         {"currency": "JPY", "exchangeName": "JPX", "fullExchangeName": "Tokyo", "instrumentType": "EQUITY"}, 12000.0),
    ):
        days[symbol] = _sessions(code, "2020-01-01", "2020-01-31")
        stamps = [int(pd.Timestamp(f"{d} {opens}", tz=zone).timestamp()) for d in days[symbol]]
        meta = {**meta, "exchangeTimezoneName": zone, "timezone": "GMT" if code == "XLON" else "JST"}
        document = _chart_response(symbol, meta, stamps, [base + i for i in range(len(stamps))])
        (folder / f"chart-{symbol}-2020-01.json").write_text(json.dumps(document))
    return days


def _recorded_bar(name: str) -> dict[str, float]:
    result = json.loads((FIXTURES / name).read_text())["response"]["bodyJson"]["chart"]["result"][0]
    quote = result["indicators"]["quote"][0]
    return {column: quote[column][0] for column in ("open", "high", "low", "close", "volume")}


def test_chart_response_folder_through_the_graph(database, tmp_path):
    folder = tmp_path / "recorded"
    days = _chart_folder(folder)
    resources = _resources(database, tmp_path, folder, ["QQQ", "SPOT", "AFRAF", "OCDO.L", "4063.T"])

    assert _run(["raw_quotes", "cleaned_prices"], resources, "2020-01-01", "2020-01-31").success
    assert _run(["monthly_prices"], resources, "2020-01-01").success

    # The recorded US listings (an ETF, a NYSE listing outside the S&P 500): one bar each on
    # 2020-01-02, Yahoo's values rounded to 6 decimals.
    for symbol in ("QQQ", "SPOT"):
        stored = _stored(database, symbol)
        recorded = _recorded_bar(f"chart-{symbol}-2020-01-01-to-2020-01-03.json")
        assert list(stored["trade_date"]) == [dt.date(2020, 1, 2)], symbol
        assert stored.iloc[0]["close"] == round(recorded["close"], 6), symbol
        assert stored.iloc[0]["volume"] == recorded["volume"], symbol
    # The OTC name was fetched too; its recorded bar (volume 0, O=H=L=C) is stored or rejected with
    # a reason, never lost.
    with database.begin() as conn:
        afraf = conn.execute(text("SELECT (SELECT count(*) FROM market.prices WHERE symbol = 'AFRAF') + "
                                  "(SELECT count(*) FROM market.price_rejections WHERE symbol = 'AFRAF')")).scalar_one()
    assert afraf == 1
    # London stamped 08:00 London and Tokyo 09:00 Tokyo (the previous evening in New York): both
    # keep their own day. Tokyo reopened on 2020-01-06, a Monday.
    london, tokyo = _stored(database, "OCDO.L"), _stored(database, "4063.T")
    assert list(london["trade_date"]) == days["OCDO.L"] and london.iloc[0]["close"] == 18.0
    assert list(tokyo["trade_date"]) == days["4063.T"] and tokyo.iloc[0]["trade_date"] == dt.date(2020, 1, 6)
    assert tokyo.iloc[0]["close"] == 12000.0

    listings = _listings(database)
    assert listings["QQQ"]["instrument_type"] == "ETF" and listings["QQQ"]["exchange"] == "NGM"
    assert listings["OCDO.L"]["price_currency"] == "GBP" and listings["OCDO.L"]["exchange_timezone"] == "Europe/London"
    assert listings["4063.T"]["calendar"] == "XTKS"


def test_a_bad_archive_fails_with_a_clear_error(tmp_path):
    missing = tmp_path / "no_adj.csv"
    missing.write_text("Ticker,Date,Open,High,Low,Close,Volume\nAAPL,2020-01-02,1,2,0.5,1.5,10\n")
    with pytest.raises(ArchiveError, match="missing column\\(s\\) adj close"):
        PriceArchive.load(missing)
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("Ticker,Date,Open,High,Low,Close,Adj Close,Volume\nAAPL,2020-13-02,1,2,0.5,1.5,1.5,10\n")
    with pytest.raises(ArchiveError, match="CSV line\\(s\\) 2"):
        PriceArchive.load(garbled)
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("Ticker,Date,Open,High,Low,Close,Adj Close,Volume\nABC.XX,2020-01-02,1,2,0.5,1.5,1.5,10\n")
    with pytest.raises(ArchiveError, match="ABC.XX: unknown exchange suffix"):
        PriceArchive.load(unknown)
    intraday = tmp_path / "intraday"
    intraday.mkdir()
    document = _chart_response("AAPL", {"exchangeTimezoneName": "America/New_York", "dataGranularity": "1m"},
                               [1577975400], [300.0])
    (intraday / "a.json").write_text(json.dumps(document))
    with pytest.raises(ArchiveError, match="interval 1m; the replay archive holds daily"):
        PriceArchive.load(intraday)


# -- history before 2016 ---------------------------------------------------------------------------

def test_default_partitions_start_with_the_bundled_sample():
    assert trading_day_partitions.start.date() == dt.date(2016, 1, 1)
    assert monthly_partitions.start.date() == dt.date(2016, 1, 1)


_EARLY_HISTORY = textwrap.dedent("""
    import dagster as dg
    from stock_assets.database.resource import PostgresResource
    from stock_assets.defs.quotes.resources import QuoteClient
    from stock_assets.defs.universe.resources import TickerSelection
    from stock_assets.landing.io_manager import LandingIOManager
    from stock_assets.defs.partitions import trading_day_partitions
    from stock_assets_tests.test_pipeline import ALL_ASSETS, RANGE_TAGS
    import sys

    print("first partition", trading_day_partitions.start.date())
    resources = {"database": PostgresResource(url=sys.argv[1]), "quotes": QuoteClient(),
                 "tickers": TickerSelection(tickers=["TSLA"]),
                 "landing_io_manager": LandingIOManager(base_dir=sys.argv[2])}
    run = dict(resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert dg.materialize(ALL_ASSETS, selection=["raw_quotes", "cleaned_prices"],
                          tags=dict(zip(RANGE_TAGS, ("2010-06-01", "2010-07-31"))), **run).success
    for month in ("2010-06-01", "2010-07-01"):
        assert dg.materialize(ALL_ASSETS, selection=["monthly_prices"], partition_key=month, **run).success
""")


def test_tsla_history_from_its_2010_listing_is_stored(database, database_url, tmp_path):
    archive = tmp_path / "tsla.csv"
    days = _sessions("XNYS", "2010-06-29", "2010-07-30")
    pd.DataFrame({"Ticker": "TSLA", "Date": [d.isoformat() for d in days], "Open": 1.3, "High": 2.0, "Low": 1.1,
                  "Close": [1.5 + i / 100 for i in range(len(days))], "Adj Close": 1.5, "Volume": 100_000}
                 ).to_csv(archive, index=False)
    env = {**os.environ, "STOCK_ASSETS_FIRST_DAY": "2010-06-29", "STOCK_ASSETS_REPLAY_ARCHIVE": str(archive),
           "STOCK_ASSETS_STATE_DIR": str(tmp_path / "state")}
    out = subprocess.run([sys.executable, "-c", _EARLY_HISTORY, database_url, str(tmp_path / "landing")],
                         env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "first partition 2010-06-01" in out.stdout  # the 1st of the month: June's days all exist

    stored = _stored(database, "TSLA")
    assert list(stored["trade_date"]) == days  # from the IPO, 2010-06-29, on
    assert stored.iloc[0]["close"] == 1.5
    with database.begin() as conn:
        partitions = conn.execute(text("SELECT partition_name FROM market.prices_partitions "
                                       "ORDER BY partition_name")).scalars().all()
    assert partitions == ["prices_2010_06", "prices_2010_07"]


def test_a_bad_first_day_setting_is_refused(monkeypatch):
    from stock_assets import settings

    monkeypatch.setenv("STOCK_ASSETS_FIRST_DAY", "1990-13-01")
    with pytest.raises(ValueError, match="STOCK_ASSETS_FIRST_DAY: expected an ISO date"):
        settings.first_day()
    monkeypatch.setenv("STOCK_ASSETS_FIRST_DAY", "1990-01-01")
    assert settings.first_day() == "1990-01-01"


def test_the_configured_archive_is_the_replays_and_its_tickers_the_default(monkeypatch, tmp_path, state_dir):
    archive = tmp_path / "my_archive.csv"
    _csv_archive(archive)
    monkeypatch.setenv("STOCK_ASSETS_REPLAY_ARCHIVE", str(archive))
    assert TickerSelection().symbols() == ["4063.T", "AAPL", "OCDO.L"]
    client = QuoteClient()
    assert client.archive().source == str(archive)
    # Its answers are its own: the shared response cache never serves the bundled sample's for it.
    assert client.governance_scope == f"replay@{archive}"
    bars = client.daily_bars("OCDO.L", dt.date(2020, 7, 3), dt.date(2020, 7, 4))
    assert list(bars["trade_date"]) == [dt.date(2020, 7, 3)] and list(bars["close"]) == [2252.0]
    assert (bars["currency"].iloc[0], bars["exchange"].iloc[0], bars["exchange_timezone"].iloc[0]) == (
        "GBp", "LSE", "Europe/London")


def test_cleaning_stores_major_units_and_says_which_currency():
    from stock_assets.defs.prices.cleaning import clean_quotes

    def row(symbol, currency, price, dividend=0.0):
        return {"symbol": symbol, "trade_date": dt.date(2020, 7, 6), "open": price, "high": price + 2,
                "low": price - 2, "close": price, "adj_close": price, "volume": 10.0, "dividends": dividend,
                "stock_splits": 0.0, "source": "replay", "currency": currency}

    raw = pd.DataFrame([row("OCDO.L", "GBp", 2250.0, dividend=3.5), row("NPN.JO", "ZAc", 310000.0),
                        row("TEVA.TA", "ILA", 4500.0), row("4063.T", "JPY", 11800.0), row("AAPL", "USD", 91.0)])
    clean = clean_quotes(raw).clean.set_index("symbol")
    assert clean.loc["OCDO.L", ["close", "high", "dividend", "currency"]].tolist() == [22.5, 22.52, 0.035, "GBP"]
    assert clean.loc["NPN.JO", ["close", "currency"]].tolist() == [3100.0, "ZAR"]
    assert clean.loc["TEVA.TA", ["close", "currency"]].tolist() == [45.0, "ILS"]
    assert clean.loc["4063.T", ["close", "currency"]].tolist() == [11800.0, "JPY"]
    assert clean.loc["AAPL", ["close", "currency"]].tolist() == [91.0, "USD"]
    # Rows landed before the currency was recorded came from US listings only: USD.
    older = clean_quotes(raw[raw["symbol"] == "AAPL"].drop(columns="currency")).clean
    assert older["currency"].tolist() == ["USD"] and older["close"].tolist() == [91.0]


def test_every_known_exchange_has_a_working_calendar():
    from stock_assets.markets import EXCHANGES

    week = {e.suffix: sessions(e.calendar, dt.date(2020, 7, 1), dt.date(2020, 7, 8)) for e in EXCHANGES}
    assert all(3 <= len(days) <= 5 for days in week.values()), week
    assert dt.date(2020, 7, 3) not in week[""] and dt.date(2020, 7, 1) not in week[".HK"]  # US / HK holidays
