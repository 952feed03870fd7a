"""Apply the SQL files in `sql/` idempotently.

Every file is written to be re-runnable (IF NOT EXISTS, CREATE OR REPLACE). Files are applied in
name order inside one transaction under an advisory lock, so concurrent processes starting at once
do not race; a file whose checksum is already recorded is skipped.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from sqlalchemy import Engine, text

from stock_assets.settings import SQL_DIR

# pg_advisory_xact_lock key for schema changes: any constant unique to this project.
SCHEMA_LOCK_KEY = 0x5354_4B41  # "STKA"

_applied: set[str] = set()
_lock = threading.Lock()


def schema_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    return sorted(sql_dir.glob("[0-9][0-9][0-9]_*.sql"))


def ensure_schema(engine: Engine, sql_dir: Path = SQL_DIR) -> list[str]:
    """Apply changed schema files; returns the names applied (empty when up to date)."""
    cache_key = f"{engine.url!r}:{sql_dir}"
    with _lock:
        if cache_key in _applied:
            return []
        applied = _apply(engine, schema_files(sql_dir))
        _applied.add(cache_key)
        return applied


def _apply(engine: Engine, files: list[Path]) -> list[str]:
    applied: list[str] = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS market")
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS market.schema_files ("
            " name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        known = dict(conn.execute(text("SELECT name, checksum FROM market.schema_files")).all())
        for path in files:
            body = path.read_text()
            checksum = hashlib.sha256(body.encode()).hexdigest()
            if known.get(path.name) == checksum:
                continue
            # Straight to psycopg without parameters, so `%` in plpgsql format() is not a placeholder.
            conn.connection.driver_connection.execute(body)
            conn.execute(
                text(
                    "INSERT INTO market.schema_files (name, checksum) VALUES (:name, :checksum)"
                    " ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()"
                ),
                {"name": path.name, "checksum": checksum},
            )
            applied.append(path.name)
    return applied


def load_query(name: str, sql_dir: Path = SQL_DIR) -> str:
    """The text of a named query in `sql/queries/`, run with bound parameters only."""
    return (sql_dir / "queries" / f"{name}.sql").read_text()
