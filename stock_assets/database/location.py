"""Where the pipeline database is: the one place that resolves its URL.

`STOCK_ASSETS_DATABASE_URL` when it is set; otherwise the embedded server in the state folder,
started on demand (or, for read-only callers such as `health`, only if it already runs).
"""

from __future__ import annotations

from stock_assets import settings
from stock_assets.database.embedded import EmbeddedServer


class DatabaseNotRunning(RuntimeError):
    """No database URL is configured and the embedded server is not running."""


def uses_embedded_server() -> bool:
    return settings.configured_database_url() is None


def pipeline_database_url(start: bool = True) -> str:
    """The pipeline database's URL; with `start=False` the embedded server is never started
    (DatabaseNotRunning says why there is no URL)."""
    configured = settings.configured_database_url()
    if configured:
        return configured
    server = EmbeddedServer(settings.state_dir())
    if start:
        return server.ensure_running()
    if server.is_running():
        return server.url()
    raise DatabaseNotRunning(
        f"the embedded PostgreSQL ({server.pgdata}) is not running and no {settings.DATABASE_URL_ENV} is set; "
        "start it with `stock-assets db start` (or `make dev`)")
