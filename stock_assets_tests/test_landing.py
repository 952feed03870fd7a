"""The landing zone behaves the same on a local folder and on S3 (moto's real server on loopback).

One file per daily partition, empty files for market-closed days, a clear error naming missing
partitions, atomic writes; a month of raw quotes round-trips byte for byte through S3.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import boto3
import dagster as dg
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from stock_assets import settings
from stock_assets.defs.partitions import trading_day_partitions, trading_days
from stock_assets.defs.quotes.assets import raw_quotes
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import (
    ALLOW_PARTIAL_INPUT,
    LAZY_INPUT,
    LandedRange,
    LandingIOManager,
    MissingLandingPartitions,
)
from stock_assets.landing.stores import LocalLandingStore, S3LandingStore, local_root, open_store
from stock_assets_tests.support.aws_emulator import emulated_aws

TICKERS = ["AAPL", "MSFT", "XOM", "JNJ"]
MARCH = ("2020-03-01", "2020-03-31")
BUCKET = "landing-test"
RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    with emulated_aws(str(tmp_path_factory.mktemp("aws"))) as endpoint:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint


@pytest.fixture(scope="module")
def march_quotes(state_dir) -> pd.DataFrame:
    """A month of real (replayed) raw quotes for a few tickers, as raw_quotes produces them."""
    frame, report = QuoteClient().fetch(TICKERS, dt.date(2020, 3, 1), dt.date(2020, 4, 1))
    assert not report.failures
    return frame


@pytest.fixture(params=["local", "s3"])
def landing(request, tmp_path) -> LandingIOManager:
    if request.param == "local":
        return LandingIOManager(base_dir=str(tmp_path / "landing"))
    request.getfixturevalue("aws")
    return LandingIOManager(url=f"s3://{BUCKET}/{tmp_path.name}/landing", s3=S3Resource())


def _output(first: str, last: str, asset: str = "raw_quotes") -> dg.OutputContext:
    return dg.build_output_context(asset_key=asset, asset_partitions_def=trading_day_partitions,
                                   asset_partition_key_range=dg.PartitionKeyRange(first, last))


def _input(first: str, last: str, asset: str = "raw_quotes") -> dg.InputContext:
    return dg.build_input_context(asset_key=asset, asset_partitions_def=trading_day_partitions,
                                  asset_partition_key_range=dg.PartitionKeyRange(first, last))


def _days(first: str, last: str) -> list[str]:
    return trading_day_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["trade_date", "symbol"]).reset_index(drop=True)


def test_a_month_round_trips_with_one_file_per_day_and_empty_closed_days(landing, march_quotes):
    landing.handle_output(_output(*MARCH), march_quotes)

    store = landing.store()
    payloads = store.read_many(["raw_quotes"], _days(*MARCH))
    assert len(payloads) == 31 and all(payload is not None for payload in payloads.values())
    sessions = {day.isoformat() for day in trading_days(dt.date(2020, 3, 1), dt.date(2020, 4, 1))}
    assert len(sessions) == 22
    for key, payload in payloads.items():
        day = pd.read_parquet(io.BytesIO(payload))
        assert len(day) == (len(TICKERS) if key in sessions else 0), key  # weekends: an empty file
        assert list(day.columns) == list(march_quotes.columns)

    back = landing.load_input(_input(*MARCH))
    pd.testing.assert_frame_equal(_sorted(back), _sorted(march_quotes))
    # A sub-range reads only its own days.
    week = landing.load_input(_input("2020-03-09", "2020-03-15"))
    assert sorted({d.isoformat() for d in week["trade_date"]}) == [f"2020-03-{d:02d}" for d in range(9, 14)]


def test_s3_objects_are_byte_identical_to_the_local_files(aws, march_quotes, tmp_path):
    local = LandingIOManager(base_dir=str(tmp_path / "local"))
    remote = LandingIOManager(url=f"s3://{BUCKET}/bytes/landing", s3=S3Resource())
    local.handle_output(_output(*MARCH), march_quotes)
    remote.handle_output(_output(*MARCH), march_quotes)

    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="bytes/landing/")["Contents"]
    keys = sorted(item["Key"] for item in listed)
    assert keys == [f"bytes/landing/raw_quotes/date={day}/part.parquet" for day in _days(*MARCH)]
    by_day = {str(day): rows for day, rows in march_quotes.groupby(march_quotes["trade_date"].astype(str))}
    for day in _days(*MARCH):
        on_s3 = s3.get_object(Bucket=BUCKET, Key=f"bytes/landing/raw_quotes/date={day}/part.parquet")["Body"].read()
        on_disk = local.path_for(dg.AssetKey("raw_quotes"), day).read_bytes()
        assert on_s3 == on_disk, day
        expected = by_day.get(day, march_quotes.iloc[0:0]).reset_index(drop=True)
        pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(on_s3)), expected, obj=day)
        assert on_s3[:4] == b"PAR1"
    pd.testing.assert_frame_equal(remote.load_input(_input(*MARCH)), local.load_input(_input(*MARCH)))


def test_missing_partitions_are_listed_in_the_error(landing, march_quotes):
    first_week = march_quotes[march_quotes["trade_date"] <= dt.date(2020, 3, 6)]
    landing.handle_output(_output("2020-03-01", "2020-03-06"), first_week)
    with pytest.raises(MissingLandingPartitions) as raised:
        landing.load_input(_input("2020-03-01", "2020-03-10"))
    assert str(raised.value) == (
        "raw_quotes has no materialization for 4 of 10 partitions needed here: "
        "2020-03-07, 2020-03-08, 2020-03-09, 2020-03-10. Materialize them first."
    )
    with pytest.raises(MissingLandingPartitions, match=r"for 31 of 31 partitions needed here: 2020-05-01, "
                                                       r".*, 2020-05-10 and 21 more\. Materialize them first\.$"):
        landing.load_input(_input("2020-05-01", "2020-05-31"))


def test_rewriting_a_day_replaces_it_and_rows_outside_the_range_are_refused(landing, march_quotes):
    day = march_quotes[march_quotes["trade_date"] == dt.date(2020, 3, 16)]
    landing.handle_output(_output("2020-03-16", "2020-03-16"), day)
    landing.handle_output(_output("2020-03-16", "2020-03-16"), day[day["symbol"] == "AAPL"])
    assert landing.load_input(_input("2020-03-16", "2020-03-16"))["symbol"].tolist() == ["AAPL"]

    with pytest.raises(ValueError, match=r"Rows dated outside the partitions being written: \['2020-03-17'\]"):
        landing.handle_output(_output("2020-03-16", "2020-03-16"),
                              march_quotes[march_quotes["trade_date"].isin([dt.date(2020, 3, 16),
                                                                           dt.date(2020, 3, 17)])])
    assert landing.load_input(_input("2020-03-16", "2020-03-16"))["symbol"].tolist() == ["AAPL"]


def test_local_writes_are_atomic(tmp_path, march_quotes, monkeypatch):
    landing = LandingIOManager(base_dir=str(tmp_path / "landing"))
    day = march_quotes[march_quotes["trade_date"] == dt.date(2020, 3, 2)]
    landing.handle_output(_output("2020-03-02", "2020-03-02"), day)
    path = landing.path_for(dg.AssetKey("raw_quotes"), "2020-03-02")
    before = path.read_bytes()

    def torn_write(self: Path, data: bytes) -> int:  # the disk fills up half way through
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", torn_write)
    with pytest.raises(OSError, match="No space left"):
        landing.handle_output(_output("2020-03-02", "2020-03-02"), day.iloc[:1])
    monkeypatch.undo()
    assert path.read_bytes() == before  # readers still see the whole previous file
    assert sorted(p.name for p in path.parent.iterdir()) == ["2020-03-02.parquet"]  # no temporary left


def test_materialize_raw_quotes_into_s3(aws, state_dir, tmp_path):
    url = f"s3://{BUCKET}/materialize/landing"
    resources = {
        "quotes": QuoteClient(),
        "tickers": TickerSelection(tickers=TICKERS),
        "landing_io_manager": LandingIOManager(url=url, s3=S3Resource()),
    }
    result = dg.materialize([raw_quotes], resources=resources, instance=dg.DagsterInstance.ephemeral(),
                            tags=dict(zip(RANGE_TAGS, ("2020-07-01", "2020-07-06"))))
    assert result.success
    metadata = result.asset_materializations_for_node("raw_quotes")[0].metadata
    assert metadata["landing_root"].value == url
    assert metadata["landing_files"].value == 6

    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="materialize/")["Contents"]
    assert sorted(item["Key"] for item in listed) == [
        f"materialize/landing/raw_quotes/date={day}/part.parquet" for day in _days("2020-07-01", "2020-07-06")
    ]
    back = resources["landing_io_manager"].load_input(_input("2020-07-01", "2020-07-06"))
    # July 3rd (Independence Day observed) and the weekend are market-closed: empty days.
    assert sorted({d.isoformat() for d in back["trade_date"]}) == ["2020-07-01", "2020-07-02", "2020-07-06"]
    expected, _ = QuoteClient().fetch(TICKERS, dt.date(2020, 7, 1), dt.date(2020, 7, 7))
    columns = [c for c in expected.columns if c != "fetched_at"]
    pd.testing.assert_frame_equal(_sorted(back)[columns], _sorted(expected)[columns])


def test_landing_url_selects_the_store(monkeypatch, tmp_path, state_dir):
    monkeypatch.delenv(settings.LANDING_URL_ENV, raising=False)
    default = LandingIOManager.from_environment()
    assert default.url is None and isinstance(default.store(), LocalLandingStore)
    assert default.store().location == str(settings.state_dir() / "landing")

    monkeypatch.setenv(settings.LANDING_URL_ENV, f"file://{tmp_path}/zone")
    assert LandingIOManager.from_environment().s3 is None
    assert open_store(f"file://{tmp_path}/zone").location == str(tmp_path / "zone")
    assert local_root(str(tmp_path / "plain")) == tmp_path / "plain"

    monkeypatch.setenv(settings.LANDING_URL_ENV, "s3://my-bucket/raw/zone/")
    configured = LandingIOManager.from_environment()
    assert isinstance(configured.s3, S3Resource)
    store = open_store("s3://my-bucket/raw/zone/", s3_client=lambda: object())
    assert isinstance(store, S3LandingStore)
    assert store.uri(["raw_quotes"], "2020-03-02") == "s3://my-bucket/raw/zone/raw_quotes/date=2020-03-02/part.parquet"

    with pytest.raises(ValueError, match="Unsupported landing URL scheme 'gs'"):
        open_store("gs://bucket/prefix")
    with pytest.raises(ValueError, match="no S3 resource was configured"):
        open_store("s3://bucket/prefix")


def _lazy_input(first: str, last: str, partial: bool = False) -> dg.InputContext:
    metadata = {LAZY_INPUT: True, **({ALLOW_PARTIAL_INPUT: True} if partial else {})}
    return dg.build_input_context(asset_key="raw_quotes", asset_partitions_def=trading_day_partitions,
                                  asset_partition_key_range=dg.PartitionKeyRange(first, last),
                                  definition_metadata=metadata)


def test_a_lazy_input_reads_a_month_at_a_time_and_knows_what_is_missing(landing, march_quotes):
    landing.handle_output(_output(*MARCH), march_quotes)
    handle = landing.load_input(_lazy_input("2020-02-25", "2020-03-31", partial=True))
    assert isinstance(handle, LandedRange)
    # February's days were never written (found without reading them); March's all exist.
    assert handle.missing == tuple(f"2020-02-{day}" for day in range(25, 30))
    months = list(handle.months())
    assert [days[0] for days, _ in months] == ["2020-02-25", "2020-03-01"]
    assert months[0][1] is None  # nothing stored in February
    march = months[1][1].to_pandas()
    march["trade_date"] = pd.to_datetime(march["trade_date"]).dt.date
    pd.testing.assert_frame_equal(_sorted(march), _sorted(march_quotes))
    pd.testing.assert_frame_equal(_sorted(handle.frame()), _sorted(march_quotes))
    # Without leave for a partial range, a lazy input fails like an eager one.
    with pytest.raises(MissingLandingPartitions, match="for 5 of 36 partitions"):
        landing.load_input(_lazy_input("2020-02-25", "2020-03-31"))
def test_day_files_with_string_and_large_string_columns_read_as_one_frame():
    """Day files written at different times (pandas' str columns become large_string, object
    columns string) are still read back together, e.g. when a month is loaded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stock_assets.landing.io_manager import from_parquet_payloads

    def payload(symbol_type: pa.DataType, symbol: str) -> bytes:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table({"symbol": pa.array([symbol], symbol_type), "close": [1.5]}), sink)
        return sink.getvalue().to_pybytes()

    frame = from_parquet_payloads([payload(pa.string(), "AAPL"), payload(pa.large_string(), "MSFT")])
    assert frame["symbol"].tolist() == ["AAPL", "MSFT"]
