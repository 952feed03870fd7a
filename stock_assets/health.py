"""`stock-assets health`: one command that says whether the system is well, for people and machines.

Checks, each with a status (`ok`, `warn`, `fail`, `not_configured`, `skipped`), a one-line summary
and details:

- `database`: the pipeline PostgreSQL answers (latency, version), the schema is applied, and the
  connection budget: server connections in use against `max_connections`, how many belong to
  stock_assets' pools (`application_name`), and the pool each process opens (the
  `PostgresResource` settings).
- `quote_source`: for `replay`, the bundled archive loads and answers a request through yfinance;
  for `yahoo`, one chart request through the governed client (the shared rate limit and circuit
  breaker apply; no retries, no cache, so it proves Yahoo answers now).
- `rate_limiter` and `circuit_breaker`: the shared quote governance state in PostgreSQL
  (`quotes.rate_buckets`, `quotes.breakers`, sql/010_quote_governance.sql): Retry-After holds,
  next free slot, breakers open or half-open with their last cause. `not_configured` when those
  tables are not in this database.
- `daily_partitions`: the last good daily partition of `cleaned_prices` (from the Dagster
  instance's materialization records: the newest NYSE session materialized whose blocking checks
  have not failed; the checks are per partition) and how many NYSE sessions it is behind the
  session that should be in by now (the day's data is due by 20:00 New York, the daily freshness
  deadline), plus `market.prices`' newest trade date. A day whose current blocking check result is
  a failure fails this check, naming the day. With the
  replay source the newest session that can exist is the archive's last day, and being behind is
  a warning, not a failure (a replay never advances on its own).
- `runs`: runs in progress whose process is gone (killed, out of memory: `stock_assets.dead_runs`),
  which fail this check; the pool slots held and by which runs; and the gap sensor's view: the
  days it treats as in flight (a dead run's days would hide gaps). The next `stock-assets demo`
  or `dev`, or the daemon's `dead_run_reaper` sensor, marks dead runs failed and frees their slots.
- `daemon`: Dagster's daemon heartbeats (schedules, sensors, backfills and the run queue need it).

Nothing here starts a server or changes data: an embedded PostgreSQL that is not running is
reported as a failure (start it with `stock-assets db start` or `make dev`). Only Yahoo's probe
leaves a trace, as every request does: its slot in the shared rate limit and its outcome in the
breaker. The exit status is 1
when any check fails, else 0; warnings do not fail. `--json` prints one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from stock_assets import settings
from stock_assets.database.urls import redact, with_driver
from stock_assets.partitions import MARKET_TIMEZONE, is_trading_day, trading_days

if TYPE_CHECKING:
    import dagster as dg

    from stock_assets.defs.quotes.resources import QuoteClient

OK, WARN, FAIL, NOT_CONFIGURED, SKIPPED = "ok", "warn", "fail", "not_configured", "skipped"

# The day's data is due by 20:00 New York (stock_assets.automation.DAILY_FRESHNESS): before that,
# the newest session that must be in is the previous one.
DAILY_DEADLINE = dt.time(20, 0)
DAILY_ASSET = "cleaned_prices"
PROBE_SYMBOL = "AAPL"
CONNECT_TIMEOUT_S = 5
# A daemon heartbeat older than this means the daemon is not running.
DAEMON_STALE_S = 120
REQUIRED_DAEMONS = ("SCHEDULER", "SENSOR", "BACKFILL", "QUEUED_RUN_COORDINATOR")
CONNECTIONS_WARN_SHARE = 0.8
# Failing partitions listed per blocking check in the details (the newest ones).
FAILING_SAMPLE = 20


@dataclass
class CheckResult:
    name: str
    status: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    elapsed_ms: float = 0.0


@dataclass
class HealthReport:
    checks: list[CheckResult]
    checked_at: dt.datetime

    @property
    def healthy(self) -> bool:
        return not any(check.status == FAIL for check in self.checks)

    def check(self, name: str) -> CheckResult:
        return next(check for check in self.checks if check.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "checked_at": self.checked_at.isoformat(),
            "checks": {check.name: asdict(check) for check in self.checks},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def render(self) -> str:
        failing = sum(check.status == FAIL for check in self.checks)
        warnings = sum(check.status == WARN for check in self.checks)
        verdict = "HEALTHY" if self.healthy else "UNHEALTHY"
        lines = [f"stock_assets: {verdict} ({failing} failing, {warnings} warnings) at "
                 f"{self.checked_at:%Y-%m-%d %H:%M:%S %Z}"]
        width = max(len(check.name) for check in self.checks)
        status_width = max(len(check.status) for check in self.checks)
        for check in self.checks:
            lines.append(f"  {check.status:<{status_width}}  {check.name:<{width}}  {check.summary}")
        return "\n".join(lines)


# -- the checks ----------------------------------------------------------------------------------

@contextmanager
def _timed(name: str) -> Iterator[Callable[..., CheckResult]]:
    """`with _timed("x") as done: return done(status, summary, details)` measures the check."""
    began = time.perf_counter()

    def done(status: str, summary: str, details: dict[str, Any] | None = None) -> CheckResult:
        return CheckResult(name, status, summary, details or {}, round((time.perf_counter() - began) * 1000, 1))

    yield done


def health_engine(url: str) -> Engine:
    """A connection-per-use engine with short timeouts, so health never holds or waits on a pool."""
    return create_engine(
        with_driver(url, "psycopg"),
        poolclass=NullPool,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "stock_assets_health",
            "options": "-c statement_timeout=5000",
        },
    )


def check_database(engine: Engine) -> CheckResult:
    from stock_assets.database.resource import PostgresResource

    with _timed("database") as done:
        try:
            began = time.perf_counter()
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
                latency_ms = round((time.perf_counter() - began) * 1000, 1)
                version = conn.execute(text("SHOW server_version")).scalar_one()
                max_connections = int(conn.execute(text("SHOW max_connections")).scalar_one())
                total, ours = conn.execute(text(
                    "SELECT count(*), count(*) FILTER (WHERE application_name = 'stock_assets') "
                    "FROM pg_stat_activity WHERE backend_type = 'client backend'"
                )).one()
                schema_applied = conn.execute(text("SELECT to_regclass('market.prices') IS NOT NULL")).scalar_one()
        except Exception as err:  # noqa: BLE001 - any failure to talk to the database is the finding
            return done(FAIL, f"unreachable: {_first_line(err)}", {"url": redact(engine.url.render_as_string())})
        fields = PostgresResource.model_fields
        pool = {
            "pool_size": fields["pool_size"].default,
            "max_overflow": fields["max_overflow"].default,
            "pool_timeout_s": fields["pool_timeout_s"].default,
            "pool_recycle_s": fields["pool_recycle_s"].default,
        }
        details = {
            "url": redact(engine.url.render_as_string()),
            "latency_ms": latency_ms,
            "server_version": version,
            "connections": int(total),
            "max_connections": max_connections,
            "stock_assets_pool_connections": int(ours),
            "pool_per_process": pool,
            "schema_applied": bool(schema_applied),
        }
        summary = (f"reachable in {latency_ms} ms, PostgreSQL {version}; connections {total}/{max_connections} "
                   f"({ours} in stock_assets pools; each process pools {pool['pool_size']}+{pool['max_overflow']})")
        if total >= CONNECTIONS_WARN_SHARE * max_connections:
            return done(WARN, summary + ": close to max_connections", details)
        if not schema_applied:
            return done(WARN, summary + "; schema not applied yet (the first run applies it)", details)
        return done(OK, summary, details)


def check_quote_source(client: QuoteClient) -> CheckResult:
    with _timed("quote_source") as done:
        if client.source == "replay":
            return _check_replay(client, done)
        return _check_yahoo(client, done)


def _check_replay(client: QuoteClient, done: Callable[..., CheckResult]) -> CheckResult:
    from stock_assets.defs.quotes.archive import PriceArchive

    try:
        archive = PriceArchive.bundled()
        start = archive.last_date - dt.timedelta(days=7)
        bars = client.daily_bars(PROBE_SYMBOL, start, archive.last_date + dt.timedelta(days=1))
    except Exception as err:  # noqa: BLE001
        return done(FAIL, f"replay: the bundled archive does not answer: {_first_line(err)}", {"source": "replay"})
    details = {"source": "replay", "archive_first_day": archive.first_date.isoformat(),
               "archive_last_day": archive.last_date.isoformat(), "archive_tickers": len(archive.symbols),
               "probe_symbol": PROBE_SYMBOL, "probe_bars": len(bars)}
    if bars.empty:
        return done(FAIL, f"replay: {PROBE_SYMBOL} answered no bars for {start}..{archive.last_date}", details)
    return done(OK, f"replay: archive {archive.first_date}..{archive.last_date}, {len(archive.symbols)} tickers; "
                    f"{PROBE_SYMBOL} answered {len(bars)} bars through yfinance", details)


def _check_yahoo(client: QuoteClient, done: Callable[..., CheckResult]) -> CheckResult:
    url = f"https://query2.finance.yahoo.com/v8/finance/chart/{PROBE_SYMBOL}"
    details: dict[str, Any] = {"source": "yahoo", "probe": f"{url}?range=5d&interval=1d",
                               "upstream_url": client.upstream_url}
    began = time.perf_counter()
    try:
        response = client.session.get(url, params={"range": "5d", "interval": "1d"}, timeout=client.timeout_s)
    except Exception as err:  # noqa: BLE001 - breaker open, refused, DNS, timeout: all say "not reachable"
        details["error"] = f"{type(err).__name__}: {_first_line(err)}"
        verdict = getattr(getattr(err, "judgement", None), "verdict", None)
        if getattr(verdict, "value", None) == "throttled":  # the governed transport's 429 verdict
            return done(WARN, f"yahoo: reachable but throttling: {details['error']}", details)
        return done(FAIL, f"yahoo: not reachable: {details['error']}", details)
    details.update(status=response.status_code, latency_ms=round((time.perf_counter() - began) * 1000, 1))
    if response.status_code == 429:
        return done(WARN, "yahoo: reachable but throttling (429); the rate limiter waits it out", details)
    if response.status_code != 200:
        return done(FAIL, f"yahoo: HTTP {response.status_code} for {PROBE_SYMBOL}", details)
    try:
        result = response.json()["chart"]["result"][0]
        details["bars"] = len(result.get("timestamp") or [])
    except (ValueError, KeyError, IndexError, TypeError):
        return done(FAIL, f"yahoo: answered 200 without a chart for {PROBE_SYMBOL}", details)
    return done(OK, f"yahoo: {PROBE_SYMBOL} answered {details['bars']} bars in {details['latency_ms']} ms", details)


def _governance_tables(engine: Engine) -> tuple[bool, bool]:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT to_regclass('quotes.rate_buckets') IS NOT NULL, to_regclass('quotes.breakers') IS NOT NULL"
        )).one()


def check_rate_limiter(engine: Engine) -> CheckResult:
    with _timed("rate_limiter") as done:
        try:
            if not _governance_tables(engine)[0]:
                return done(NOT_CONFIGURED, "no shared rate limit in this database (quotes.rate_buckets, "
                                            "sql/010_quote_governance.sql, is created by the first run)")
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT name, greatest(extract(epoch FROM tat - clock_timestamp()), 0), "
                    "coalesce(greatest(extract(epoch FROM hold_until - clock_timestamp()), 0), 0), updated_at "
                    "FROM quotes.rate_buckets ORDER BY name"
                )).all()
        except Exception as err:  # noqa: BLE001
            return done(FAIL, f"cannot read quotes.rate_buckets: {_first_line(err)}")
        buckets = {name: {"next_slot_in_s": round(float(wait), 3), "hold_remaining_s": round(float(hold), 3),
                          "last_request_at": updated.isoformat()} for name, wait, hold, updated in rows}
        if not buckets:
            return done(OK, "no request has been rate-limited yet", {"buckets": buckets})
        held = {name: b["hold_remaining_s"] for name, b in buckets.items() if b["hold_remaining_s"] > 0}
        if held:
            return done(WARN, "held after a 429 (Retry-After): " + ", ".join(
                f"{name} for another {seconds:.0f} s" for name, seconds in held.items()), {"buckets": buckets})
        return done(OK, ", ".join(f"{name}: next slot in {b['next_slot_in_s']:.1f} s" for name, b in buckets.items()),
                    {"buckets": buckets})


def check_circuit_breaker(engine: Engine, scope: str) -> CheckResult:
    """Breakers of the quote client; the one of the configured source's scope decides the status."""
    with _timed("circuit_breaker") as done:
        try:
            if not _governance_tables(engine)[1]:
                return done(NOT_CONFIGURED, "no shared circuit breaker in this database (quotes.breakers, "
                                            "sql/010_quote_governance.sql, is created by the first run)")
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT name, state, failures, "
                    "greatest(extract(epoch FROM open_until - clock_timestamp()), 0), last_cause, updated_at "
                    "FROM quotes.breakers ORDER BY name"
                )).all()
        except Exception as err:  # noqa: BLE001
            return done(FAIL, f"cannot read quotes.breakers: {_first_line(err)}")
        breakers = {name: {"state": state, "consecutive_failures": failures,
                           "open_for_s": round(float(left or 0), 1), "last_cause": cause,
                           "updated_at": updated.isoformat()}
                    for name, state, failures, left, cause, updated in rows}
        details = {"scope": scope, "breakers": breakers}
        mine = breakers.get(scope)
        if mine and mine["state"] == "open" and mine["open_for_s"] > 0:
            return done(FAIL, f"{scope}: OPEN for another {mine['open_for_s']:.0f} s, no request goes upstream; "
                              f"last failure: {mine['last_cause']}", details)
        if mine and mine["state"] != "closed":
            return done(WARN, f"{scope}: {mine['state']} (a probe decides whether the upstream recovered); "
                              f"last failure: {mine['last_cause']}", details)
        others = [name for name, b in breakers.items() if name != scope and b["state"] != "closed"]
        if others:
            return done(WARN, f"{scope}: closed; not closed elsewhere: {', '.join(others)}", details)
        failures = mine["consecutive_failures"] if mine else 0
        return done(OK, f"{scope}: closed ({failures} consecutive failures)", details)


