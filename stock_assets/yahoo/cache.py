"""A response cache shared by every process: the same question is asked of Yahoo once.

Successful chart answers are kept in `quotes.response_cache`, keyed by the canonical request
(`http_calls.UpstreamCall.cache_key`: scope, symbol, range, interval, events and adjustment flags,
never the crumb). How long an answer is trusted depends on its range: a range wholly in the past
does not change and is kept long (30 days by default); a range touching today is kept briefly
(5 minutes), because today's bar is still moving.

Concurrent requests for the same key make one upstream call: the first takes a transaction-level
advisory lock on the key, re-checks the cache, asks upstream and stores the answer in that same
transaction, so the lock is released as the answer becomes visible; the others wait on the lock
and then find the answer. The lock's connection stays open for the duration of that one upstream
call, which the parallelism limit keeps small. A request, hit or miss, takes one pooled
connection (it took up to four).

Bodies are compressed with Zstandard at level 1: a 20-year answer (560 KB of JSON) takes 0.8 ms
and shrinks to 200 KB, where zlib at level 1 took 5.6 ms for 280 KB (measured on the synthetic
bench answers; a 3,000-ticker backfill spent 17 s of its fetch compressing). Bodies stored by
earlier versions (zlib) are still read: a Zstandard frame is told apart by its magic number.
(The bundled PostgreSQL has no lz4 for TOAST, and pglz would compress them again on the server.)
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import zstandard
from sqlalchemy import Connection, Engine, text

from stock_assets.yahoo.http_calls import UpstreamCall

# pg_advisory_xact_lock(namespace, hashtext(key)): the namespace keeps these locks apart from the
# schema runner's and the monthly loader's.
_LOCK_NAMESPACE = 0x51554F54  # "QUOT"
_ZSTD_LEVEL = 1
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_SELECT = text("SELECT status, content_type, body FROM quotes.response_cache"
               " WHERE cache_key = :key AND expires_at > clock_timestamp()")
_UPSERT = text(
    "INSERT INTO quotes.response_cache (cache_key, scope, symbol, request, range_end, status,"
    " content_type, body, fetched_at, expires_at)"
    " VALUES (:key, :scope, :symbol, :request, :range_end, :status, :content_type, :body,"
    " clock_timestamp(), clock_timestamp() + make_interval(secs => :ttl))"
    " ON CONFLICT (cache_key) DO UPDATE SET status = EXCLUDED.status,"
    " content_type = EXCLUDED.content_type, body = EXCLUDED.body,"
    " fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at"
)


@dataclass(frozen=True)
class CachedAnswer:
    status: int
    content_type: str
    body: bytes


class CacheFill(Protocol):
    """The exclusive right to fill one key (see `ResponseCache.filling`)."""

    connection: Connection | None  # the database connection holding the key's lock, if any

    def get(self) -> CachedAnswer | None:
        """The answer stored meanwhile (by another process), if any."""

    def put(self, answer: CachedAnswer, ttl_s: float) -> None: ...


class ResponseCache(Protocol):
    def filling(self, call: UpstreamCall):  # a context manager yielding a CacheFill
        """Exclusive right to fill the cache for this call's key (all processes)."""


class PostgresResponseCache:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:  # expired answers are never served; drop them now and then
            conn.execute(text("DELETE FROM quotes.response_cache WHERE expires_at < clock_timestamp()"))

    @contextmanager
    def filling(self, call: UpstreamCall) -> Iterator[CacheFill]:
        with self.engine.connect() as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:namespace, hashtext(:key))"),
                         {"namespace": _LOCK_NAMESPACE, "key": call.cache_key})
            yield _PostgresFill(conn, call)


class _PostgresFill:
    """A fill inside the transaction that holds the key's lock."""

    def __init__(self, conn: Connection, call: UpstreamCall) -> None:
        self.connection, self.call = conn, call

    def get(self) -> CachedAnswer | None:
        return _select(self.connection, self.call)

    def put(self, answer: CachedAnswer, ttl_s: float) -> None:
        call = self.call
        self.connection.execute(_UPSERT, {
            "key": call.cache_key, "scope": call.scope, "symbol": call.symbol, "request": call.canonical,
            "range_end": call.range_end, "status": answer.status, "content_type": answer.content_type,
            "body": compress(answer.body), "ttl": float(ttl_s),
        })


def _select(conn: Connection, call: UpstreamCall) -> CachedAnswer | None:
    row = conn.execute(_SELECT, {"key": call.cache_key}).one_or_none()
    if row is None:
        return None
    return CachedAnswer(row.status, row.content_type, decompress(bytes(row.body)))


def compress(body: bytes) -> bytes:
    # A compressor per call: zstandard's compressors are not safe to share between threads.
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(body)


def decompress(stored: bytes) -> bytes:
    """A stored body: Zstandard, or zlib as earlier versions stored it."""
    if stored.startswith(_ZSTD_MAGIC):
        return zstandard.ZstdDecompressor().decompress(stored)
    return zlib.decompress(stored)


class LocalResponseCache:
    """The same cache in this process only (monotonic clock)."""

    def __init__(self) -> None:
        self._clock = time.monotonic
        self._entries: dict[str, tuple[float, CachedAnswer]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, call: UpstreamCall) -> CachedAnswer | None:
        with self._guard:
            entry = self._entries.get(call.cache_key)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    @contextmanager
    def filling(self, call: UpstreamCall) -> Iterator[CacheFill]:
        with self._guard:
            key_lock = self._locks.setdefault(call.cache_key, threading.Lock())
        with key_lock:
            yield _LocalFill(self, call)

    def put(self, call: UpstreamCall, answer: CachedAnswer, ttl_s: float) -> None:
        with self._guard:
            self._entries[call.cache_key] = (self._clock() + ttl_s, answer)


class _LocalFill:
    connection = None

    def __init__(self, cache: LocalResponseCache, call: UpstreamCall) -> None:
        self.cache, self.call = cache, call

    def get(self) -> CachedAnswer | None:
        return self.cache.get(self.call)

    def put(self, answer: CachedAnswer, ttl_s: float) -> None:
        self.cache.put(self.call, answer, ttl_s)
