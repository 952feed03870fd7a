"""yfinance's time-zone cache follows `use_cache_dir`, and concurrent first use cannot turn it off."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yfinance as yf

from stock_assets.yahoo.yfinance_caches import use_cache_dir


@pytest.fixture
def restore_cache_dir():
    before = yf.cache._TzDBManager.get_location()
    yield
    use_cache_dir(before)


def stored_zones(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / "tkr-tz.db") as db:
        return dict(db.execute("SELECT key, value FROM _tz_kv").fetchall())


def test_a_fresh_folder_is_open_before_threads_use_it(tmp_path, restore_cache_dir):
    folder = tmp_path / "not-yet-there"
    use_cache_dir(str(folder))

    cache = yf.cache.get_tz_cache()
    assert folder.is_dir() and not cache.dummy and cache.initialised == 1

    symbols = [f"T{i}" for i in range(64)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda symbol: yf.cache.get_tz_cache().store(symbol, "America/New_York"), symbols))
        seen = list(pool.map(lambda symbol: yf.cache.get_tz_cache().lookup(symbol), symbols))
    assert seen == ["America/New_York"] * len(symbols)
    assert not yf.cache.get_tz_cache().dummy


def test_time_zones_go_to_the_folder_the_caches_were_moved_to(tmp_path, restore_cache_dir):
    first, second = tmp_path / "first", tmp_path / "second"
    use_cache_dir(str(first))
    yf.cache.get_tz_cache().store("KO", "America/New_York")

    use_cache_dir(str(second))
    yf.cache.get_tz_cache().store("SAP.DE", "Europe/Berlin")

    # yfinance's own set_tz_cache_location would leave the cache writing to `first`.
    assert stored_zones(first) == {"KO": "America/New_York"}
    assert stored_zones(second) == {"SAP.DE": "Europe/Berlin"}
    assert yf.cache.get_tz_cache().lookup("KO") is None  # the second folder's cache, not the first's
    use_cache_dir(str(first))
    assert yf.cache.get_tz_cache().lookup("KO") == "America/New_York"
