"""Prepare the process environment for Dagster: database URLs, DAGSTER_HOME, storage folders.

Called by every `stock-assets` command that talks to Dagster, before Dagster reads `dagster.yaml`.
Values already in the environment win, so a deployment sets them and nothing here overrides it.

It also applies the concurrency pool limits (`settings.pool_limits()`) to the instance: Dagster
1.13's dagster.yaml can only hold a default pool limit (`concurrency: pools: default_limit`), a
pool's own limit lives in the instance storage (what `dagster instance concurrency set` writes),
so `stock-assets` writes them at start-up, idempotently. A deployment that starts Dagster without
`stock-assets` runs `python -m stock_assets.instance.environment` once per deploy (deploy/README.md).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stock_assets import settings
from stock_assets.database.embedded import DAGSTER_DATABASE
from stock_assets.database.location import pipeline_database_url, uses_embedded_server
from stock_assets.database.urls import with_database, with_driver

INSTANCE_STORAGES = ("run_storage", "event_log_storage", "schedule_storage")

if TYPE_CHECKING:
    import dagster as dg


def prepare_environment(apply_pools: bool = True) -> dict[str, str]:
    """Start the embedded server if no URL is configured, export what dagster.yaml reads, and
    (unless `apply_pools` is false) set the instance's concurrency pool limits."""
    state = settings.state_dir()
    pipeline_url = pipeline_database_url()
    dagster_url = with_database(pipeline_url, DAGSTER_DATABASE) if uses_embedded_server() else pipeline_url
    values = {
        settings.DATABASE_URL_ENV: pipeline_url,
        settings.DAGSTER_PG_URL_ENV: with_driver(os.environ.get(settings.DAGSTER_PG_URL_ENV) or dagster_url,
                                                 "psycopg2"),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME") or str(_local_dagster_home(state)),
        "DAGSTER_ARTIFACTS_DIR": os.environ.get("DAGSTER_ARTIFACTS_DIR") or str(state / "dagster" / "artifacts"),
        "DAGSTER_COMPUTE_LOGS_DIR": os.environ.get("DAGSTER_COMPUTE_LOGS_DIR") or str(state / "dagster" / "logs"),
        # A range run's per-partition events reach the storage as batches, not one by one.
        settings.EVENT_BATCH_SIZE_ENV: os.environ.get(settings.EVENT_BATCH_SIZE_ENV) or str(settings.EVENT_BATCH_SIZE),
    }
    os.environ.update(values)
    if apply_pools:
        ensure_database_answers(values[settings.DAGSTER_PG_URL_ENV])
        apply_pool_limits()
    return values


class DatabaseUnreachable(RuntimeError):
    """The configured (or embedded) database did not accept a connection."""


def ensure_database_answers(url: str, timeout_s: int = 5) -> None:
    """One connection attempt, so an unreachable database is one line, not minutes of retries."""
    import psycopg

    from stock_assets.database.urls import libpq_url, redact  # noqa: PLC0415

    try:
        psycopg.connect(libpq_url(url), connect_timeout=timeout_s).close()
    except psycopg.Error as err:
        reason = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise DatabaseUnreachable(f"cannot reach the database {redact(url)}: {reason}") from err


def apply_pool_limits(
    instance: dg.DagsterInstance | None = None, limits: dict[str, int] | None = None
) -> dict[str, int]:
    """Make the instance's pool limits equal `limits` (default `settings.pool_limits()`).

    Idempotent: only a pool whose limit differs, or was only initialised from the default, is
    written. Returns the pools written. Pools not named here are left alone. Without `instance`,
    the instance at $DAGSTER_HOME is used.
    """
    import dagster as dg

    limits = settings.pool_limits() if limits is None else limits
    if instance is None:
        with dg.DagsterInstance.get() as current:
            return apply_pool_limits(current, limits)
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    existing = {pool.name: pool for pool in storage.get_pool_limits()}
    written = {}
    for name, limit in limits.items():
        pool = existing.get(name)
        if pool is None or pool.limit != limit or pool.from_default:
            storage.set_concurrency_slots(name, limit)
            written[name] = limit
    return written


def postgres_storage(postgres_url: str) -> dict[str, dict]:
    """dagster.yaml's instance storage sections with `postgres_url` filled in, as instance
    overrides (for in-process instances of benchmarks and tests: the same storage classes)."""
    import yaml

    config = yaml.safe_load((settings.PROJECT_DIR / "dagster.yaml").read_text())
    return {name: {**config[name], "config": {"postgres_url": postgres_url}} for name in INSTANCE_STORAGES}


def _local_dagster_home(state: Path) -> Path:
    """A DAGSTER_HOME in the state folder whose dagster.yaml is the project's own (a symlink), so
    Dagster's local files land in the state folder and the checked-in file stays the one truth."""
    home = state / "dagster"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    target = settings.PROJECT_DIR / "dagster.yaml"
    if not (link.is_symlink() and link.resolve() == target.resolve()):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return home


def main() -> int:
    """`python -m stock_assets.instance.environment`: apply the pool limits to the instance at $DAGSTER_HOME.

    For deployments that start Dagster's own processes (webserver, daemon) without `stock-assets`.
    """
    if not os.environ.get("DAGSTER_HOME"):
        print("DAGSTER_HOME is not set: it must name the instance whose pool limits to set", file=sys.stderr)
        return 2
    limits = settings.pool_limits()
    written = apply_pool_limits(limits=limits)
    for name, limit in sorted(limits.items()):
        print(f"pool {name}: limit {limit} ({'set' if name in written else 'unchanged'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def hold_storage_connections(instance) -> None:
    """Let a long-lived process keep its Dagster storage connections open.

    dagster-postgres opens a new connection per event outside the webserver (NullPool), which
    costs ~2.5 ms each on this machine: a backfill over 1,800 daily partitions records ~7,000
    events. Processes of ours that run many partitions in-process (demo, benchmarks) pool them,
    as the webserver does. Statement timeout 0 = none.
    """
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=5)