def expected_session(now: dt.datetime) -> dt.date:
    """The newest NYSE session whose data should be in at `now` (due by 20:00 New York)."""
    local = now.astimezone(ZoneInfo(MARKET_TIMEZONE))
    day = local.date() if local.time() >= DAILY_DEADLINE else local.date() - dt.timedelta(days=1)
    while not is_trading_day(day):
        day -= dt.timedelta(days=1)
    return day


def sessions_behind(last_good: dt.date, expected: dt.date) -> int:
    """NYSE sessions after `last_good` up to and including `expected`."""
    return len(trading_days(last_good + dt.timedelta(days=1), expected + dt.timedelta(days=1)))


def failing_blocking_partitions(
    instance: dg.DagsterInstance, check_keys: list[dg.AssetCheckKey]
) -> dict[str, list[str]]:
    """Per blocking check, the partitions (oldest first) whose current result is a failure.

    The checks of `cleaned_prices` are partitioned: each day has its own latest result, and it is
    current while no newer materialization of that day replaced what it checked (a re-run that
    fixes the day clears it). Results without a partition (older, run-level checks) are ignored.
    """
    failing: dict[str, list[str]] = {}
    for info in instance.event_log_storage.get_asset_check_partition_info(check_keys):
        if info.partition_key and info.is_current and info.latest_execution_status.value == "FAILED":
            failing.setdefault(info.check_key.name, []).append(info.partition_key)
    return {name: sorted(days) for name, days in failing.items()}


