"""Wrong data Yahoo might send, through the real pipeline: never stored as clean, rejected by name.

Yahoo is replayed from the bundled archive with errors injected (the rest is real: yfinance's
parsing of the chart answers, the landing zone, Dagster runs, PostgreSQL):

- KO split 5:1 reported inconsistently: the history before 2019-06-03 not adjusted (a -80% move
  that day without an event), the event dated 2019-06-10 (no move that day); fetched day by day
  as the daily schedule would, then refetched for that ticker;
- a 100x XOM day (2019-03-14) and a 1e300 JNJ close (2019-05-08), in a backfill and in a daily run;
- two bars for XOM on one day that disagree (a landing day holding a second fetch).

Asserts what `market.price_rejections` holds (reason and detail), what the landing zone's
cleaned days and `market.prices` hold, and what the checks say.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import text

from stock_assets.defs.partitions import range_tags, trading_days
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.prices.sensors import restatement_sensor
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.defs.warehouse.assets import monthly_prices
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets.testing.yahoo_emulator import YahooEmulator
from stock_assets.yahoo.archive import PriceArchive

ASSETS = [raw_quotes, cleaned_prices, monthly_prices]
PRICES = ["open", "high", "low", "close", "adj_close"]


def _archive(edit) -> PriceArchive:
    bundled = PriceArchive.bundled()
    prices, splits = bundled._prices.copy(), bundled._splits.copy()
    prices, splits = edit(prices, splits)
    return PriceArchive(prices, splits)


def _misdated_split(prices: pd.DataFrame, splits: pd.DataFrame):
    prices.loc[(prices["symbol"] == "KO") & (prices["date"] < "2019-06-03"), PRICES] *= 5
    event = pd.DataFrame({"symbol": ["KO"], "date": [pd.Timestamp("2019-06-10")], "numerator": [5], "denominator": [1]})
    return prices, pd.concat([splits, event], ignore_index=True)


def _garbage(prices: pd.DataFrame, splits: pd.DataFrame):
    prices.loc[(prices["symbol"] == "XOM") & (prices["date"] == "2019-03-14"), PRICES] *= 100
    prices.loc[(prices["symbol"] == "JNJ") & (prices["date"] == "2019-05-08"), ["high", "close"]] = 1e300
    return prices, splits


@pytest.fixture
def landing(tmp_path) -> LandingIOManager:
    return LandingIOManager(base_dir=str(tmp_path / "landing"))


@contextmanager
def _yahoo(archive: PriceArchive) -> Iterator[QuoteClient]:
    """A quote client whose Yahoo is the emulator serving `archive` (no rate limit to speak of)."""
    emulator = YahooEmulator(rate_per_s=1000, burst=100, archive=archive)
    with emulator.serve() as url:
        yield QuoteClient(upstream_url=url)


def _resources(database, landing, tickers, quotes=None):
    return {"database": database, "quotes": quotes or QuoteClient(), "tickers": TickerSelection(tickers=tickers),
            "landing_io_manager": landing}


def _run(instance, resources, first: str, last: str | None = None, selection=("raw_quotes", "cleaned_prices"),
         **kwargs) -> dg.ExecuteInProcessResult:
    if last is None:
        return dg.materialize(ASSETS, selection=list(selection), resources=resources, instance=instance,
                              partition_key=first, **kwargs)
    tags = {**range_tags(dt.date.fromisoformat(first), dt.date.fromisoformat(last)), **kwargs.pop("tags", {})}
    return dg.materialize(ASSETS, selection=list(selection), resources=resources, instance=instance, tags=tags,
                          **kwargs)


def _fetched_on_its_day(landing: LandingIOManager, day: str) -> None:
    """The stored raw day as the daily schedule fetched it: at 18:30 New York that evening (the
    replay answers today with the history as it is now)."""
    path = landing.path_for(dg.AssetKey("raw_quotes"), day)
    frame = pd.read_parquet(path)
    if frame.empty:
        return  # a weekend: nothing was fetched
    frame["fetched_at"] = pd.Timestamp(f"{day} 18:30", tz="America/New_York").tz_convert("UTC")
    frame.to_parquet(path, index=False)


def _rejections(database) -> list[tuple]:
    with database.begin() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT symbol, trade_date, reason, detail FROM market.price_rejections ORDER BY trade_date, symbol"))]


def _cleaned(landing: LandingIOManager, day: str) -> pd.DataFrame:
    return pd.read_parquet(landing.path_for(dg.AssetKey("cleaned_prices"), day))


def _sessions(first: str, last: str) -> list[str]:
    return [d.isoformat() for d in trading_days(dt.date.fromisoformat(first),
                                                dt.date.fromisoformat(last) + dt.timedelta(days=1))]


def test_a_misdated_split_fetched_day_by_day_is_rejected_on_both_days_refetched_and_never_loaded(
        database, landing):
    with _yahoo(_archive(_misdated_split)) as quotes:
        _misdated_split_day_by_day(database, landing, _resources(database, landing, ["KO", "PEP"], quotes))


def _misdated_split_day_by_day(database, landing, resources):
    instance = dg.DagsterInstance.ephemeral()
    # The week before, fetched by the daily runs of those days.
    assert _run(instance, resources, "2019-05-27", "2019-05-31", selection=["raw_quotes"]).success
    for day in _sessions("2019-05-27", "2019-05-31"):
        _fetched_on_its_day(landing, day)
    assert _run(instance, resources, "2019-05-27", "2019-05-31", selection=["cleaned_prices"]).success

    # Then day by day (weekends too: stored empty), as the schedule runs them.
    for day in (d.date().isoformat() for d in pd.date_range("2019-06-01", "2019-06-10")):
        assert _run(instance, resources, day, selection=["raw_quotes"]).success
        _fetched_on_its_day(landing, day)
        assert _run(instance, resources, day, selection=["cleaned_prices"]).success

    rejected = _rejections(database)
    assert [row[:3] for row in rejected] == [("KO", dt.date(2019, 6, 3), "split_mismatch"),
                                             ("KO", dt.date(2019, 6, 10), "split_mismatch")]
    assert rejected[0][3] == ("close 49.98 moved x1/5 from the previous close 245.65 (2019-05-31), open 49.16 "
                              "too, like a split, but Yahoo reports no split on this day")
    assert rejected[1][3] == ("Yahoo reports a 5:1 split on this day; the previous close 51.49 (2019-06-07) was "
                              "fetched before it, so the close should move x1/5, but it moved x0.9979 (close 51.38)")
    assert list(_cleaned(landing, "2019-06-03")["symbol"]) == ["PEP"]
    assert list(_cleaned(landing, "2019-06-10")["symbol"]) == ["PEP"]
    assert sorted(_cleaned(landing, "2019-06-04")["symbol"]) == ["KO", "PEP"]

    # The restatement sensor compares the stored bar before the event with the event day's open:
    # they agree (x0.998), so to it the stored history looks adjusted already, and it asks nothing
    # for KO. The operator refetches KO's history as the README says (a ticker-only run, cache
    # refreshed); Yahoo sends the same inconsistent history, and cleaning rejects it again.
    with dg.build_sensor_context(instance=instance, resources={"landing_io_manager": landing}) as context:
        requests = restatement_sensor(context).run_requests or []
    assert not [r for r in requests if "KO" in r.run_config["ops"]["raw_quotes"]["config"]["only_tickers"]]
    refetch = {"ops": {"raw_quotes": {"config": {"only_tickers": ["KO"], "refresh_cache": True}}}}
    # (Over the stored days after Memorial Day, to keep the test short.)
    assert _run(instance, resources, "2019-05-28", "2019-06-07", run_config=refetch).success
    rejected = _rejections(database)
    assert [row[:3] for row in rejected] == [("KO", dt.date(2019, 6, 3), "split_mismatch"),
                                             ("KO", dt.date(2019, 6, 10), "split_mismatch")]
    assert rejected[0][3].startswith("close 49.98 moved x1/5 from the previous close 245.65 (2019-05-31)")

    # The rest of June, and the month into PostgreSQL: no KO bar of either day is loaded.
    assert _run(instance, resources, "2019-06-11", "2019-06-30").success
    assert _run(instance, resources, "2019-06-01", selection=["monthly_prices"]).success
    with database.begin() as conn:
        ko_days = set(conn.execute(text(
            "SELECT trade_date FROM market.prices WHERE symbol = 'KO' AND trade_date < '2019-06-12'")).scalars())
    assert ko_days == {dt.date.fromisoformat(d) for d in _sessions("2019-06-01", "2019-06-11")} - {
        dt.date(2019, 6, 3), dt.date(2019, 6, 10)}


def test_a_100x_day_and_a_1e300_close_are_rejected_by_name_in_a_backfill_and_a_daily_run(database, landing):
    with _yahoo(_archive(_garbage)) as quotes:
        _garbage_backfill_and_day(database, landing, _resources(database, landing, ["XOM", "JNJ"], quotes))


def _garbage_backfill_and_day(database, landing, resources):
    instance = dg.DagsterInstance.ephemeral()
    result = _run(instance, resources, "2019-03-01", "2019-05-31")
    assert result.success
    rejected = _rejections(database)
    assert [row[:3] for row in rejected] == [("XOM", dt.date(2019, 3, 14), "implausible_jump"),
                                             ("JNJ", dt.date(2019, 5, 8), "implausible_price")]
    assert rejected[0][3] == ("close 8044 is x99.67 the previous close 80.71 (2019-03-13); no split explains a "
                              "move of x10 or more (a unit mix-up such as pence/pounds?)")
    assert rejected[1][3] == "high is at or above the ceiling 1e+07, close is at or above the ceiling 1e+07"
    with database.begin() as conn:
        stored = conn.execute(text("SELECT high, close FROM market.price_rejections WHERE symbol = 'JNJ'")).one()
    assert tuple(stored) == (1e300, 1e300)  # the rejected row keeps what Yahoo said

    # The day after the 100x day, cleaned on its own: compared with the bars before the bad one.
    assert _run(instance, resources, "2019-03-15", selection=["cleaned_prices"]).success
    assert sorted(_cleaned(landing, "2019-03-15")["symbol"]) == ["JNJ", "XOM"]
    assert _run(instance, resources, "2019-03-01", selection=["monthly_prices"]).success
    assert _run(instance, resources, "2019-05-01", selection=["monthly_prices"]).success
    with database.begin() as conn:
        highest = dict(conn.execute(text("SELECT symbol, max(high) FROM market.prices GROUP BY symbol")).all())
        days = conn.execute(text("SELECT count(*) FROM market.prices WHERE symbol = 'XOM'")).scalar_one()
    assert highest["XOM"] < 100 and highest["JNJ"] < 200
    assert days == len(_sessions("2019-03-01", "2019-03-31")) + len(_sessions("2019-05-01", "2019-05-31")) - 1


def test_two_bars_that_disagree_for_one_day_are_both_rejected_showing_both(database, landing):
    resources = _resources(database, landing, ["XOM", "JNJ"])
    instance = dg.DagsterInstance.ephemeral()
    assert _run(instance, resources, "2019-03-04", "2019-03-08").success
    # A second fetch of XOM landed in the same day with another close (and an identical JNJ re-fetch).
    path = landing.path_for(dg.AssetKey("raw_quotes"), "2019-03-06")
    day = pd.read_parquet(path)
    again = day.copy()
    again["fetched_at"] = day["fetched_at"] + pd.Timedelta(hours=1)
    xom = again["symbol"] == "XOM"
    again.loc[xom, "close"] = (again.loc[xom, "low"] + again.loc[xom, "high"]) / 2  # another close in the range
    pd.concat([day, again], ignore_index=True).to_parquet(path, index=False)

    result = _run(instance, resources, "2019-03-06", selection=["cleaned_prices"])
    assert result.success  # the warnings fail, not the blocking checks
    rejected = _rejections(database)
    assert [row[:3] for row in rejected] == [("JNJ", dt.date(2019, 3, 6), "duplicate"),
                                             ("XOM", dt.date(2019, 3, 6), "conflicting_duplicate"),
                                             ("XOM", dt.date(2019, 3, 6), "conflicting_duplicate")]
    first, second = (day.loc[day["symbol"] == "XOM", "fetched_at"].item() + pd.Timedelta(hours=h) for h in (0, 1))
    close, other = day.loc[day["symbol"] == "XOM", "close"].item(), again.loc[xom, "close"].item()
    assert close != other
    assert rejected[1][3] == (
        f"2 rows for this symbol and date disagree: close {close:.6g} (fetched {first:%Y-%m-%d %H:%M} UTC) "
        f"vs close {other:.6g} (fetched {second:%Y-%m-%d %H:%M} UTC)")
    assert rejected[2][3] == rejected[1][3]
    assert list(_cleaned(landing, "2019-03-06")["symbol"]) == ["JNJ"]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["unique_symbol_date"].passed and checks["rejected_share"].passed
    assert not checks["tickers_complete"].passed and "XOM" in checks["tickers_complete"].description


class _VolumeLeftOut(YahooEmulator):
    """The emulator, with Yahoo leaving out one bar's volume (`null`, prices present)."""

    def __init__(self, symbol: str, day: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.symbol, self.stamp = symbol, int(pd.Timestamp(f"{day} 09:30", tz="America/New_York").timestamp())

    def _replayed(self, request, url, query):
        answer = super()._replayed(request, url, query)
        if not url.path.endswith(f"/{self.symbol}") or answer.status != 200:
            return answer
        document = json.loads(answer.body)
        result = document["chart"]["result"][0]
        if self.stamp in result.get("timestamp", []):
            result["indicators"]["quote"][0]["volume"][result["timestamp"].index(self.stamp)] = None
        body = json.dumps(document).encode()
        headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in answer.headers]
        return type(answer)(answer.status, headers, body)


