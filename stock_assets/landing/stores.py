"""Where the landing zone keeps its files: a local folder, or S3 (through dagster-aws' S3Resource).

A store maps (asset, daily partition key) to one object and moves whole Parquet payloads (bytes)
in and out; serialising frames is the IO manager's job, so both stores hold byte-identical files.

- `LocalLandingStore`: `<root>/<asset>/<YYYY>/<YYYY-MM-DD>.parquet`, written to a temporary name
  in the same folder and renamed, so a reader never sees half a file.
- `S3LandingStore`: `s3://<bucket>/<prefix>/<asset>/date=<YYYY-MM-DD>/part.parquet` (Hive-style, so
  Athena, DuckDB or Spark can read the zone as a table partitioned by date). A PUT is atomic on S3:
  readers see the old object or the new one, never a partial one.

Which one is used follows the landing URL (`STOCK_ASSETS_LANDING_URL`): `s3://bucket/prefix`
selects S3, a path or `file://` URL a folder. See `open_store`.
"""

from __future__ import annotations

import abc
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

S3_SCHEME = "s3"
# Concurrent S3 requests per read or write of a range (a month is ~30 objects, a year ~365).
S3_MAX_WORKERS = 16


class LandingStore(abc.ABC):
    """Whole-object storage for one Parquet payload per (asset, partition key)."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the zone lives, for metadata and messages (a folder or an s3:// URL)."""

    @abc.abstractmethod
    def uri(self, asset_path: Sequence[str], partition_key: str) -> str:
        """The address of one partition's object."""

    @abc.abstractmethod
    def write(self, asset_path: Sequence[str], partition_key: str, payload: bytes) -> None:
        """Store `payload` as the partition's object, replacing any previous one atomically."""

    @abc.abstractmethod
    def read(self, asset_path: Sequence[str], partition_key: str) -> bytes | None:
        """The partition's payload, or None when it was never written."""

    def write_many(self, asset_path: Sequence[str], payloads: Mapping[str, bytes]) -> None:
        for key, payload in payloads.items():
            self.write(asset_path, key, payload)

    def read_many(self, asset_path: Sequence[str], partition_keys: Sequence[str]) -> dict[str, bytes | None]:
        return {key: self.read(asset_path, key) for key in partition_keys}

    def exists_many(self, asset_path: Sequence[str], partition_keys: Sequence[str]) -> dict[str, bool]:
        """Whether each partition's object exists (without reading it where the store can)."""
        return {key: self.read(asset_path, key) is not None for key in partition_keys}


class LocalLandingStore(LandingStore):
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def path_for(self, asset_path: Sequence[str], partition_key: str) -> Path:
        return self.root.joinpath(*asset_path, partition_key[:4], f"{partition_key}.parquet")

    def uri(self, asset_path: Sequence[str], partition_key: str) -> str:
        return str(self.path_for(asset_path, partition_key))

    def write(self, asset_path: Sequence[str], partition_key: str, payload: bytes) -> None:
        path = self.path_for(asset_path, partition_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(payload)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def read(self, asset_path: Sequence[str], partition_key: str) -> bytes | None:
        try:
            return self.path_for(asset_path, partition_key).read_bytes()
        except FileNotFoundError:
            return None

    def exists_many(self, asset_path: Sequence[str], partition_keys: Sequence[str]) -> dict[str, bool]:
        return {key: self.path_for(asset_path, key).is_file() for key in partition_keys}


class S3LandingStore(LandingStore):
    """Objects in one bucket under a prefix; `client` is a boto3 S3 client (`S3Resource.get_client()`)."""

    def __init__(self, client: Any, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key_for(self, asset_path: Sequence[str], partition_key: str) -> str:
        parts = [self.prefix] if self.prefix else []
        return "/".join([*parts, *asset_path, f"date={partition_key}", "part.parquet"])

    def uri(self, asset_path: Sequence[str], partition_key: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(asset_path, partition_key)}"

    def write(self, asset_path: Sequence[str], partition_key: str, payload: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.key_for(asset_path, partition_key),
            Body=payload,
            ContentType="application/vnd.apache.parquet",
        )

    def read(self, asset_path: Sequence[str], partition_key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key_for(asset_path, partition_key))
        except self.client.exceptions.NoSuchKey:
            return None
        with response["Body"] as body:
            return body.read()

    def exists(self, asset_path: Sequence[str], partition_key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key_for(asset_path, partition_key))
        except self.client.exceptions.ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def exists_many(self, asset_path: Sequence[str], partition_keys: Sequence[str]) -> dict[str, bool]:
        found = _in_threads(lambda key: self.exists(asset_path, key), partition_keys)
        return dict(zip(partition_keys, found))

    def write_many(self, asset_path: Sequence[str], payloads: Mapping[str, bytes]) -> None:
        _in_threads(lambda item: self.write(asset_path, *item), payloads.items())

    def read_many(self, asset_path: Sequence[str], partition_keys: Sequence[str]) -> dict[str, bytes | None]:
        payloads = _in_threads(lambda key: self.read(asset_path, key), partition_keys)
        return dict(zip(partition_keys, payloads))


def _in_threads(function: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """`function` over `items` on a few threads (boto3 clients are thread-safe), in order."""
    items = list(items)
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(S3_MAX_WORKERS, len(items))) as pool:
        return list(pool.map(function, items))


def is_s3_url(url: str | None) -> bool:
    return bool(url) and urlparse(url).scheme == S3_SCHEME


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parsed = urlparse(url)
    if parsed.scheme != S3_SCHEME or not parsed.netloc:
        raise ValueError(f"Not an S3 landing URL (expected s3://bucket/prefix): {url!r}")
    return parsed.netloc, parsed.path.strip("/")


def local_root(url: str) -> Path:
    """A folder path, or a `file:///...` URL, as a Path."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"A file:// landing URL must name a local path: {url!r}")
        return Path(unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise ValueError(
            f"Unsupported landing URL scheme {parsed.scheme!r} in {url!r}: expected a folder, "
            "file:///path or s3://bucket/prefix"
        )
    return Path(url).expanduser()


def open_store(url: str, s3_client: Callable[[], Any] | None = None) -> LandingStore:
    """The store for a landing URL; `s3_client` makes a boto3 S3 client when the URL is s3://."""
    if is_s3_url(url):
        bucket, prefix = parse_s3_url(url)
        if s3_client is None:
            raise ValueError(f"The landing URL {url!r} is on S3 but no S3 resource was configured")
        return S3LandingStore(s3_client(), bucket, prefix)
    return LocalLandingStore(local_root(url))
