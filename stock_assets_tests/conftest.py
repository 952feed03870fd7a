"""Shared fixtures: a real embedded PostgreSQL per test session, isolated state, fresh tables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from psycopg import sql

from stock_assets import settings
from stock_assets.database.embedded import EmbeddedServer
from stock_assets.database.resource import PostgresResource
from stock_assets.yahoo.yfinance_caches import use_cache_dir

# The UI tests' session fixtures (a running `stock-assets dev`, its history) come as a plugin.
pytest_plugins = ["stock_assets_tests.support.ui_server"]

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private state folder so tests never touch the developer's .state."""
    path = tmp_path_factory.mktemp("state")
    os.environ[settings.STATE_DIR_ENV] = str(path)
    for name in (settings.DATABASE_URL_ENV, settings.QUOTE_SOURCE_ENV, settings.TICKERS_ENV):
        os.environ.pop(name, None)
    use_cache_dir(str(path / "yfinance"))
    return path


@pytest.fixture(scope="session")
def embedded_server(state_dir: Path):
    server = EmbeddedServer(state_dir / "db")
    server.ensure_running()
    yield server
    server.stop(mode="fast")


@pytest.fixture(scope="session")
def database_url(embedded_server: EmbeddedServer) -> str:
    return embedded_server.url()


@pytest.fixture
def database(database_url: str) -> PostgresResource:
    """The pipeline database with every market table emptied and no monthly partitions."""
    resource = PostgresResource(url=database_url)
    with resource.psycopg_connection() as conn:
        children = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'market.prices'::regclass"
        ).fetchall()
        for (name,) in children:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier("market", name)))
        conn.execute(
            "TRUNCATE market.ticker_universe, market.price_rejections, market.sector_daily_performance,"
            " market.sector_monthly_summary, market.index_membership, market.sector_classification,"
            " market.gics_sector_changes, market.confirmed_moves"
        )
    return resource