def test_a_volume_yahoo_left_out_is_rejected_as_missing_not_as_a_zero_volume_bar(database, landing):
    emulator = _VolumeLeftOut("MRK", "2019-11-19", rate_per_s=1000, burst=100)
    with emulator.serve() as url:
        resources = _resources(database, landing, ["PFE", "MRK"], QuoteClient(upstream_url=url))
        assert _run(dg.DagsterInstance.ephemeral(), resources, "2019-11-18", "2019-11-22").success
    stored = pd.read_parquet(landing.path_for(dg.AssetKey("raw_quotes"), "2019-11-19")).set_index("symbol")
    assert pd.isna(stored.loc["MRK", "volume"]) and stored.loc["PFE", "volume"] > 0  # what Yahoo said
    assert _rejections(database) == [
        ("PFE", dt.date(2019, 11, 18), "zero_volume_bar",
         "volume is 0 (no trade, or a volume Yahoo left out, which yfinance reports as 0) "
         "with o=37.28 h=37.28 l=37.28 c=37.28"),
        ("MRK", dt.date(2019, 11, 19), "missing_volume", "volume is NaN (Yahoo sent no volume)"),
    ]


def _spin_off(prices: pd.DataFrame, splits: pd.DataFrame):
    """PEP as if a spin-off halved it on 2019-06-04: an ordinary day at half the price, no event."""
    prices.loc[(prices["symbol"] == "PEP") & (prices["date"] >= "2019-06-04"), PRICES] /= 2
    return prices, splits


