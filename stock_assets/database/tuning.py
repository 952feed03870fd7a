"""The embedded server's tuning profile, sized for the machine it runs on.

Applied when the project starts its own server (never to a configured one: that belongs to its
DBA). The workload is bulk loads of whole months plus analytical reads, on one machine that also
runs Dagster and pandas, so PostgreSQL gets a modest share of memory:

| setting | value | why |
|---|---|---|
| shared_buffers | 1/32 of RAM, 128 MB..1 GB | holds the hot months; kept small on purpose: each month swap flushes and drops relations, which scans the whole pool (3 GB cost 68 ms per month at commit, 256 MB 46 ms) |
| effective_cache_size | 1/2 of RAM | tells the planner what the OS will cache |
| work_mem | 64 MB | sector aggregations sort and hash a month x 500 symbols in memory |
| maintenance_work_mem | 1/16 of RAM, up to 2 GB | the swap loader builds a month's indexes in bulk |
| wal_level | replica (default, kept) | `minimal` would let COPY into a new table skip WAL, but then every month's commit flushes and fsyncs the table: measured 46 ms per month against 3 ms with WAL |
| wal_compression | off | building a month's 21k-row primary key logs every index page in full; compressing those pages with pglz (the only method this server build has besides none) took it from 18 ms to 47 ms: CPU is what two cores lack, disk is not |
| max_wal_size, checkpoint_timeout | 4 GB, 15 min | no checkpoint storms during backfills |
| synchronous_commit | on (default, kept) | a committed load survives a crash: nothing is lost |
| random_page_cost, effective_io_concurrency | 1.1, 200 | local SSD |
| max_parallel_workers_per_gather | cores / 2 | leave a core for Dagster |
| jit | off | short queries: compiling costs more than it saves |
"""

from __future__ import annotations

import os

import psutil

_MB = 1024 * 1024


def tuning_profile(total_memory: int | None = None, cores: int | None = None) -> dict[str, str]:
    memory = total_memory or psutil.virtual_memory().total
    cores = cores or os.cpu_count() or 2
    return {
        "shared_buffers": _mb(_clamp(memory // 32, 128 * _MB, 1024 * _MB)),
        "effective_cache_size": _mb(memory // 2),
        "work_mem": "64MB",
        "maintenance_work_mem": _mb(_clamp(memory // 16, 64 * _MB, 2048 * _MB)),
        "wal_buffers": "64MB",
        "wal_compression": "off",
        "max_wal_size": "4GB",
        "min_wal_size": "512MB",
        "checkpoint_timeout": "15min",
        "checkpoint_completion_target": "0.9",
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "max_worker_processes": str(max(cores * 2, 8)),
        "max_parallel_workers": str(cores),
        "max_parallel_workers_per_gather": str(max(cores // 2, 1)),
        "jit": "off",
    }


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def _mb(value: int) -> str:
    return f"{value // _MB}MB"
