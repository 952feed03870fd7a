"""The PostgreSQL resource: one pooled engine per process, the schema applied once."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dagster as dg
import psycopg
from pydantic import Field
from sqlalchemy import Connection, Engine

from stock_assets.database.engine import PoolSettings, get_engine
from stock_assets.database.location import pipeline_database_url
from stock_assets.database.schema import ensure_schema


class PostgresResource(dg.ConfigurableResource):
    """PostgreSQL for the pipeline tables.

    Leave `url` empty to use the embedded server in the project's state folder. Every step in a
    process shares one SQLAlchemy engine (pre-ping, recycle), never an engine per call.
    """

    url: str | None = Field(
        default=None,
        description="SQLAlchemy/libpq URL of the pipeline database; empty means the embedded server.",
    )
    pool_size: int = Field(default=5, description="Connections kept open in the pool per process.")
    max_overflow: int = Field(default=5, description="Extra connections allowed above pool_size.")
    pool_recycle_s: int = Field(default=1800, description="Reconnect connections older than this.")
    pool_timeout_s: int = Field(default=30, description="Wait this long for a free pooled connection.")
    pool_pre_ping: bool = Field(default=True, description="Test each connection on checkout (survives restarts).")
    statement_timeout_ms: int = Field(default=600_000, description="Server-side statement timeout.")
    load_workers: int = Field(
        default=3, ge=1,
        description="Parallel COPY streams (pooled connections) when a run loads several months. A month "
                    "alternates between encoding, COPY, the index build and its commit; one stream more than "
                    "a 2-core machine's cores fills those gaps (`stock-assets bench load --workers N`).",
    )

    def portable(self) -> dict[str, object]:
        """This resource's configuration with its URL resolved, for the same database in a
        worker process (stock_assets/landing/workers.py), which builds its own engine."""
        return {**{name: getattr(self, name) for name in type(self).model_fields}, "url": self.resolved_url}

    @property
    def resolved_url(self) -> str:
        return self.url or pipeline_database_url()

    @property
    def engine(self) -> Engine:
        engine = get_engine(
            self.resolved_url,
            PoolSettings(
                pool_size=self.pool_size,
                max_overflow=self.max_overflow,
                pool_recycle_s=self.pool_recycle_s,
                pool_timeout_s=self.pool_timeout_s,
                statement_timeout_ms=self.statement_timeout_ms,
                pre_ping=self.pool_pre_ping,
            ),
        )
        ensure_schema(engine)
        return engine

    def pool_statistics(self) -> dict[str, int]:
        """The process's pool right now, for materialization metadata."""
        pool = self.engine.pool
        return {
            "pool_size": pool.size(),
            "pool_checked_out": pool.checkedout(),
            "pool_idle": pool.checkedin(),
            "pool_overflow": max(pool.overflow(), 0),
        }

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A connection inside a transaction that commits on success."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def psycopg_connection(self) -> Iterator[psycopg.Connection]:
        """The pooled connection's psycopg 3 object, for COPY; commits on success."""
        with self.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            with conn.begin():
                yield raw
