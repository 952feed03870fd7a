"""One pooled SQLAlchemy engine per process and database URL.

Dagster builds resources for every step; creating an engine each time would open a fresh pool per
step and leak connections. Engines are cached here by (process id, URL, pool settings): a forked
child never reuses its parent's sockets, and every step of a process shares one pool.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine

from stock_assets.database.urls import with_driver


@dataclass(frozen=True)
class PoolSettings:
    pool_size: int = 5
    max_overflow: int = 5
    pool_recycle_s: int = 1800
    pool_timeout_s: int = 30
    statement_timeout_ms: int = 600_000
    pre_ping: bool = True


_engines: dict[tuple[int, str, PoolSettings], Engine] = {}
_lock = threading.Lock()


def get_engine(url: str, pool: PoolSettings = PoolSettings()) -> Engine:
    key = (os.getpid(), with_driver(url, "psycopg"), pool)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(
                key[1],
                pool_size=pool.pool_size,
                max_overflow=pool.max_overflow,
                pool_recycle=pool.pool_recycle_s,
                pool_timeout=pool.pool_timeout_s,
                pool_pre_ping=pool.pre_ping,
                connect_args={
                    "application_name": "stock_assets",
                    "options": f"-c statement_timeout={pool.statement_timeout_ms}",
                },
            )
            _engines[key] = engine
        return engine


def engine_count() -> int:
    """Engines alive in this process (tests assert it stays at one per database)."""
    pid = os.getpid()
    return sum(1 for key in _engines if key[0] == pid)

