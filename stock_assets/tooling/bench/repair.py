"""Measure yfinance's `repair=True` on the recorded data, clean and with injected Yahoo errors.

    python -m stock_assets.tooling.bench.repair [--tickers AAPL,MSFT,...]

Every bundled ticker's whole history is fetched twice through the offline replay (the same
yfinance code path as the pipeline), with `repair=False` and `repair=True`; the script prints how
many bars repair changed, what it cost (time, extra requests), and what it did to three injected
errors: a one-day 100x price (pence/pounds), a one-day 1e300 close, and a split reported
inconsistently (a -80% move with no event, the 5:1 event a week later with no move).
Needs scipy (`pip install scipy`), which repair imports; the pipeline does not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
import warnings

import pandas as pd
import yfinance as yf

from stock_assets.yahoo.archive import PriceArchive
from stock_assets.yahoo.replay import replay_session

PRICES = ["Open", "High", "Low", "Close", "Adj Close"]


def _history(session, symbol: str, start: dt.date, end: dt.date, repair: bool) -> tuple[pd.DataFrame, float, int]:
    adapter = session.get_adapter("https://query2.finance.yahoo.com")
    before = adapter.requests["chart"]
    began = time.perf_counter()
    frame = yf.Ticker(symbol, session=session).history(start=start.isoformat(), end=end.isoformat(), interval="1d",
                                                       auto_adjust=False, actions=True, repair=repair)
    return frame, time.perf_counter() - began, adapter.requests["chart"] - before


def _changed(plain: pd.DataFrame, repaired: pd.DataFrame) -> pd.DataFrame:
    common = plain.index.intersection(repaired.index)
    a, b = plain.loc[common, PRICES + ["Volume"]], repaired.loc[common, PRICES + ["Volume"]]
    return b[((a - b).abs() > 1e-6 * a.abs().clip(lower=1)).any(axis=1)]


def injected_archive() -> PriceArchive:
    """The bundled archive with three Yahoo errors: XOM 100x on 2019-03-14, JNJ close 1e300 on
    2019-05-08, KO -80% from 2019-06-03 with no event and a 5:1 split event on 2019-06-10."""
    bundled = PriceArchive.bundled()
    prices = bundled._prices.copy()
    columns = ["open", "high", "low", "close", "adj_close"]
    prices.loc[(prices["symbol"] == "XOM") & (prices["date"] == "2019-03-14"), columns] *= 100
    prices.loc[(prices["symbol"] == "JNJ") & (prices["date"] == "2019-05-08"), ["high", "close"]] = 1e300
    prices.loc[(prices["symbol"] == "KO") & (prices["date"] < "2019-06-03"), columns] *= 5
    splits = pd.concat([bundled._splits, pd.DataFrame(
        {"symbol": ["KO"], "date": [pd.Timestamp("2019-06-10")], "numerator": [5], "denominator": [1]})])
    return PriceArchive(prices, splits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", default="")
    args = parser.parse_args()
    logging.getLogger("yfinance").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"yfinance(\.|$)")  # its own pandas deprecations
    archive = PriceArchive.bundled()
    symbols = [s for s in args.tickers.split(",") if s] or list(archive.symbols)
    start, end = archive.first_date, archive.last_date + dt.timedelta(days=1)
    session = replay_session()
    totals = {"bars": 0, "changed": 0, "plain_s": 0.0, "repair_s": 0.0, "plain_req": 0, "repair_req": 0}
    for symbol in symbols:
        plain, t0, r0 = _history(session, symbol, start, end, repair=False)
        repaired, t1, r1 = _history(session, symbol, start, end, repair=True)
        changed = _changed(plain, repaired)
        totals["bars"] += len(plain)
        totals["changed"] += len(changed)
        totals["plain_s"] += t0
        totals["repair_s"] += t1
        totals["plain_req"] += r0
        totals["repair_req"] += r1
        if len(changed) or len(repaired) != len(plain):
            print(f"{symbol}: repair changed {len(changed)} bar(s), rows {len(plain)} -> {len(repaired)}: "
                  f"{[d.date().isoformat() for d in changed.index[:5]]}")
    print(f"clean data: {totals['changed']} of {totals['bars']} bars changed by repair; "
          f"{totals['plain_s']:.1f} s / {totals['plain_req']} chart requests without, "
          f"{totals['repair_s']:.1f} s / {totals['repair_req']} with")

    faulty = replay_session(injected_archive())
    for symbol, day in (("XOM", "2019-03-14"), ("JNJ", "2019-05-08"), ("KO", "2019-06-03"), ("KO", "2019-06-10")):
        window = (dt.date.fromisoformat(day) - dt.timedelta(days=60), dt.date.fromisoformat(day) + dt.timedelta(days=30))
        for repair in (False, True):
            try:
                frame, _, _ = _history(faulty, symbol, *window, repair=repair)
            except Exception as err:  # noqa: BLE001 - measuring what repair does, errors included
                print(f"{symbol} {day} repair={repair}: {type(err).__name__}: {err}")
                continue
            stamp = pd.Timestamp(day).tz_localize(frame.index.tz)
            at = frame.index.get_indexer([stamp])[0]
            rows = frame.iloc[max(at - 1, 0):at + 2]
            print(f"{symbol} {day} repair={repair}: close {[round(c, 4) for c in rows['Close']]} "
                  f"splits {list(rows['Stock Splits'])} repaired? {list(rows.get('Repaired?', []))}")


if __name__ == "__main__":
    main()
