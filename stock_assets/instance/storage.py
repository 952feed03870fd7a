"""Dagster's event log in PostgreSQL, with a run's planned partitions written in one statement.

A run over a range of daily partitions (a single-run backfill) starts with one
ASSET_MATERIALIZATION_PLANNED event per partition and asset: 3,500 events for the bundled
history. Dagster hands them to the storage as one batch, but `PostgresEventLogStorage` writes a
batch of planned events one event at a time (an INSERT, a NOTIFY and an upsert of `asset_keys`,
in two transactions, each), which was 40 % of the backfill's wall time.

`BatchingPostgresEventLogStorage` writes each run of consecutive planned events of one asset as
one multi-row INSERT, then updates `asset_keys` once from the last of them: exactly what
`PostgresEventLogStorage.store_event_batch` already does for a batch of materializations (the
NOTIFY is only kept upstream "to support version skew" and no reader listens for it). Every other
event takes the upstream path unchanged. Per-partition planned events are kept (not Dagster's
`DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS` single event), so a failed run still marks each
of its partitions as failed, which the gap sensor relies on.

dagster.yaml names this class as the instance's event log storage; `stock_assets.instance.environment` sets
DAGSTER_EVENT_BATCH_SIZE (`settings.EVENT_BATCH_SIZE`), which makes Dagster hand over the
materializations of a range run in batches too.

A run's planned checks are one ASSET_CHECK_EVALUATION_PLANNED event per check, naming every
partition of the run; Dagster stores one row per partition, and serialized the same event again
for each row (29,200 times for 4 checks over a 20-year range, 11 s). Here the event is serialized
once and the rows are inserted together, so a planned check costs an insert per partition and
nothing more: the same rows as upstream.

`ValidatingPostgresRunStorage` (dagster.yaml's run storage) refuses a run whose partition range
tags cannot be right (reversed, not dates, outside the partitions) when it is stored, before
Dagster plans it: the launchpad shows the one-line reason at once.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEventType, EventLogEntry
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._core.storage.event_log.schema import AssetCheckExecutionsTable
from dagster._serdes import ConfigurableClassData, serialize_value
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

_PLANNED = DagsterEventType.ASSET_MATERIALIZATION_PLANNED


class BatchingPostgresEventLogStorage(PostgresEventLogStorage):
    """`PostgresEventLogStorage` that stores a batch of planned materializations in one INSERT."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchingPostgresEventLogStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        for (planned, _), group in itertools.groupby(events, key=_planned_asset):
            if planned:
                self._store_planned_batch(list(group))
            else:
                super().store_event_batch(list(group))

    def _store_planned_batch(self, events: list[EventLogEntry]) -> None:
        with self._connect() as conn:
            result = conn.execute(
                self.prepare_insert_event_batch(events).returning(SqlEventLogStorageTable.c.id)
            )
            last_id = max(int(row[0]) for row in result.fetchall())
        with self.index_transaction() as conn:
            self._store_asset_event(conn, events[-1], last_id)


    def _store_asset_check_evaluation_planned(self, event: EventLogEntry, event_id: int | None) -> None:
        planned = event.dagster_event.event_specific_data
        partitions = planned.partitions_subset.get_partition_keys() if planned.partitions_subset else [None]
        row = {
            "asset_key": planned.asset_key.to_string(),
            "check_name": planned.check_name,
            "run_id": event.run_id,
            "execution_status": AssetCheckExecutionRecordStatus.PLANNED.value,
            "evaluation_event": serialize_value(event),
            "evaluation_event_timestamp": self._event_insert_timestamp(event),
            "evaluation_event_storage_id": event_id,
        }
        with self.index_connection() as conn:
            conn.execute(AssetCheckExecutionsTable.insert(), [{**row, "partition": key} for key in partitions])


def _planned_asset(event: EventLogEntry) -> tuple[bool, str | None]:
    dagster_event = event.dagster_event
    if dagster_event is None or dagster_event.event_type != _PLANNED or dagster_event.asset_key is None:
        return False, None
    return True, dagster_event.asset_key.to_string()


class RangeTagError(ValueError):
    """A run's partition range tags cannot name partitions of this project."""


def check_range_tags(tags: Mapping[str, str]) -> None:
    """Refuse a run whose partition range tags are not a forward range of existing partitions.

    Every partition key of this project is a date (days, and months by their first day). Checked
    when the run is stored, before Dagster plans one event per partition: a range ending
    2999-12-31 would otherwise plan ~360,000 partitions for minutes, a reversed range would plan
    nothing and fail inside the assets.
    """
    from stock_assets.defs.partitions import FIRST_DAY, RANGE_END_TAG, RANGE_START_TAG, trading_day_partitions

    if RANGE_START_TAG not in tags and RANGE_END_TAG not in tags:
        return
    bounds = {}
    for name, tag in (("start", RANGE_START_TAG), ("end", RANGE_END_TAG)):
        value = tags.get(tag)
        if value is None:
            raise RangeTagError(f"partition range tag {tag} is missing (both start and end are needed)")
        try:
            bounds[name] = dt.date.fromisoformat(value)
        except ValueError:
            raise RangeTagError(f"partition range {name} {value[:40]!r} is not a date (YYYY-MM-DD)") from None
    start, end = bounds["start"], bounds["end"]
    if end < start:
        raise RangeTagError(f"partition range ends ({end}) before it starts ({start})")
    if start < dt.date.fromisoformat(FIRST_DAY):
        raise RangeTagError(f"partition range starts ({start}) before the first partition ({FIRST_DAY})")
    last = dt.date.fromisoformat(trading_day_partitions.get_last_partition_key())
    if end > last:
        raise RangeTagError(f"partition range ends ({end}) after the last partition ({last})")


class ValidatingPostgresRunStorage(PostgresRunStorage):
    """`PostgresRunStorage` that refuses runs with impossible partition range tags (`check_range_tags`)."""

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> ValidatingPostgresRunStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )

    def add_run(self, dagster_run):
        check_range_tags(dagster_run.tags)
        return super().add_run(dagster_run)
