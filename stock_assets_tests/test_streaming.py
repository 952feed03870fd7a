"""A backfill streams in ticker batches: the same rows whatever the batch, never more than a batch in memory."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import text

from stock_assets import settings
from stock_assets.defs.prices import batches as clean_batches
from stock_assets.defs.prices.assets import cleaned_prices
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing import streaming, workers
from stock_assets.landing.io_manager import LandedDays, LandedRange, LandingIOManager
from stock_assets.landing.streaming import Spool, month_chunks, tickers_per_batch

TICKERS = ["AAPL", "CVX", "MSFT", "PFE", "XOM"]  # sorted, as TickerSelection lists them
FIRST, LAST = "2020-02-10", "2020-04-17"  # three months, a long weekend, Good Friday
RANGE_TAGS = {"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST}


class Spy:
    """What the pipeline held at once: each fetch's tickers, each cleaning call's symbols, each
    spool read, and what the IO manager stored and loaded."""

    def __init__(self, monkeypatch):
        self.fetched: list[list[str]] = []
        self.cleaned: list[set[str]] = []
        self.gathered: list[pd.DataFrame] = []
        self.outputs: list[type] = []
        self.inputs: list[type] = []
        fetch, clean, gather = QuoteClient.fetch, clean_batches.clean_quotes, Spool._gather
        handle_output, load_input = LandingIOManager.handle_output, LandingIOManager.load_input

        def spy_fetch(client, symbols, *args, **kwargs):
            self.fetched.append(list(symbols))
            return fetch(client, symbols, *args, **kwargs)

        def spy_clean(raw, *args, **kwargs):
            self.cleaned.append(set(raw["symbol"]))
            return clean(raw, *args, **kwargs)

        def spy_gather(spool, keys):
            table = gather(spool, keys)
            if table is not None:
                self.gathered.append(table.select(["symbol", "trade_date"]).to_pandas())
            return table

        def spy_output(manager, context, obj):
            self.outputs.append(type(obj))
            return handle_output(manager, context, obj)

        def spy_input(manager, context):
            loaded = load_input(manager, context)
            self.inputs.append(type(loaded))
            return loaded

        monkeypatch.setattr(QuoteClient, "fetch", spy_fetch)
        monkeypatch.setattr(clean_batches, "clean_quotes", spy_clean)
        monkeypatch.setattr(Spool, "_gather", spy_gather)
        monkeypatch.setattr(LandingIOManager, "handle_output", spy_output)
        monkeypatch.setattr(LandingIOManager, "load_input", spy_input)


def _backfill(database, landing: Path, metadata: dict | None = None) -> dict[str, int]:
    resources = {
        "database": database,
        "quotes": QuoteClient(),
        "tickers": TickerSelection(tickers=TICKERS),
        "landing_io_manager": LandingIOManager(base_dir=str(landing)),
    }
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([raw_quotes, cleaned_prices], selection=["raw_quotes", "cleaned_prices"],
                            resources=resources, instance=instance, tags=RANGE_TAGS)
    assert result.success
    counts = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        name = materialization.asset_key.to_user_string()
        counts[f"{name} {materialization.partition}"] = materialization.metadata["dagster/row_count"].value
    if metadata is not None:  # the run's figures ride on every partition's materialization
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            metadata[materialization.asset_key.to_user_string()] = {
                key: value.value for key, value in materialization.metadata.items()}
    return counts


def _landed(landing: Path, asset: str) -> dict[str, pd.DataFrame]:
    files = sorted((landing / asset).rglob("*.parquet"))
    assert files
    days = {}
    for path in files:
        frame = pd.read_parquet(path).drop(columns=["fetched_at"], errors="ignore")
        days[path.stem] = frame.sort_values("symbol", ignore_index=True)
    return days


def _rejections(database) -> list[tuple]:
    with database.begin() as conn:
        return sorted(tuple(row) for row in conn.execute(text(
            "SELECT trade_date, symbol, reason, detail FROM market.price_rejections")).all())


def test_batches_of_two_store_exactly_what_one_batch_stores(database, tmp_path, monkeypatch):
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "1")  # the spies see this process only
    monkeypatch.setenv(settings.BATCH_TICKERS_ENV, "100")
    whole = Spy(monkeypatch)
    counts_whole = _backfill(database, tmp_path / "whole")
    rejections_whole = _rejections(database)
    assert whole.fetched == [TICKERS]
    assert whole.cleaned == [set(TICKERS)]

    monkeypatch.undo()
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "1")
    monkeypatch.setenv(settings.BATCH_TICKERS_ENV, "2")
    batched = Spy(monkeypatch)
    counts_batched = _backfill(database, tmp_path / "batched")

    # The same files, day by day, for both assets; the same rejections; the same per-day figures.
    for asset in ("raw_quotes", "cleaned_prices"):
        whole_days, batched_days = _landed(tmp_path / "whole", asset), _landed(tmp_path / "batched", asset)
        assert sorted(whole_days) == sorted(batched_days)
        assert len(whole_days) == len(pd.date_range(FIRST, LAST))
        for day, frame in whole_days.items():
            pd.testing.assert_frame_equal(frame, batched_days[day], check_dtype=False)
    assert _rejections(database) == rejections_whole
    assert counts_batched == counts_whole
    assert sum(count for key, count in counts_whole.items() if key.startswith("cleaned_prices")) > 0

    # One request per ticker for the whole range, two tickers at a time.
    assert batched.fetched == [TICKERS[0:2], TICKERS[2:4], TICKERS[4:5]]
    # Cleaning saw one batch at a time, each symbol's whole series in one batch.
    assert [len(symbols) for symbols in batched.cleaned] == [2, 2, 1]
    assert set().union(*batched.cleaned) == set(TICKERS)
    # Everything read back from a spool at once is one batch (<= 2 symbols, any month) or one
    # month (any symbol): never the range of every ticker.
    assert batched.gathered
    for piece in batched.gathered:
        months = set(pd.to_datetime(piece["trade_date"]).dt.strftime("%Y-%m"))
        assert piece["symbol"].nunique() <= 2 or len(months) == 1, (piece["symbol"].unique(), months)
    assert any(piece["symbol"].nunique() == 5 and len(set(pd.to_datetime(piece["trade_date"]).dt.month)) == 1
               for piece in batched.gathered)
    # The IO manager never held a frame: both outputs were written by the assets batch by batch,
    # and cleaned_prices got the raw days as a handle.
    assert batched.outputs == [LandedDays, LandedDays]
    assert batched.inputs == [LandedRange]


def test_batches_in_worker_processes_store_exactly_what_one_process_stores(database, tmp_path, monkeypatch):
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "1")
    monkeypatch.setenv(settings.BATCH_TICKERS_ENV, "100")
    whole_figures: dict = {}
    counts_whole = _backfill(database, tmp_path / "whole", whole_figures)
    rejections_whole = _rejections(database)

    # One ticker a batch, five batches: enough for the steps to hand them to spawned workers, and
    # every batch is left to them (the step's own process would be done before they are up).
    monkeypatch.setattr(workers, "WORK_HERE", False)
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "2")
    monkeypatch.setenv(settings.BATCH_TICKERS_ENV, "1")
    figures: dict = {}
    counts_workers = _backfill(database, tmp_path / "workers", figures)
    assert figures["raw_quotes"]["fetch_processes"] == figures["raw_quotes"]["land_processes"] == 2
    assert figures["cleaned_prices"]["clean_processes"] == 2
    assert figures["raw_quotes"]["ticker_batches"] == figures["cleaned_prices"]["ticker_batches"] == len(TICKERS)
    assert whole_figures["raw_quotes"]["fetch_processes"] == 1

    for asset in ("raw_quotes", "cleaned_prices"):
        whole_days, worker_days = _landed(tmp_path / "whole", asset), _landed(tmp_path / "workers", asset)
        assert sorted(whole_days) == sorted(worker_days)
        for day, frame in whole_days.items():
            pd.testing.assert_frame_equal(frame, worker_days[day], check_dtype=False)
    assert _rejections(database) == rejections_whole
    assert counts_workers == counts_whole
    # The fetch figures the workers reported are added up: one request per ticker, as in one process.
    for key in ("tickers_requested", "tickers_failed", "dividend_events", "split_events"):
        assert figures["raw_quotes"][key] == whole_figures["raw_quotes"][key], key
    assert figures["raw_quotes"]["tickers_requested"] == len(TICKERS)
    answered = figures["raw_quotes"]["history_requests"] + figures["raw_quotes"]["cache_hits"]
    assert answered == len(TICKERS)
    for key in ("rows_in_run", "raw_rows_in_run", "rejected_rows_in_run", "symbols_in_run",
                "listings_described_in_run"):
        assert figures["cleaned_prices"][key] == whole_figures["cleaned_prices"][key], key


def test_a_batch_holds_rows_not_tickers(monkeypatch):
    monkeypatch.delenv(settings.BATCH_TICKERS_ENV, raising=False)
    monkeypatch.setenv(settings.BATCH_ROWS_ENV, "250000")
    assert tickers_per_batch(5040) == 49  # 20 years
    assert tickers_per_batch(2520) == 99  # 10 years
    assert tickers_per_batch(1) == 250000  # a daily run: every ticker at once
    monkeypatch.setenv(settings.BATCH_TICKERS_ENV, "7")
    assert tickers_per_batch(5040) == 7
    monkeypatch.setenv(settings.BATCH_TICKERS_ENV, "zero")
    with pytest.raises(ValueError, match="STOCK_ASSETS_BATCH_TICKERS must be a positive whole number"):
        tickers_per_batch(10)


def test_month_chunks_keep_order():
    keys = ["2020-01-30", "2020-01-31", "2020-02-01", "2020-03-02"]
    assert month_chunks(keys) == [["2020-01-30", "2020-01-31"], ["2020-02-01"], ["2020-03-02"]]


def test_a_row_outside_the_run_is_refused(tmp_path):
    frame = pd.DataFrame({"symbol": ["AAPL"], "trade_date": [pd.Timestamp("2020-05-01").date()]})
    with pytest.raises(ValueError, match="outside the partitions"):
        Spool(tmp_path).put_by_chunk(0, streaming.to_table(frame), [["2020-04-30"]])


def test_a_killed_steps_spool_is_removed_by_the_next_one(state_dir):
    parent = state_dir / "spool"
    parent.mkdir(exist_ok=True)
    stale, fresh = parent / "raw_quotes-killed", parent / "raw_quotes-running"
    for folder in (stale, fresh):
        folder.mkdir()
        (folder / "b000000-c000000.arrow").write_bytes(b"x")
    old = os.stat(stale).st_mtime - streaming.STALE_SPOOL_S - 60
    os.utime(stale, (old, old))
    with streaming.spool("cleaned_prices") as pieces:
        assert pieces.root.parent == parent and pieces.root.is_dir()
        assert not stale.exists() and fresh.exists()
    assert not pieces.root.exists()


def test_day_codes_name_each_row_the_way_each_date_type_is_written():
    import datetime as dt

    import pyarrow as pa

    naive = pa.array([dt.datetime(2024, 1, 2, 9), None, dt.datetime(2024, 1, 2, 16), dt.datetime(2024, 1, 3)],
                     pa.timestamp("ns"))
    for column in (
        pa.array([dt.date(2024, 1, 2), None, dt.date(2024, 1, 2), dt.date(2024, 1, 3)], pa.date32()),
        naive,  # two timestamps of one day are one day
        pa.array(["2024-01-02", None, "2024-01-02T00:00:00", "2024-01-03"]),
    ):
        table = pa.table({"trade_date": column})
        assert list(streaming.day_strings(table)) == ["2024-01-02", None, "2024-01-02", "2024-01-03"]
        codes, names = streaming.day_codes(table)
        assert list(names) == ["2024-01-02", "2024-01-03"] and list(codes) == [0, -1, 0, 1]
    # A zoned timestamp is named by its own wall-clock date, as before.
    zoned = pa.table({"trade_date": pa.array([1704171600 * 10**9], pa.timestamp("ns", tz="America/New_York"))})
    assert list(streaming.day_strings(zoned)) == ["2024-01-02"]


def test_a_row_without_a_date_is_refused_not_dropped(tmp_path):
    frame = pd.DataFrame({"symbol": ["AAA", "BBB"], "trade_date": [pd.Timestamp("2020-04-30").date(), None]})
    with pytest.raises(ValueError, match="None"):
        Spool(tmp_path).put_by_chunk(0, streaming.to_table(frame), [["2020-04-30"]])
    with pytest.raises(ValueError, match="None"):
        streaming.day_payloads(streaming.to_table(frame), ["2020-04-30"], streaming.to_table(frame).schema)


def test_a_breaker_opened_in_a_worker_fails_the_step_naming_it_and_lands_nothing(database, tmp_path, monkeypatch):
    import uuid

    from stock_assets.testing.yahoo_emulator import YahooEmulator

    monkeypatch.setattr(workers, "WORK_HERE", False)  # the breaker opens in a worker
    monkeypatch.setenv(settings.WORKER_PROCESSES_ENV, "2")
    monkeypatch.setenv(settings.BATCH_TICKERS_ENV, "1")
    emulator = YahooEmulator(rate_per_s=1e6, burst=1000)
    emulator.inject("5xx")  # Yahoo down: every chart request
    with emulator.serve() as url:
        quotes = QuoteClient(source="yahoo", upstream_url=url, database=database, scope=f"workers-{uuid.uuid4().hex}",
                             rate_per_s=0.0, max_retries=0, breaker_threshold=2, breaker_cooldown_s=600)
        resources = {"database": database, "quotes": quotes, "tickers": TickerSelection(tickers=TICKERS),
                     "landing_io_manager": LandingIOManager(base_dir=str(tmp_path / "landing"))}
        result = dg.materialize([raw_quotes], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                                tags=RANGE_TAGS, raise_on_error=False)
    assert not result.success
    (failure,) = result.get_step_failure_events()  # once: the breaker is not retried around
    description = failure.step_failure_data.user_failure_data.description
    # The worker's CircuitOpenError reached the step whole: its message and the fetch figures.
    assert "Yahoo requests are suspended" in description and "Circuit breaker" in description
    assert failure.step_failure_data.user_failure_data.metadata["breaker_state"].value == "open"
    assert not list((tmp_path / "landing").rglob("*.parquet"))


def test_raw_rows_go_to_the_same_batch_in_every_process():
    batching = clean_batches.RawBatching.of(["AAPL", "MSFT", " ko", "PEP", "XOM"], size=2)
    assert batching.batches == 3
    assert [batching.batch(name) for name in ("AAPL", "MSFT", "KO", "PEP", "XOM")] == [0, 0, 1, 1, 2]
    # A symbol the raw days hold but the run no longer tracks: a batch by a hash that does not
    # change from process to process (Python's own hash of a string does).
    with workers.worker_pool(2) as pool:
        elsewhere = [pool.submit(batching.batch, name).result() for name in ("GE", "TWTR", "FB")]
    assert elsewhere == [batching.batch(name) for name in ("GE", "TWTR", "FB")]
    assert all(0 <= batch < 3 for batch in elsewhere)