def _days(days: list[str], limit: int = 5) -> str:
    """`2020-03-02, 2020-03-03 and 4 more`, newest days named."""
    shown = days[-limit:]
    return ", ".join(shown) + (f" and {len(days) - limit} more" if len(days) > limit else "")


def check_daily_partitions(
    instance: dg.DagsterInstance | None, engine: Engine | None, now: dt.datetime, source: str,
    max_stale_sessions: int = 1, instance_error: str | None = None,
) -> CheckResult:
    import dagster as dg
    from dagster._core.event_api import PartitionKeyFilter

    from stock_assets.defs.prices.assets import CHECKS

    with _timed("daily_partitions") as done:
        expected = expected_session(now)
        details: dict[str, Any] = {"asset": DAILY_ASSET, "due_session": expected.isoformat()}
        if source == "replay":
            from stock_assets.defs.quotes.archive import PriceArchive

            expected = min(expected, PriceArchive.bundled().last_date)
            details.update(due_session=expected.isoformat(), due_because="the replay archive's last day")
        if engine is not None:
            try:
                with engine.connect() as conn:
                    newest = conn.execute(text("SELECT max(trade_date) FROM market.prices")).scalar_one()
                details["newest_trade_date_in_market_prices"] = newest.isoformat() if newest else None
            except Exception as err:  # noqa: BLE001 - market.prices missing: nothing loaded yet
                details["newest_trade_date_in_market_prices"] = None
                details["market_prices_error"] = _first_line(err)
        if instance is None:
            return done(SKIPPED, f"the Dagster instance is not available: {instance_error or 'not configured'}",
                        details)
        key = dg.AssetKey(DAILY_ASSET)
        materialized = instance.get_materialized_partitions(key)
        sessions = sorted(day for day in (dt.date.fromisoformat(k) for k in materialized) if is_trading_day(day))
        blocking = [dg.AssetCheckKey(key, spec.name) for spec in CHECKS if spec.blocking]
        failing = failing_blocking_partitions(instance, blocking)
        if failing:
            details["failing_blocking_partitions"] = {
                name: days[-FAILING_SAMPLE:] for name, days in sorted(failing.items())}
        failed_days = {day for days in failing.values() for day in days}
        if not sessions:
            return done(WARN, f"no NYSE session of {DAILY_ASSET} has been materialized yet", details)
        newest = sessions[-1].isoformat()
        latest_checks = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            blocking, partition_filter=PartitionKeyFilter(key=newest))
        details["blocking_checks"] = {k.name: latest_checks[k].status.value if k in latest_checks else None
                                      for k in blocking}
        details["blocking_checks_partition"] = newest
        good = [day for day in sessions if day.isoformat() not in failed_days]
        if not good:
            return done(FAIL, f"blocking check(s) failed on every materialized NYSE session of {DAILY_ASSET} "
                              f"({_days(sorted(failed_days))})", details)
        last_good = good[-1]
        behind = sessions_behind(last_good, expected)
        details.update(last_good_partition=last_good.isoformat(), sessions_behind=behind,
                       materialized_sessions=len(sessions))
        summary = f"last good {DAILY_ASSET} partition {last_good}, {behind} NYSE sessions behind {expected}"
        if failing:
            checks = ", ".join(f"{name} on {_days(days)}" for name, days in sorted(failing.items()))
            return done(FAIL, f"blocking check(s) failed: {checks}; bad data stopped before the warehouse; "
                              f"{summary}", details)
        if behind > max_stale_sessions:
            return done(WARN if source == "replay" else FAIL, summary + f" (more than {max_stale_sessions} behind)",
                        details)
        if behind > 0:
            return done(WARN, summary, details)
        return done(OK, summary, details)


