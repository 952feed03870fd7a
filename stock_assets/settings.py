"""Environment selection in one place.

Every knob the project reads from the environment is named here, so that moving from a laptop
(embedded PostgreSQL, replayed quotes) to a real deployment (a configured PostgreSQL, live Yahoo)
is a matter of environment variables, never a code change.

| variable                      | meaning                                                    | default                      |
|-------------------------------|------------------------------------------------------------|------------------------------|
| STOCK_ASSETS_DATABASE_URL     | PostgreSQL for the pipeline tables                         | the embedded server          |
| DAGSTER_PG_URL                | PostgreSQL for Dagster's instance storage (dagster.yaml)   | derived from the above       |
| STOCK_ASSETS_QUOTE_SOURCE     | `replay` (bundled recorded data) or `yahoo` (live)         | `replay`                     |
| STOCK_ASSETS_TICKERS          | comma-separated symbols to fetch                           | the bundled sample's tickers |
| STOCK_ASSETS_STATE_DIR        | local state: embedded database, landing zone, caches      | `<project>/.state`           |
| STOCK_ASSETS_LANDING_URL      | the raw landing zone: a folder, `file:///path`, or        | `<state dir>/landing`        |
|                               | `s3://bucket/prefix` (S3 through dagster-aws' S3Resource;  |                              |
|                               | region, credentials, endpoint from the standard AWS chain) |                              |
| STOCK_ASSETS_POOL_LIMITS      | Dagster concurrency pool limits applied at start-up,       | `yahoo=1,postgres=4`         |
|                               | `name=limit,...` (merged over the defaults)                |                              |
| DAGSTER_EVENT_BATCH_SIZE      | Dagster's own: events per storage write in a range run     | `1000`                       |
| STOCK_ASSETS_FIRST_DAY        | start of the history (ISO date, e.g. 1990-01-01, or        | `2016-01-01`                 |
|                               | 2010-06-29); partitions start on the 1st of its month      |                              |
| STOCK_ASSETS_REPLAY_ARCHIVE   | what the offline `replay` source serves: a CSV archive     | the bundled sample           |
|                               | (.csv or .csv.gz) or a folder of recorded chart responses  |                              |
|                               | (README "Your own universe")                               |                              |
| STOCK_ASSETS_BATCH_ROWS       | rows a backfill holds in memory at a time (its ticker      | `250000`                     |
|                               | batch is this divided by the run's sessions)               |                              |
| STOCK_ASSETS_BATCH_TICKERS    | a fixed number of tickers per batch instead                | from the rows                |
| STOCK_ASSETS_WORKER_PROCESSES | processes a step spreads its batches over, its own         | one per core, at most 4      |
|                               | included (1 = the step's own process only)                 |                              |
| STOCK_ASSETS_SECTOR_HISTORY   | a CSV of GICS sectors of past S&P 500 members (symbol,     | none                         |
|                               | sector,valid_from[,valid_to]), merged into                 |                              |
|                               | sector_classification (README "Survivorship")             |                              |
| STOCK_ASSETS_SP500_MEMBERS    | `point-in-time`: also fetch every S&P 500 member of a      | off                          |
|                               | partition's days, on its member days (README              |                              |
|                               | "Survivorship")                                            |                              |

Alert channels (STOCK_ASSETS_ALERT_WEBHOOK_URL, _SMTP_URL, _EMAIL_TO, _EMAIL_FROM) are read by
`stock_assets.defs.operations.alerting`, which documents them.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

DATABASE_URL_ENV = "STOCK_ASSETS_DATABASE_URL"
DAGSTER_PG_URL_ENV = "DAGSTER_PG_URL"
QUOTE_SOURCE_ENV = "STOCK_ASSETS_QUOTE_SOURCE"
TICKERS_ENV = "STOCK_ASSETS_TICKERS"
STATE_DIR_ENV = "STOCK_ASSETS_STATE_DIR"
LANDING_URL_ENV = "STOCK_ASSETS_LANDING_URL"
POOL_LIMITS_ENV = "STOCK_ASSETS_POOL_LIMITS"
FIRST_DAY_ENV = "STOCK_ASSETS_FIRST_DAY"
REPLAY_ARCHIVE_ENV = "STOCK_ASSETS_REPLAY_ARCHIVE"
# The bundled sample starts in January 2016.
DEFAULT_FIRST_DAY = "2016-01-01"

# Dagster concurrency pools (instance-wide, so fleet-wide when every worker shares one instance):
# `yahoo` keeps the whole fleet to one Yahoo fetch at a time (Yahoo throttles per IP at about one
# request a second); `postgres` is sized to the database's connection budget (deploy/README.md).
YAHOO_POOL = "yahoo"
POSTGRES_POOL = "postgres"
DEFAULT_POOL_LIMITS = {YAHOO_POOL: 1, POSTGRES_POOL: 4}

# Dagster writes a range run's per-partition events in batches of this many when the variable is
# set (it is off by default in open-source Dagster): 1,800 materializations become 2 INSERTs.
EVENT_BATCH_SIZE_ENV = "DAGSTER_EVENT_BATCH_SIZE"
EVENT_BATCH_SIZE = 1000

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SQL_DIR = PROJECT_DIR / "sql"


def state_dir() -> Path:
    """The folder that holds everything this project keeps locally (git-ignored)."""
    configured = os.environ.get(STATE_DIR_ENV)
    if configured:
        path = Path(configured).expanduser().resolve()
    elif (PROJECT_DIR / "pyproject.toml").exists():
        path = PROJECT_DIR / ".state"
    else:  # installed as a plain wheel: keep state beside the working directory
        path = Path.cwd() / ".state"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: landing data, logs, cookies
    return path


def configured_database_url() -> str | None:
    """The pipeline database URL from the environment, or None to use the embedded server."""
    return os.environ.get(DATABASE_URL_ENV) or None


def quote_source() -> str:
    return os.environ.get(QUOTE_SOURCE_ENV, "replay").strip().lower() or "replay"


def configured_tickers() -> list[str] | None:
    raw = os.environ.get(TICKERS_ENV)
    if raw is None or not raw.strip():
        return None
    return [part for part in (p.strip() for p in raw.split(",")) if part]


def configured_landing_url() -> str | None:
    """The landing zone's location from the environment, or None for `<state dir>/landing`."""
    return os.environ.get(LANDING_URL_ENV, "").strip() or None


