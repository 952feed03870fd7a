"""An IO manager that stores daily-partitioned frames as one Parquet file per partition.

A run may cover one trading day or a whole range (single-run backfills): outputs are split by
their `trade_date` column into one file per partition key, and inputs read back every partition
of the requested range. A day with no rows (an NYSE holiday) is stored as an empty file, so that
"materialized and empty" and "never materialized" stay distinguishable. Files are written to a
temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from stock_assets import settings

DATE_COLUMN = "trade_date"


class MissingLandingPartitions(RuntimeError):
    """An input range includes partitions that were never materialized."""


class LandingIOManager(dg.ConfigurableIOManager):
    """Daily frames as Parquet files under `base_dir/<asset>/<YYYY>/<YYYY-MM-DD>.parquet`."""

    base_dir: str | None = Field(
        default=None, description="Root of the landing zone; empty means `<state dir>/landing`."
    )

    def _root(self) -> Path:
        return Path(self.base_dir) if self.base_dir else settings.state_dir() / "landing"

    def path_for(self, asset_key: dg.AssetKey, partition_key: str) -> Path:
        return self._root().joinpath(*asset_key.path, partition_key[:4], f"{partition_key}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not context.has_asset_partitions:
            raise dg.DagsterInvariantViolationError("LandingIOManager stores daily-partitioned assets only")
        keys = context.asset_partition_keys
        by_day = {str(day): rows for day, rows in obj.groupby(obj[DATE_COLUMN].astype(str), sort=False)}
        unexpected = sorted(set(by_day) - set(keys))
        if unexpected:
            raise ValueError(f"Rows dated outside the partitions being written: {unexpected[:5]}")
        empty = obj.iloc[0:0]
        for key in keys:
            _write_atomically(self.path_for(context.asset_key, key), by_day.get(key, empty))
        context.add_output_metadata({"landing_files": len(keys), "landing_root": str(self._root())})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        keys = context.asset_partition_keys
        paths = [self.path_for(context.asset_key, key) for key in keys]
        missing = [key for key, path in zip(keys, paths) if not path.exists()]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise MissingLandingPartitions(
                f"{context.asset_key.to_user_string()} has no materialization for {len(missing)} of "
                f"{len(keys)} partitions needed here: {shown}. Materialize them first."
            )
        frames = [pd.read_parquet(path) for path in paths]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if DATE_COLUMN in frame:
            frame[DATE_COLUMN] = pd.to_datetime(frame[DATE_COLUMN]).dt.date
        return frame


def _write_atomically(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    frame.reset_index(drop=True).to_parquet(tmp, index=False)
    os.replace(tmp, path)