def check_daemon(instance: dg.DagsterInstance | None, now: dt.datetime, instance_error: str | None = None) -> CheckResult:
    with _timed("daemon") as done:
        if instance is None:
            return done(SKIPPED, f"the Dagster instance is not available: {instance_error or 'not configured'}")
        beats = instance.get_daemon_heartbeats()
        ages = {name: round(now.timestamp() - beat.timestamp, 1) for name, beat in beats.items()}
        stale = sorted(name for name in REQUIRED_DAEMONS if ages.get(name, float("inf")) > DAEMON_STALE_S)
        details = {"heartbeat_age_s": ages, "required": list(REQUIRED_DAEMONS)}
        if stale:
            return done(WARN, f"no recent heartbeat from {', '.join(stale)}: schedules, sensors, backfills and the "
                              "run queue need `dagster-daemon run` (started by `make dev`)", details)
        return done(OK, f"{len(beats)} daemons alive (oldest heartbeat {max(ages.values()):.0f} s ago)", details)


def check_runs(instance: dg.DagsterInstance | None, instance_error: str | None = None) -> CheckResult:
    from stock_assets.dead_runs import find_dead_runs, held_slots
    from stock_assets.defs.prices.gaps import in_flight_days
    from stock_assets.jobs import daily_prices_job

    with _timed("runs") as done:
        if instance is None:
            return done(SKIPPED, f"the Dagster instance is not available: {instance_error or 'not configured'}")
        dead = find_dead_runs(instance)
        slots = held_slots(instance)
        in_flight = sorted(in_flight_days(instance, daily_prices_job.name))
        dead_ids = {run.run_id for run in dead}
        details = {
            "dead_runs": [run.__dict__ | {"pids": list(run.pids)} for run in dead],
            "pools": {held.pool: {"limit": held.limit, "claimed": held.claimed, "pending_steps": held.pending_steps,
                                  "held_by": list(held.run_ids),
                                  "held_by_dead_runs": [r for r in held.run_ids if r in dead_ids]}
                      for held in slots},
            "gap_sensor_in_flight_days": {"count": len(in_flight),
                                          "first": in_flight[0].isoformat() if in_flight else None,
                                          "last": in_flight[-1].isoformat() if in_flight else None},
        }
        busy = ", ".join(f"{held.pool} {held.claimed}/{held.limit}" for held in slots if held.claimed)
        view = (f"gap sensor treats {len(in_flight)} days as in flight ({in_flight[0]}..{in_flight[-1]})"
                if in_flight else "gap sensor: no days in flight")
        if dead:
            frozen = sum(1 for held in slots for r in held.run_ids if r in dead_ids)
            return done(FAIL, f"{len(dead)} dead run(s) still STARTED ({'; '.join(r.describe() for r in dead)}), "
                              f"holding {frozen} pool slot(s); {view}; `stock-assets demo`/`dev` or the "
                              "dead_run_reaper sensor marks them failed", details)
        return done(OK, f"no dead runs; pool slots in use: {busy or 'none'}; {view}", details)


