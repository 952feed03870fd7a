"""P processes share one Yahoo rate limit: measured rate and 429s against the Yahoo emulator.

The emulator (stock_assets.testing.yahoo_emulator) runs in this process on 127.0.0.1 and enforces
its own limit - the configured rate and burst, answering excess with 429. P worker processes
(spawned, each with its own database connections, as Dagster's step processes are) send chart
requests through the governed transport as fast as the shared limiter lets them, for S seconds.
The emulator's log of arrivals is the measurement:

- measured_rate: the sustained rate, (arrivals - burst) / (last arrival - burst-th arrival); a
  GCRA bucket lets `burst` requests go at once, then one per 1/rate, so this is the rate granted;
- max_burst: the most arrivals the emulator saw within one emission interval (1/rate);
- emulator_429s: requests the emulator refused (must be 0 at its own limit).

`--limiter sql` is the project's bucket (quotes.reserve_slot, one statement per request);
`--limiter pyrate` is pyrate-limiter's PostgresBucket (a sliding-window log in a table, locked per
decision) configured as Rate(burst, burst/rate s); `--limiter both` runs one after the other.

Measured on the development machine (2 cores, embedded PostgreSQL), 4 processes, burst 2:

    stock-assets bench ratelimit --processes 4 --rate R --seconds S --limiter both --json

    rate  S    limiter  measured   error    429s  max_burst  requests per process
    1/s   60   sql       1.0001   +0.01 %    0      2        16 16 16 17
               pyrate    0.9732   -2.68 %    0      2        28 19  1 16
    5/s   30   sql       4.9999   -0.00 %    0      2        38 39 39 39
               pyrate    4.3582  -12.84 %    1      3       118 15  1  3
    10/s  30   sql       9.9402   -0.60 %    0      2        76 76 76 76
               pyrate    7.7109  -22.89 %    1      3       232  1  7  1

The SQL bucket is kept: on the rate, fair between processes, never above the burst. pyrate's
bucket decides under `LOCK TABLE ... NOWAIT`, so a process that loses the lock race is refused and
sleeps while one process takes nearly every slot, and its window log lets a window's requests go
back to back (bursts of 3 seen by the emulator, and 429s).
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import time
import uuid

REQUEST_URL = "https://query2.finance.yahoo.com/v8/finance/chart/AAPL?range=1d&interval=1d"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
    parser.add_argument("--rate", type=float, default=5.0, help="requests/s, the emulator's and the client's (5)")
    parser.add_argument("--burst", type=int, default=2, help="burst, the emulator's and the client's (2)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the workers send (30)")
    parser.add_argument("--guard", type=float, default=0.1, help="client burst guard in seconds (0.1)")
    parser.add_argument("--limiter", choices=("sql", "pyrate", "both"), default="sql",
                        help="sql = the project's bucket; pyrate = pyrate-limiter's PostgresBucket")
    parser.add_argument("--json", action="store_true", help="one line of JSON")


def run(args: argparse.Namespace) -> dict:
    from stock_assets.database.resource import PostgresResource

    database = PostgresResource()
    database.engine  # noqa: B018 - starts the embedded server if needed and applies the schema
    url = database.resolved_url
    if args.limiter != "both":
        return _measure(url, args.limiter, args)
    runs = {kind: _measure(url, kind, args) for kind in ("sql", "pyrate")}
    return {**runs["sql"], "limiter": "both", "runs": runs}


def _measure(url: str, limiter: str, args: argparse.Namespace) -> dict:
    from stock_assets.testing.yahoo_emulator import YahooEmulator

    name = f"bench_{uuid.uuid4().hex[:10]}"
    emulator = YahooEmulator(rate_per_s=args.rate, burst=args.burst)
    emulator.warm_up()
    context = multiprocessing.get_context("spawn")
    results, ready, go = context.Queue(), context.Queue(), context.Event()
    start_at = context.Value("d", 0.0)
    with emulator.serve() as base_url:
        workers = [
            context.Process(target=_worker, args=(url, base_url, limiter, name, args.rate, args.burst, args.guard,
                                                  args.seconds, ready, go, start_at, results))
            for _ in range(args.processes)
        ]
        for worker in workers:
            worker.start()
        for _ in workers:  # every worker has imported, connected and built its session
            ready.get(timeout=300)
        start_at.value = time.time() + 0.5  # then they all start sending at the same moment
        go.set()
        reports = [results.get(timeout=args.seconds + 120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
    _forget(url, name, limiter)
    errors = [r["error"] for r in reports if r.get("error")]
    arrivals = sorted(entry.at for entry in emulator.log)
    figures = _figures(arrivals, args.rate, args.burst)
    return {
        "limiter": limiter,
        "processes": args.processes,
        "seconds": args.seconds,
        "configured_rate": args.rate,
        "burst": args.burst,
        **figures,
        "emulator_429s": emulator.throttled,
        "requests": len(arrivals),
        "requests_per_process": [r["sent"] for r in reports],
        "worker_errors": errors[:5],
    }


def _figures(arrivals: list[float], rate: float, burst: int) -> dict:
    if len(arrivals) <= burst:
        return {"measured_rate": None, "rate_error_pct": None, "max_burst": len(arrivals)}
    # After the first `burst` arrivals (the bucket's initial allowance), a GCRA bucket grants one
    # request per 1/rate: n - burst intervals from the burst-th arrival to the last.
    span = arrivals[-1] - arrivals[burst - 1]
    measured = (len(arrivals) - burst) / span
    interval = 1.0 / rate
    most, first = 0, 0
    for last, at in enumerate(arrivals):
        while at - arrivals[first] >= interval:
            first += 1
        most = max(most, last - first + 1)
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    return {
        "measured_rate": round(measured, 4),
        "rate_error_pct": round(100 * (measured - rate) / rate, 3),
        "max_burst": most,
        "min_gap_s": round(gaps[0], 4),
        "median_gap_s": round(gaps[len(gaps) // 2], 4),
    }


def _worker(url: str, base_url: str, limiter_kind: str, name: str, rate: float, burst: int, guard: float,
            seconds: float, ready, go, start_at, results) -> None:
    """One 'step process': its own engine, the governed transport, requests until the deadline."""
    sent, error = 0, None
    try:
        from sqlalchemy import text

        from stock_assets.database.engine import get_engine
        from stock_assets.yahoo.breaker import BreakerPolicy, PostgresBreaker
        from stock_assets.yahoo.limiter import PostgresRateLimiter, RateLimit
        from stock_assets.yahoo.transport import Governance, GovernancePolicy, UpstreamError, govern
        from stock_assets.yahoo.wire import redirected_session

        engine = get_engine(url)
        with engine.connect() as conn:  # a pooled connection ready before the clock starts
            conn.execute(text("SELECT 1"))
        if limiter_kind == "sql":
            limiter = PostgresRateLimiter(engine, name, RateLimit(rate, burst, guard))
        else:
            limiter = PyrateLimiter(url, name, rate, burst)
        governance = Governance(GovernancePolicy(scope=name, max_retries=0),
                                limiter, PostgresBreaker(engine, name, BreakerPolicy(threshold=10**6)), cache=None)
        session = govern(redirected_session(base_url), governance)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
    ready.put(True)
    go.wait()
    if error is None:
        try:
            time.sleep(max(start_at.value - time.time(), 0))
            deadline = start_at.value + seconds
            while time.time() < deadline:
                try:
                    session.get(REQUEST_URL, timeout=10)
                except UpstreamError:
                    pass  # a 429: counted by the emulator
                sent += 1
        except Exception as err:  # reported, not raised: the parent prints the figures either way
            error = f"{type(err).__name__}: {err}"
    results.put({"sent": sent, "error": error})


class PyrateLimiter:
    """pyrate-limiter's PostgresBucket behind the project's limiter interface (acquire/hold)."""

    def __init__(self, url: str, name: str, rate: float, burst: int) -> None:
        from psycopg_pool import ConnectionPool
        from pyrate_limiter import Limiter, PostgresBucket, Rate

        from stock_assets.database.urls import libpq_url

        self.name = name
        self.pool = ConnectionPool(libpq_url(url), min_size=1, max_size=2, open=True)
        self.limiter = Limiter(PostgresBucket(self.pool, name, [Rate(burst, int(round(1000 * burst / rate)))]))

    def acquire(self) -> float:
        began = time.perf_counter()
        self.limiter.try_acquire(self.name, blocking=True)
        return time.perf_counter() - began

    def hold(self, seconds: float) -> None:
        """pyrate-limiter has no shared "hold everyone" operation; nothing to do."""


def _forget(url: str, name: str, limiter: str) -> None:
    """Remove the benchmark's bucket and breaker rows (and pyrate's table)."""
    import psycopg
    from psycopg import sql

    from stock_assets.database.urls import libpq_url

    assert re.fullmatch(r"bench_[0-9a-f]+", name)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("DELETE FROM quotes.rate_buckets WHERE name = %s", (name,))
        conn.execute("DELETE FROM quotes.breakers WHERE name = %s", (name,))
        if limiter == "pyrate":
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"ratelimit___{name}")))
