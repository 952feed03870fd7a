"""Database URLs: one spelling per driver, and never a password in a log line."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url

_POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}


def with_driver(url: str, driver: str) -> str:
    """Return `url` spelled for a SQLAlchemy driver (`psycopg` for our code, `psycopg2` for Dagster).

    Dagster's storage must get `postgresql+psycopg2://`: SQLAlchemy 2.1 maps a bare `postgresql://`
    to psycopg 3, on which dagster-postgres' NOTIFY statements fail.
    """
    parsed = _parse(url)
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """`url` as libpq (and psycopg.connect) accept it: plain postgresql://, no SQLAlchemy driver."""
    return _parse(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    return _parse(url).set(database=database).render_as_string(hide_password=False)


def redact(url: str) -> str:
    """The URL with its password masked, for logs, metadata and the UI."""
    try:
        return _parse(url).render_as_string(hide_password=True)
    except ValueError:
        return "<unparseable database URL>"


def _parse(url: str) -> URL:
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername not in _POSTGRES_SCHEMES:
        raise ValueError(
            f"Unsupported database URL scheme {parsed.drivername!r}: expected postgresql://, "
            "postgresql+psycopg:// or postgresql+psycopg2://"
        )
    return parsed
