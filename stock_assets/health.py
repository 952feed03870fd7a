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
- `ticker_gaps`: per-ticker completeness over the gap sensor's look-back window: every tracked
  ticker (`STOCK_ASSETS_TICKERS`) that has no clean bar on a materialized session it should have
  traded (in the clean landing data, and in `market.prices` for months loaded since), as
  `SYMBOL day`. A hole more than `max_stale_sessions` sessions old fails (the gap sensor should
  have refilled it by then); a newer one warns.
- `warning_checks`: the non-blocking checks of `cleaned_prices` (`rejected_share`,
  `tickers_complete`) whose current result is a failure on a day of the look-back window: they do
  not stop a run, so nothing else shows them. A warning, naming the days.
- `warehouse_lag`: how far `market.prices` and the sector tables lag behind the newest clean day
  (the newest NYSE session of `cleaned_prices` materialized whose blocking checks have not failed),
  in NYSE sessions: a gap filled upstream that never reached the warehouse shows here.
- `runs`: runs in progress whose process is gone (killed, out of memory: `stock_assets.instance.dead_runs`),
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
from stock_assets.defs.partitions import FIRST_DAY as FIRST_DAY_OF_DATA
from stock_assets.defs.partitions import MARKET_TIMEZONE, is_trading_day, trading_days

if TYPE_CHECKING:
    import dagster as dg

    from stock_assets.defs.quotes.resources import QuoteClient

OK, WARN, FAIL, NOT_CONFIGURED, SKIPPED = "ok", "warn", "fail", "not_configured", "skipped"

# The day's data is due by 20:00 New York (stock_assets.defs.automation.DAILY_FRESHNESS): before that,
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

    probe = PROBE_SYMBOL
    try:
        archive = client.archive()  # the bundled one, or STOCK_ASSETS_REPLAY_ARCHIVE's
        probe = PROBE_SYMBOL if PROBE_SYMBOL in archive.symbols else archive.symbols[0]
        start = archive.last_date - dt.timedelta(days=7)
        bars = client.daily_bars(probe, start, archive.last_date + dt.timedelta(days=1))
    except Exception as err:  # noqa: BLE001
        return done(FAIL, f"replay: the archive does not answer: {_first_line(err)}", {"source": "replay"})
    details = {"source": "replay", "archive_first_day": archive.first_date.isoformat(),
               "archive_last_day": archive.last_date.isoformat(), "archive_tickers": len(archive.symbols),
               "probe_symbol": probe, "probe_bars": len(bars)}
    if bars.empty:
        return done(FAIL, f"replay: {probe} answered no bars for {start}..{archive.last_date}", details)
    return done(OK, f"replay: archive {archive.first_date}..{archive.last_date}, {len(archive.symbols)} tickers; "
                    f"{probe} answered {len(bars)} bars through yfinance", details)


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
            from stock_assets.yahoo.archive import PriceArchive

            expected = min(expected, PriceArchive.configured().last_date)
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


def check_warehouse_lag(instance: dg.DagsterInstance | None, engine: Engine | None,
                        instance_error: str | None = None) -> CheckResult:
    """How many NYSE sessions `market.prices` and the sector tables are behind the newest clean day."""
    import dagster as dg

    from stock_assets.defs.prices.assets import CHECKS

    with _timed("warehouse_lag") as done:
        if instance is None or engine is None:
            return done(SKIPPED, "needs the Dagster instance and the database: "
                                 f"{instance_error or 'not available'}")
        key = dg.AssetKey(DAILY_ASSET)
        failed = {day for days in failing_blocking_partitions(
            instance, [dg.AssetCheckKey(key, spec.name) for spec in CHECKS if spec.blocking]).values() for day in days}
        clean = sorted(day for day in (dt.date.fromisoformat(k) for k in instance.get_materialized_partitions(key))
                       if is_trading_day(day) and day.isoformat() not in failed)
        newest_clean = _newest_with_rows(instance, key, clean)
        if newest_clean is None:
            return done(SKIPPED, f"no clean NYSE session of {DAILY_ASSET} with rows yet: nothing the warehouse "
                                 "could lag behind")
        tables = {"market.prices": "SELECT max(trade_date) FROM market.prices",
                  "market.sector_daily_performance": "SELECT max(trade_date) FROM market.sector_daily_performance",
                  "market.sector_monthly_summary": "SELECT max(month) FROM market.sector_monthly_summary"}
        newest: dict[str, dt.date | None] = {}
        with engine.connect() as conn:
            for table, query in tables.items():
                try:
                    newest[table] = conn.execute(text(query)).scalar_one()
                except Exception:  # noqa: BLE001 - table not created yet: nothing loaded
                    conn.rollback()
                    newest[table] = None
        # An empty table is behind by every session since the partitions start.
        since_start = dt.date.fromisoformat(FIRST_DAY_OF_DATA) - dt.timedelta(days=1)
        lag = {table: sessions_behind(newest[table] or since_start, newest_clean)
               for table in ("market.prices", "market.sector_daily_performance")}
        month = newest["market.sector_monthly_summary"]
        monthly_behind = month is None or month < newest_clean.replace(day=1)
        details = {
            "newest_clean_day": newest_clean.isoformat(),
            "newest": {table: day.isoformat() if day else None for table, day in newest.items()},
            "sessions_behind": lag,
            "sector_monthly_summary_month_missing": monthly_behind,
        }
        parts = [f"{table} {count} session(s) behind" for table, count in lag.items() if count]
        if monthly_behind:
            parts.append(f"market.sector_monthly_summary has no {newest_clean:%Y-%m}")
        if parts:
            return done(WARN, f"behind the newest clean day {newest_clean}: " + "; ".join(parts), details)
        return done(OK, f"market.prices and the sector tables are up to date with the newest clean day {newest_clean}",
                    details)


