"""Prepare the process environment for Dagster: database URLs, DAGSTER_HOME, storage folders.

Called by every `stock-assets` command that talks to Dagster, before Dagster reads `dagster.yaml`.
Values already in the environment win, so a deployment sets them and nothing here overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

from stock_assets import settings
from stock_assets.database.embedded import DAGSTER_DATABASE, EmbeddedServer
from stock_assets.database.urls import with_database, with_driver


def prepare_environment() -> dict[str, str]:
    """Start the embedded server if no URL is configured and export what dagster.yaml reads."""
    state = settings.state_dir()
    pipeline_url = settings.configured_database_url()
    if pipeline_url is None:
        pipeline_url = EmbeddedServer(state).ensure_running()
        dagster_url = with_database(pipeline_url, DAGSTER_DATABASE)
    else:
        dagster_url = pipeline_url
    values = {
        settings.DATABASE_URL_ENV: pipeline_url,
        settings.DAGSTER_PG_URL_ENV: with_driver(os.environ.get(settings.DAGSTER_PG_URL_ENV) or dagster_url,
                                                 "psycopg2"),
        "DAGSTER_HOME": os.environ.get("DAGSTER_HOME") or str(_local_dagster_home(state)),
        "DAGSTER_ARTIFACTS_DIR": os.environ.get("DAGSTER_ARTIFACTS_DIR") or str(state / "dagster" / "artifacts"),
        "DAGSTER_COMPUTE_LOGS_DIR": os.environ.get("DAGSTER_COMPUTE_LOGS_DIR") or str(state / "dagster" / "logs"),
    }
    os.environ.update(values)
    return values


def _local_dagster_home(state: Path) -> Path:
    """A DAGSTER_HOME in the state folder whose dagster.yaml is the project's own (a symlink), so
    Dagster's local files land in the state folder and the checked-in file stays the one truth."""
    home = state / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    target = settings.PROJECT_DIR / "dagster.yaml"
    if not (link.is_symlink() and link.resolve() == target.resolve()):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return home
