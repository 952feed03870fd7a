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

dagster.yaml names this class as the instance's event log storage; `stock_assets.environment` sets
DAGSTER_EVENT_BATCH_SIZE (`settings.EVENT_BATCH_SIZE`), which makes Dagster hand over the
materializations of a range run in batches too.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEventType, EventLogEntry
from dagster._core.storage.event_log import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
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


def _planned_asset(event: EventLogEntry) -> tuple[bool, str | None]:
    dagster_event = event.dagster_event
    if dagster_event is None or dagster_event.event_type != _PLANNED or dagster_event.asset_key is None:
        return False, None
    return True, dagster_event.asset_key.to_string()
