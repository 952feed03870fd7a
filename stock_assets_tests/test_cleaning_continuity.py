"""Day-over-day rules of the cleaning step on real bundled bars with Yahoo's errors injected.

Faults: a split reported inconsistently (a -80% move with no event, the 5:1 event a week later
with no move), once inside one fetch and once across daily fetches; a 100x (pence/pound) day; a
1e300 close. Asserts what is kept, what is rejected and with which reason and detail, and that
a correct split (in one fetch, or across the fetches before and after it) passes.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from stock_assets.defs.prices.cleaning import clean_quotes
from stock_assets.yahoo.archive import PriceArchive

PRICES = ["open", "high", "low", "close", "adj_close"]


def _raw(symbol: str, start: str, end: str, fetched: str = "2024-01-01 22:00") -> pd.DataFrame:
    bars = PriceArchive.bundled().bars(symbol, dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    return pd.DataFrame({
        "symbol": symbol, "trade_date": bars["date"], **{c: bars[c] for c in PRICES},
        "volume": bars["volume"].astype("float64"), "dividends": 0.0, "stock_splits": 0.0, "source": "replay",
        "fetched_at": pd.Timestamp(fetched, tz="America/New_York").tz_convert("UTC"),
    })


def _at(frame: pd.DataFrame, day: str) -> pd.Series:
    return pd.to_datetime(frame["trade_date"]) == pd.Timestamp(day)


def _daily_fetches(frame: pd.DataFrame) -> pd.DataFrame:
    """Each bar as the daily run fetched it: at 18:30 New York on its own day."""
    stamps = pd.to_datetime(frame["trade_date"]) + pd.Timedelta(hours=18, minutes=30)
    return frame.assign(fetched_at=stamps.dt.tz_localize("America/New_York").dt.tz_convert("UTC"))


def test_every_real_bar_of_the_bundled_data_passes_the_day_over_day_rules():
    archive = PriceArchive.bundled()
    raw = pd.concat([_raw(s, "2016-01-01", "2020-10-28") for s in archive.symbols], ignore_index=True)
    result = clean_quotes(raw)
    assert len(raw) == 70412
    assert result.rejected_by_reason == {"zero_volume_bar": 1}  # PFE 2019-11-18, nothing else


def _misdated_split() -> pd.DataFrame:
    """KO as Yahoo might send it after a 5:1 split: the history before 2019-06-03 not adjusted
    (a -80% move that day, no event), the event dated 2019-06-10 (no move that day)."""
    raw = _raw("KO", "2019-05-20", "2019-06-20")
    raw.loc[pd.to_datetime(raw["trade_date"]) < pd.Timestamp("2019-06-03"), PRICES] *= 5
    raw.loc[_at(raw, "2019-06-10"), "stock_splits"] = 5.0
    return raw


def test_a_move_like_a_split_without_the_event_is_rejected_inside_one_fetch():
    raw = _misdated_split()
    result = clean_quotes(raw)
    assert list(result.rejected["reason"]) == ["split_mismatch"]
    (rejected,) = result.rejected.itertuples(index=False)
    assert rejected.trade_date == dt.date(2019, 6, 3)
    assert rejected.detail.startswith("close 49.98 moved x1/5 from the previous close 245.65 (2019-05-31)")
    assert rejected.detail.endswith("like a split, but Yahoo reports no split on this day")
    # The event day is consistent inside this (adjusted) fetch: kept, with its ratio.
    assert result.clean.loc[_at(result.clean, "2019-06-10"), "split_ratio"].item() == 5.0
    assert len(result.clean) == len(raw) - 1


def test_a_misdated_split_across_daily_fetches_is_rejected_on_both_days():
    raw = _daily_fetches(_misdated_split())
    days = pd.to_datetime(raw["trade_date"])

    # The daily run of 2019-06-03: the previous sessions come from the landing zone as history.
    day_a = clean_quotes(raw[days == "2019-06-03"], history=raw[days < "2019-06-03"])
    assert list(day_a.rejected["reason"]) == ["split_mismatch"] and day_a.clean.empty
    assert "moved x1/5 from the previous close 245.65 (2019-05-31)" in day_a.rejected["detail"].item()

    # The daily run of 2019-06-10: the previous bar (06-07) was fetched before the split.
    day_b = clean_quotes(raw[days == "2019-06-10"], history=raw[days < "2019-06-10"])
    assert list(day_b.rejected["reason"]) == ["split_mismatch"] and day_b.clean.empty
    detail = day_b.rejected["detail"].item()
    assert detail.startswith("Yahoo reports a 5:1 split on this day; the previous close 51.49 (2019-06-07) "
                             "was fetched before it, so the close should move x1/5, but it moved x0.9979 (close 51.38)")

    # The days in between are consistent with their previous bars: kept.
    between = clean_quotes(raw[days == "2019-06-04"], history=raw[days < "2019-06-04"])
    assert between.rejected.empty and len(between.clean) == 1


def test_a_correct_split_passes_in_one_fetch_and_across_daily_fetches():
    raw = _raw("AAPL", "2020-08-17", "2020-09-12")
    raw.loc[_at(raw, "2020-08-31"), "stock_splits"] = 4.0
    assert clean_quotes(raw).rejected.empty  # one fetch after the split: adjusted, no jump

    # Daily fetches: the days before the split were stored unadjusted (4x), the split day jumps x1/4.
    daily = _daily_fetches(raw)
    before = pd.to_datetime(daily["trade_date"]) < pd.Timestamp("2020-08-31")
    daily.loc[before, PRICES] *= 4
    days = pd.to_datetime(daily["trade_date"])
    split_day = clean_quotes(daily[days == "2020-08-31"], history=daily[before])
    assert split_day.rejected.empty and split_day.clean["split_ratio"].item() == 4.0
    # Without fetch times, either basis is accepted.
    assert clean_quotes(daily[days == "2020-08-31"].drop(columns="fetched_at"),
                        history=daily[before].drop(columns="fetched_at")).rejected.empty
    # The same split day, but its previous bar already adjusted (fetched after the split) and yet
    # the close jumped: Yahoo did not adjust the history it sent.
    stale = daily.copy()
    stale.loc[before, "fetched_at"] = pd.Timestamp("2020-09-01 12:00", tz="UTC")
    unadjusted = clean_quotes(stale[days == "2020-08-31"], history=stale[before])
    assert list(unadjusted.rejected["reason"]) == ["split_mismatch"]
    assert "the history is not adjusted for the split" in unadjusted.rejected["detail"].item()


def test_a_100x_day_is_rejected_and_the_day_after_it_is_not():
    raw = _raw("XOM", "2019-03-01", "2019-03-29")
    raw.loc[_at(raw, "2019-03-14"), PRICES] *= 100
    result = clean_quotes(raw)
    assert list(result.rejected["reason"]) == ["implausible_jump"]
    assert result.rejected["trade_date"].item() == dt.date(2019, 3, 14)
    detail = result.rejected["detail"].item()
    assert detail.startswith("close 8044 is x99.67 the previous close 80.71 (2019-03-13)")
    assert detail.endswith("(a unit mix-up such as pence/pounds?)")
    assert len(result.clean) == len(raw) - 1

    # Daily: the day after the bad day compares with the last bar before it, not with the 100x one.
    days = pd.to_datetime(raw["trade_date"])
    assert clean_quotes(raw[days == "2019-03-15"], history=raw[days < "2019-03-15"]).rejected.empty


def test_two_bad_days_with_one_good_day_between_reject_the_bad_days_only():
    # Found by the property test: x2 on 03-13 and on 03-15, the good 03-14 between them moves x1/2
    # from the first bad bar and the bar after it moves x2 again. Only the bad days go.
    raw = _raw("XOM", "2019-03-01", "2019-03-29")
    for day in ("2019-03-13", "2019-03-15"):
        raw.loc[_at(raw, day), PRICES] *= 2
    result = clean_quotes(raw)
    assert sorted(result.rejected["trade_date"]) == [dt.date(2019, 3, 13), dt.date(2019, 3, 15)]
    assert set(result.rejected["reason"]) == {"split_mismatch"}
    assert len(result.clean) == len(raw) - 2


def test_a_1e300_close_is_rejected_by_name_and_history_rows_are_never_returned():
    raw = _raw("JNJ", "2019-05-01", "2019-05-15")
    raw.loc[_at(raw, "2019-05-08"), ["high", "close"]] = 1e300
    days = pd.to_datetime(raw["trade_date"])
    result = clean_quotes(raw[days >= "2019-05-08"], history=raw[days < "2019-05-08"])
    assert list(result.rejected["reason"]) == ["implausible_price"]
    assert result.rejected["detail"].item() == ("high is at or above the ceiling 1e+07, "
                                                "close is at or above the ceiling 1e+07")
    assert set(result.clean["trade_date"]) == {dt.date(2019, 5, d) for d in (9, 10, 13, 14)}


@pytest.mark.parametrize("ratio", [2.0, 3.0, 10.0, 0.5])
def test_any_split_ratio_without_an_event_is_caught(ratio):
    raw = _raw("MSFT", "2019-01-02", "2019-02-01")
    raw.loc[pd.to_datetime(raw["trade_date"]) >= pd.Timestamp("2019-01-15"), PRICES] /= ratio
    result = clean_quotes(raw)
    assert list(result.rejected["reason"]) == ["split_mismatch"]
    assert result.rejected["trade_date"].item() == dt.date(2019, 1, 15)


def test_a_crash_near_a_split_ratio_is_kept_when_it_trades_like_a_crash():
    # OXY 2020-03-09 closed x0.466 (inside the x1/2 band); opening it at x0.5 too leaves only its
    # 59% intraday range to tell it from a rescaled ordinary day.
    raw = _raw("OXY", "2020-03-02", "2020-03-13")
    raw.loc[_at(raw, "2020-03-09"), "open"] = 13.43
    result = clean_quotes(raw)
    assert result.rejected.empty
    # The same move as a rescaled calm day (a split Yahoo did not report) is rejected.
    calm = raw.copy()
    calm.loc[_at(calm, "2020-03-09"), ["open", "high", "low", "close", "adj_close"]] = [13.43, 13.9, 12.9, 13.2, 13.2]
    assert list(clean_quotes(calm).rejected["reason"]) == ["split_mismatch"]


def test_a_split_event_with_neither_move_is_rejected_when_fetch_times_are_unknown():
    raw = _raw("AAPL", "2020-08-24", "2020-09-05").drop(columns="fetched_at")
    raw.loc[_at(raw, "2020-08-31"), "stock_splits"] = 4.0
    raw.loc[pd.to_datetime(raw["trade_date"]) >= pd.Timestamp("2020-08-31"), PRICES] *= 2  # x2, neither x1 nor x1/4
    result = clean_quotes(raw)
    assert list(result.rejected["reason"]) == ["split_mismatch"]
    assert result.rejected["detail"].item().startswith(
        "Yahoo reports a 4:1 split on this day; the close should move x1/4 from the previous close 124.808 "
        "(2020-08-28) (fetched before the split) or not at all (fetched after it), but it moved x2.068 (close 258.08)")


def test_a_confirmed_move_is_kept_and_the_other_rules_still_apply():
    raw = _raw("MSFT", "2019-01-02", "2019-02-01")
    raw.loc[pd.to_datetime(raw["trade_date"]) >= pd.Timestamp("2019-01-15"), PRICES] /= 2
    confirmed = [("MSFT", dt.date(2019, 1, 15))]
    assert clean_quotes(raw, confirmed_moves=confirmed).rejected.empty
    # Confirmed is not exempt: a missing volume still rejects the day, and the break then shows on
    # the next day, which nobody confirmed.
    raw.loc[_at(raw, "2019-01-15"), "volume"] = float("nan")
    rejected = clean_quotes(raw, confirmed_moves=confirmed).rejected
    assert list(zip(rejected["trade_date"], rejected["reason"])) == [
        (dt.date(2019, 1, 15), "missing_volume"), (dt.date(2019, 1, 16), "split_mismatch")]