def test_a_move_the_operator_confirmed_is_stored_the_next_time_the_day_is_cleaned(database, landing):
    with _yahoo(_archive(_spin_off)) as quotes:
        resources = _resources(database, landing, ["KO", "PEP"], quotes)
        instance = dg.DagsterInstance.ephemeral()
        assert _run(instance, resources, "2019-05-28", "2019-06-07").success
    [(symbol, day, reason, detail)] = _rejections(database)
    assert (symbol, day, reason) == ("PEP", dt.date(2019, 6, 4), "split_mismatch")
    assert detail.endswith("like a split, but Yahoo reports no split on this day")

    # Checked (a spin-off went ex that day): confirmed in PostgreSQL, the day re-materialized.
    with database.begin() as conn:
        conn.execute(text("INSERT INTO market.confirmed_moves (symbol, trade_date, note) VALUES "
                          "('PEP', '2019-06-04', 'spin-off went ex; checked against the exchange notice')"))
    assert _run(instance, resources, "2019-06-04", selection=["cleaned_prices"]).success
    assert _rejections(database) == []
    stored = _cleaned(landing, "2019-06-04").set_index("symbol")
    assert stored.loc["PEP", "close"] == pytest.approx(
        PriceArchive.bundled().bars("PEP", dt.date(2019, 6, 4), dt.date(2019, 6, 5))["close"].item() / 2, abs=1e-6)
    with database.begin() as conn:  # who confirmed it, recorded
        confirmed = conn.execute(text("SELECT symbol, trade_date, confirmed_by <> '' FROM market.confirmed_moves")).all()
    assert [tuple(row) for row in confirmed] == [("PEP", dt.date(2019, 6, 4), True)]