def _newest_with_rows(instance: dg.DagsterInstance, key: dg.AssetKey, sessions: list[dt.date],
                      chunk: int = 20) -> dt.date | None:
    """The newest of `sessions` whose latest materialization stored rows (`dagster/row_count` > 0):
    a session materialized empty (after the end of the data, a day Yahoo had nothing for) is not
    a day the warehouse could hold."""
    import dagster as dg

    for end in range(len(sessions), 0, -chunk):
        batch = [day.isoformat() for day in sessions[max(0, end - chunk):end]]
        latest: dict[str, int] = {}
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=batch), limit=len(batch) * 20).records
        for record in records:  # newest first
            partition = record.partition_key
            if partition in latest:
                continue
            materialization = record.asset_materialization
            count = materialization.metadata.get("dagster/row_count") if materialization else None
            latest[partition] = int(count.value) if count is not None else 0
        with_rows = [day for day in batch if latest.get(day, 0) > 0]
        if with_rows:
            return dt.date.fromisoformat(max(with_rows))
    return None


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


# -- completeness: per-ticker holes and failing warning checks ----------------------------------

# Sessions before the one due now that health (like the gap sensor) looks at.
COMPLETENESS_LOOKBACK_DAYS = 30


def _completeness_window(now: dt.datetime, source: str, lookback_days: int) -> list[dt.date]:
    from stock_assets.defs.prices.gaps import sessions_in_window

    expected = expected_session(now)
    if source == "replay":
        from stock_assets.yahoo.archive import PriceArchive

        expected = min(expected, PriceArchive.configured().last_date)
    return sessions_in_window(expected + dt.timedelta(days=1), lookback_days)


def check_ticker_gaps(
    instance: dg.DagsterInstance | None, engine: Engine | None, store: Any, symbols: list[str], now: dt.datetime,
    source: str, max_stale_sessions: int = 1, lookback_days: int = COMPLETENESS_LOOKBACK_DAYS,
    instance_error: str | None = None, selection: Any = None,
) -> CheckResult:
    """Tickers without a clean bar on a materialized session of the window (see the module doc).
    `selection` (a point-in-time TickerSelection): the window's S&P 500 members on their member
    days instead of `symbols`, members without a stored bar being not served (README "Survivorship")."""
    from stock_assets.defs.prices.gaps import selection_holes, ticker_holes

    with _timed("ticker_gaps") as done:
        if instance is None:
            return done(SKIPPED, f"the Dagster instance is not available: {instance_error or 'not configured'}")
        sessions = _completeness_window(now, source, lookback_days)
        if not sessions:
            return done(OK, "no session in the look-back window")
        try:
            if selection is not None and selection.sp500_point_in_time:
                symbols, holes = selection_holes(instance, engine, store, selection, sessions)
            else:
                holes = ticker_holes(instance, engine, store, symbols, sessions)
        except Exception as err:  # noqa: BLE001 - an unreadable landing zone is the finding
            return done(FAIL, f"cannot look for missing ticker bars: {_first_line(err)}")
        window = f"{sessions[0]}..{sessions[-1]}"
        details: dict[str, Any] = {"window": window, "tickers_expected": len(symbols),
                                   "holes": [str(hole) for hole in holes[:FAILING_SAMPLE * 5]],
                                   "tickers": {}, "where": {}}
        for hole in holes:
            details["tickers"][hole.symbol] = details["tickers"].get(hole.symbol, 0) + 1
            details["where"][hole.where] = details["where"].get(hole.where, 0) + 1
        if not holes:
            return done(OK, f"every one of {len(symbols)} tracked tickers has a bar on every stored session of "
                            f"{window}", details)
        overdue = [hole for hole in holes if sessions_behind(hole.session, sessions[-1]) > max_stale_sessions]
        details["overdue"] = len(overdue)
        named = ", ".join(str(hole) for hole in holes[:8]) + (f" and {len(holes) - 8} more" if len(holes) > 8 else "")
        summary = (f"{len(holes)} missing ticker bar(s) on stored sessions of {window} "
                   f"({len(details['tickers'])} tickers): {named}")
        if overdue:
            return done(FAIL, summary + f"; {len(overdue)} older than {max_stale_sessions} session(s), not refilled "
                                        "by the gap sensor", details)
        return done(WARN, summary + " (the gap sensor refetches those tickers)", details)