# -- putting it together -------------------------------------------------------------------------

def resolve_database_url() -> tuple[str | None, str | None]:
    """The pipeline database URL without starting anything: (url, None) or (None, why not)."""
    configured = settings.configured_database_url()
    if configured:
        return configured, None
    from stock_assets.database.embedded import EmbeddedServer

    server = EmbeddedServer(settings.state_dir())
    if server.is_running():
        return server.url(), None
    return None, (f"the embedded PostgreSQL ({server.pgdata}) is not running and no {settings.DATABASE_URL_ENV} "
                  "is set; start it with `stock-assets db start` (or `make dev`)")


@contextmanager
def open_instance() -> Iterator[tuple[dg.DagsterInstance | None, str | None]]:
    """The Dagster instance at $DAGSTER_HOME (prepared like `stock-assets dev` when unset)."""
    import dagster as dg

    try:
        if not os.environ.get("DAGSTER_HOME"):
            from stock_assets.environment import prepare_environment

            prepare_environment(apply_pools=False)  # the database is known reachable: starts nothing
        instance = dg.DagsterInstance.get()
    except Exception as err:  # noqa: BLE001
        yield None, f"{type(err).__name__}: {_first_line(err)}"
        return
    with instance:
        yield instance, None


def run_health(
    database_url: str | None = None,
    quote_client: QuoteClient | None = None,
    instance: dg.DagsterInstance | None = None,
    use_instance: bool = True,
    now: dt.datetime | None = None,
    max_stale_sessions: int = 1,
) -> HealthReport:
    """Run every check. Without arguments, everything comes from the environment (`settings`)."""
    from stock_assets.database.resource import PostgresResource
    from stock_assets.defs.quotes.resources import QuoteClient

    now = now or dt.datetime.now(dt.timezone.utc)
    why_no_database = None
    if database_url is None:
        database_url, why_no_database = resolve_database_url()
    checks: list[CheckResult] = []
    engine = health_engine(database_url) if database_url else None
    database_ok = False
    if engine is None:
        checks.append(CheckResult("database", FAIL, f"unreachable: {why_no_database}"))
    else:
        checks.append(check_database(engine))
        database_ok = checks[-1].status != FAIL

    source = quote_client.source if quote_client is not None else settings.quote_source()
    if quote_client is None:
        # Yahoo's probe shares the fleet's rate limit and breaker (when the database answers) and is
        # neither retried nor served from the cache: it must show whether Yahoo answers now.
        quote_client = QuoteClient(
            source=source, timeout_s=CONNECT_TIMEOUT_S, max_retries=0, cache_enabled=False,
            database=PostgresResource(url=database_url) if source == "yahoo" and database_ok else None,
        )
    checks.append(check_quote_source(quote_client))

    if database_ok:
        checks.append(check_rate_limiter(engine))
        scope = getattr(quote_client, "governance_scope", None) or quote_client.scope or quote_client.source
        checks.append(check_circuit_breaker(engine, scope))
    else:
        checks.append(CheckResult("rate_limiter", SKIPPED, "the database is not reachable"))
        checks.append(CheckResult("circuit_breaker", SKIPPED, "the database is not reachable"))

    if instance is not None or not use_instance or not database_ok:
        why = None if instance is not None else (
            "not requested" if not use_instance else "the database is not reachable")
        checks.append(check_daily_partitions(instance, engine if database_ok else None, now, source,
                                             max_stale_sessions, instance_error=why))
        checks.append(check_runs(instance, instance_error=why))
        checks.append(check_daemon(instance, now, instance_error=why))
    else:
        with open_instance() as (opened, error):
            checks.append(check_daily_partitions(opened, engine, now, source, max_stale_sessions, error))
            checks.append(check_runs(opened, error))
            checks.append(check_daemon(opened, now, error))
    if engine is not None:
        engine.dispose()
    return HealthReport(checks, now)


def _first_line(err: BaseException) -> str:
    message = str(err).strip().splitlines()
    return message[0][:300] if message else type(err).__name__