def pool_limits() -> dict[str, int]:
    """Concurrency pool limits: the defaults, overridden by `STOCK_ASSETS_POOL_LIMITS=name=limit,...`."""
    limits = dict(DEFAULT_POOL_LIMITS)
    raw = os.environ.get(POOL_LIMITS_ENV, "")
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value.isdigit():
            raise ValueError(
                f"{POOL_LIMITS_ENV}: expected `name=limit` with a non-negative integer limit, got {item!r}"
            )
        limits[name] = int(value)
    return limits


def first_day() -> str:
    """The first daily partition (ISO date): `STOCK_ASSETS_FIRST_DAY`, default 2016-01-01."""
    raw = os.environ.get(FIRST_DAY_ENV, "").strip()
    if not raw:
        return DEFAULT_FIRST_DAY
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{FIRST_DAY_ENV}: expected an ISO date like 1990-01-01, got {raw[:40]!r}") from None
    if day < dt.date(1970, 1, 1) or day > dt.date.today():
        raise ValueError(f"{FIRST_DAY_ENV}: {day} is outside 1970-01-01..today")
    return day.isoformat()


BATCH_ROWS_ENV = "STOCK_ASSETS_BATCH_ROWS"
WORKER_PROCESSES_ENV = "STOCK_ASSETS_WORKER_PROCESSES"
BATCH_TICKERS_ENV = "STOCK_ASSETS_BATCH_TICKERS"
DEFAULT_BATCH_ROWS = 250_000


def batch_rows() -> int:
    """Rows a streaming backfill holds at a time (landing/streaming.py)."""
    return _positive_int(BATCH_ROWS_ENV) or DEFAULT_BATCH_ROWS


def batch_tickers() -> int | None:
    """A fixed ticker count per backfill batch, or None to size batches by rows."""
    return _positive_int(BATCH_TICKERS_ENV)


def worker_processes() -> int | None:
    """Processes a streamed step works in, its own included (landing/workers.py), or None for the default."""
    return _positive_int(WORKER_PROCESSES_ENV)


def _positive_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name} must be a positive whole number, not {raw!r}")
    return int(raw)


def configured_replay_archive() -> str | None:
    """The replay archive's path from the environment, or None for the bundled sample."""
    raw = os.environ.get(REPLAY_ARCHIVE_ENV, "").strip()
    return str(Path(raw).expanduser()) if raw else None


SECTOR_HISTORY_ENV = "STOCK_ASSETS_SECTOR_HISTORY"
SP500_MEMBERS_ENV = "STOCK_ASSETS_SP500_MEMBERS"
SP500_MEMBERS_POINT_IN_TIME = "point-in-time"


def configured_sector_history() -> Path | None:
    """The user's sector history file (README "Survivorship"), or None for the bundled data only."""
    raw = os.environ.get(SECTOR_HISTORY_ENV, "").strip()
    return Path(raw).expanduser() if raw else None


def sp500_point_in_time() -> bool:
    """Whether the pipeline fetches every S&P 500 member of each partition's days (on its member days)."""
    raw = os.environ.get(SP500_MEMBERS_ENV, "").strip().lower()
    if raw in ("", "off", "none"):
        return False
    if raw == SP500_MEMBERS_POINT_IN_TIME:
        return True
    raise ValueError(f"{SP500_MEMBERS_ENV}: expected `{SP500_MEMBERS_POINT_IN_TIME}` or nothing, got {raw[:40]!r}")
