"""A throwaway database for a benchmark, so it never touches the pipeline's own tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from stock_assets.database.urls import libpq_url, with_database


@contextmanager
def scratch_database(server_url: str, name: str, settings: dict[str, str] | None = None) -> Iterator[str]:
    """Create database `name` on the server of `server_url` (dropping a leftover), yield its URL, drop it."""
    admin = libpq_url(with_database(server_url, "postgres"))
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(drop)
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        for setting, value in (settings or {}).items():
            conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(name), sql.Identifier(setting), sql.Literal(value)))
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(drop)
