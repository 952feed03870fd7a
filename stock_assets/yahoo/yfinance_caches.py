"""yfinance's on-disk caches (symbol time zones, the Yahoo cookie), pointed at one folder and opened safely.

yfinance keeps them process-wide and opens them lazily, which goes wrong in two ways:

- It opens a cache on first use without a lock. When several threads fetch at once in a fresh
  folder, the one that loses the race to create the folder gets "Error creating TzCache folder",
  and yfinance then turns the time-zone cache off for the whole process: every later ticker costs
  an extra time-zone request to Yahoo.
- `yf.set_tz_cache_location()` closes the open database, but the cache object built on it keeps
  its handle, and peewee reopens a closed handle at its old path: after a move, yfinance goes on
  reading and writing the first folder it used.

`use_cache_dir()` moves the caches to a folder, drops the cache objects bound to the old one, and
opens the new ones at once, in the calling thread, before any fetch runs.
"""

from __future__ import annotations

import os
import threading

import yfinance as yf
from yfinance import cache as yf_cache

_lock = threading.Lock()


def use_cache_dir(cache_dir: str) -> None:
    """Point yfinance's time-zone and cookie caches at `cache_dir` (created if missing) and open them."""
    with _lock:
        if _bound_to(cache_dir):
            return
        os.makedirs(cache_dir, exist_ok=True)
        with yf_cache._cache_init_lock:
            yf.set_tz_cache_location(cache_dir)  # closes the databases and moves their location
            yf_cache._TzCacheManager._tz_cache = None
            yf_cache._CookieCacheManager._Cookie_cache = None
            yf_cache._ISINCacheManager._isin_cache = None
        # get_*_cache() take yfinance's init lock themselves, so it is released above.
        yf_cache.get_tz_cache().initialise()
        yf_cache.get_cookie_cache().initialise()


def _bound_to(cache_dir: str) -> bool:
    """Whether the caches already live in `cache_dir` and are open (not turned off)."""
    caches = (yf_cache._TzCacheManager._tz_cache, yf_cache._CookieCacheManager._Cookie_cache)
    return yf_cache._TzDBManager.get_location() == cache_dir and all(
        cache is not None and not cache.dummy and cache.initialised == 1
        and getattr(cache.db, "database", None) == os.path.join(cache_dir, database)
        for cache, database in zip(caches, ("tkr-tz.db", "cookies.db"))
    )
