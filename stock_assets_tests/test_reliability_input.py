"""Hostile input and security basics: clear errors, nothing executed, nothing leaked.

Each test names the bad input it injects and what it asserts; docs/fault-matrix.md summarises them.
"""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest
from pydantic import ValidationError
from sqlalchemy import text

from stock_assets import settings
from stock_assets.database.resource import PostgresResource
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.constituents import InvalidSymbolError, resolve_tickers
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import LandingIOManager
from stock_assets.tooling.cli import build_parser, dev_command
from stock_assets.yahoo.replay import replay_session

pytestmark = pytest.mark.reliability

HOSTILE_SYMBOLS = [
    "AAPL'; DROP TABLE prices;--",
    "ＡＡＰＬ",  # full-width look-alikes
    "AΑPL",  # a Greek capital alpha in the middle
    "A" * 10_000,
    "",
    "   ",
    "AAPL\x00",
    "../../etc/passwd",
]


@pytest.mark.parametrize("symbol", HOSTILE_SYMBOLS)
def test_hostile_symbols_in_the_universe_config_are_refused(symbol):
    """Input: a hostile symbol in the tickers configuration. Asserts: a short, clear error."""
    with pytest.raises(ValidationError) as raised:
        TickerSelection(tickers=["AAPL", symbol])
    message = str(raised.value)
    assert "Ticker symbol" in message or "Malformed ticker symbol" in message
    assert len(message) < 1_000  # a 10,000-character input is not echoed back
    with pytest.raises(InvalidSymbolError):
        resolve_tickers([symbol], default=[])


def test_hostile_symbol_in_the_environment_stops_loading_before_anything_runs(state_dir, database):
    """Input: STOCK_ASSETS_TICKERS holding an injection attempt. Asserts: the definitions refuse to
    load, naming the symbol, and the prices table is untouched."""
    env = {**os.environ, settings.TICKERS_ENV: "AAPL,AAPL'; DROP TABLE market.prices;--"}
    out = subprocess.run([sys.executable, "-c", "import stock_assets.definitions"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "Invalid ticker configuration" in out.stderr or "Ticker symbol is too long" in out.stderr
    with database.begin() as conn:
        assert conn.execute(text("SELECT to_regclass('market.prices') IS NOT NULL")).scalar()


@pytest.mark.parametrize("symbol", ["AAPL%27%3B%20DROP%20TABLE%20prices", "..%2F..%2Fsecret", "A" * 300])
def test_the_replay_refuses_hostile_chart_paths(symbol):
    """Input: a hostile symbol in the chart URL. Asserts: Yahoo's 404 body, no data."""
    response = replay_session().get(f"https://query2.finance.yahoo.com/v8/finance/chart/{symbol}",
                                    params={"period1": 1577836800, "period2": 1580515200, "interval": "1d"})
    assert response.status_code == 404
    assert response.json()["chart"]["result"] is None


@pytest.mark.parametrize("partition_key", ["2015-12-31", "not-a-date", "2020-02-30", "2999-01-01"])
def test_partitions_outside_the_range_are_refused(partition_key, database, tmp_path):
    """Input: a partition key outside the daily partitions. Asserts: Dagster refuses before any step."""
    resources = {"database": database, "quotes": QuoteClient(), "tickers": TickerSelection(tickers=["AAPL"]),
                 "landing_io_manager": LandingIOManager(base_dir=str(tmp_path))}
    with pytest.raises(dg.DagsterError) as raised:
        dg.materialize([raw_quotes, cleaned_prices], resources=resources, partition_key=partition_key)
    assert partition_key in str(raised.value) or "partition" in str(raised.value).lower()
    assert not any(tmp_path.iterdir())  # nothing was written


def test_demo_refuses_a_range_outside_the_data(state_dir, database_url):
    """Input: a demo range before the partitions start. Asserts: exit 2 and a one-line reason."""
    env = {**os.environ, settings.DATABASE_URL_ENV: database_url}
    out = subprocess.run([sys.executable, "-m", "stock_assets.tooling.cli", "demo", "--start", "1999-01-01",
                          "--end", "1999-03-31"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip() == "stock-assets demo: --start 1999-01-01 is before the first partition (2016-01-01)"


def test_webserver_binds_to_loopback_unless_told_otherwise():
    """Security: `stock-assets dev` binds 127.0.0.1 by default."""
    args = build_parser().parse_args(["dev"])
    assert args.host == "127.0.0.1"
    command = dev_command(args.host, args.port)
    assert command[command.index("--host") + 1] == "127.0.0.1"


def test_database_passwords_never_reach_dagster_events(database_url, tmp_path):
    """Security: a database URL with a password, and a failing step. Asserts: the password appears in
    no event, log line or metadata value the run recorded."""
    secret = "s3cret-Pa55word"
    url = database_url.replace("postgres@", f"postgres:{secret}@", 1)  # trust auth: accepted as is
    broken = url.replace("/stock_assets?", "/no_such_database?", 1)
    with dg.instance_for_test() as instance:
        for database in (PostgresResource(url=url), PostgresResource(url=broken)):
            dg.materialize(
                [raw_quotes, cleaned_prices], instance=instance, partition_key="2020-03-02", raise_on_error=False,
                resources={"database": database, "quotes": QuoteClient(),
                           "tickers": TickerSelection(tickers=["AAPL"]),
                           "landing_io_manager": LandingIOManager(base_dir=str(tmp_path))},
            )
        records = instance.get_records_for_run
        recorded = []
        for run in instance.get_runs():
            recorded += [str(record.event_log_entry) for record in records(run.run_id).records]
    assert len(recorded) > 20
    assert not [line for line in recorded if secret in line]