def check_warning_checks(
    instance: dg.DagsterInstance | None, now: dt.datetime, source: str,
    lookback_days: int = COMPLETENESS_LOOKBACK_DAYS, instance_error: str | None = None,
) -> CheckResult:
    """Non-blocking checks of cleaned_prices currently failing on a day of the look-back window."""
    import dagster as dg

    from stock_assets.defs.prices.assets import CHECKS

    with _timed("warning_checks") as done:
        if instance is None:
            return done(SKIPPED, f"the Dagster instance is not available: {instance_error or 'not configured'}")
        sessions = _completeness_window(now, source, lookback_days)
        keys = [dg.AssetCheckKey(dg.AssetKey(DAILY_ASSET), spec.name) for spec in CHECKS if not spec.blocking]
        first = sessions[0].isoformat() if sessions else "9999"
        failing = {name: [day for day in days if day >= first]
                   for name, days in failing_blocking_partitions(instance, keys).items()}
        failing = {name: days for name, days in sorted(failing.items()) if days}
        details = {"checks": [key.name for key in keys], "since": first, "failing": failing}
        if not failing:
            return done(OK, f"no warning check of {DAILY_ASSET} failing since {first}", details)
        return done(WARN, "failing (not blocking): " + "; ".join(
            f"{name} on {_days(days)}" for name, days in failing.items()), details)


def completeness_checks(
    instance: dg.DagsterInstance | None, engine: Engine | None, now: dt.datetime, source: str,
    max_stale_sessions: int = 1, instance_error: str | None = None,
) -> list[CheckResult]:
    """`ticker_gaps` and `warning_checks` for the configured tickers and landing zone."""
    from stock_assets.defs.universe.resources import TickerSelection
    from stock_assets.landing.io_manager import LandingIOManager

    try:
        store = LandingIOManager(url=settings.configured_landing_url()).store()  # the runs' landing zone
        selection = TickerSelection(tickers=settings.configured_tickers() or [],
                                    sp500_point_in_time=settings.sp500_point_in_time())
        symbols = selection.symbols()
    except Exception as err:  # noqa: BLE001 - a bad landing URL or ticker list is the finding
        return [CheckResult("ticker_gaps", FAIL, f"cannot read the configuration: {_first_line(err)}"),
                check_warning_checks(instance, now, source, instance_error=instance_error)]
    return [check_ticker_gaps(instance, engine, store, symbols, now, source, max_stale_sessions,
                              instance_error=instance_error, selection=selection),
            check_warning_checks(instance, now, source, instance_error=instance_error)]


def check_runs(instance: dg.DagsterInstance | None, instance_error: str | None = None) -> CheckResult:
    from stock_assets.defs.jobs import daily_prices_job
    from stock_assets.defs.prices.gaps import in_flight_days
    from stock_assets.instance.dead_runs import find_dead_runs, held_slots

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
    from stock_assets.database.location import DatabaseNotRunning, pipeline_database_url

    try:
        return pipeline_database_url(start=False), None
    except DatabaseNotRunning as err:
        return None, str(err)


@contextmanager
def open_instance() -> Iterator[tuple[dg.DagsterInstance | None, str | None]]:
    """The Dagster instance at $DAGSTER_HOME (prepared like `stock-assets dev` when unset)."""
    import dagster as dg

    try:
        if not os.environ.get("DAGSTER_HOME"):
            from stock_assets.instance.environment import prepare_environment

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
        checks.extend(completeness_checks(instance, engine if database_ok else None, now, source,
                                          max_stale_sessions, instance_error=why))
        checks.append(check_warehouse_lag(instance, engine if database_ok else None, instance_error=why))
        checks.append(check_runs(instance, instance_error=why))
        checks.append(check_daemon(instance, now, instance_error=why))
    else:
        with open_instance() as (opened, error):
            checks.append(check_daily_partitions(opened, engine, now, source, max_stale_sessions, error))
            checks.extend(completeness_checks(opened, engine, now, source, max_stale_sessions, error))
            checks.append(check_warehouse_lag(opened, engine, error))
            checks.append(check_runs(opened, error))
            checks.append(check_daemon(opened, now, error))
    if engine is not None:
        engine.dispose()
    return HealthReport(checks, now)


def _first_line(err: BaseException) -> str:
    message = str(err).strip().splitlines()
    return message[0][:300] if message else type(err).__name__
