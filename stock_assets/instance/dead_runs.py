"""Runs whose process is gone: find them, mark them failed, free the pool slots they hold.

A run executed in-process (`stock-assets demo`, a benchmark) or by a local run worker
(`dg dev`'s DefaultRunLauncher) that is killed (SIGKILL, OOM, a reboot) never writes its
failure: Dagster keeps it STARTED forever, with its `yahoo` and `postgres` pool slots claimed. Every
later run that needs those pools then waits forever, and the gap sensor counts its range as in
flight. Dagster's run monitoring (dagster.yaml `run_monitoring`) only detects dead workers for run
launchers that can check their workers' health (ECS, Kubernetes), not for local processes, and only
while the daemon runs; so the project checks itself:

- every `stock-assets` command that starts work (demo, dev, validate) reaps dead runs first;
- the `dead_run_reaper` sensor does it every minute while the daemon runs;
- `stock-assets health` reports them (and the slots they hold) without changing anything.

A run is dead when every process that executed it (the pids its engine events name, Dagster records
one for each process that runs steps) is gone from this machine, or the pid now belongs to a process
started after the run (pid reuse). Runs of other machines are left alone: a run is judged only when
it was tagged with this host's name, or when the instance launches its runs as local processes.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import dagster as dg
import psutil

HOST_TAG = "stock_assets/host"
PID_TAG = "stock_assets/pid"
ALIVE_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# A process's start time and the run's start time come from different clocks (psutil vs the
# storage): allow this much skew before calling a pid reused.
PID_REUSE_SLACK_S = 5.0


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    status: str
    pids: tuple[int, ...]
    reason: str

    def describe(self) -> str:
        return f"run {self.run_id[:8]} of {self.job_name} ({self.status}): {self.reason}"


def process_tags() -> dict[str, str]:
    """Tags for a run this process executes in-process, so a later check can tell it is gone."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def find_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Runs in progress whose every process is gone from this machine."""
    host = socket.gethostname()
    local_launcher = _launches_local_processes(instance)
    dead = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=ALIVE_STATUSES)):
        run = record.dagster_run
        tagged_host = run.tags.get(HOST_TAG)
        if tagged_host is not None and tagged_host != host:
            continue
        if tagged_host is None and not local_launcher:
            continue
        pids = _run_pids(instance, run)
        if not pids:
            continue  # not started yet: run monitoring's start timeout handles a run stuck in STARTING
        started = record.start_time or record.create_timestamp.timestamp()
        alive = [pid for pid in pids if _is_alive(pid, started)]
        if not alive:
            dead.append(DeadRun(run.run_id, run.job_name, run.status.value, tuple(sorted(pids)),
                                f"its process{'es' if len(pids) > 1 else ''} "
                                f"{', '.join(map(str, sorted(pids)))} on {host} "
                                f"{'are' if len(pids) > 1 else 'is'} gone"))
    return dead


def reap_dead_runs(instance: dg.DagsterInstance) -> list[DeadRun]:
    """Mark every dead run failed and free its pool slots; returns what was reaped."""
    dead = find_dead_runs(instance)
    for run in dead:
        dagster_run = instance.get_run_by_id(run.run_id)
        if dagster_run is None or dagster_run.status.value != run.status:
            continue  # it moved on while we looked
        instance.report_run_failed(
            dagster_run,
            message=f"Marked failed by stock_assets: {run.reason} (killed, out of memory, or the machine restarted). "
                    "Its pool slots were freed; re-run its partitions.",
        )
        free_slots(instance, run.run_id)
    return dead


def free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)


@dataclass(frozen=True)
class HeldSlots:
    pool: str
    limit: int | None
    claimed: int
    pending_steps: int
    run_ids: tuple[str, ...]


def held_slots(instance: dg.DagsterInstance, pools: list[str] | None = None) -> list[HeldSlots]:
    """Who holds each pool's slots now (all pools with a limit unless `pools` names some)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    names = pools if pools is not None else sorted(pool.name for pool in storage.get_pool_limits())
    held = []
    for name in names:
        info = storage.get_concurrency_info(name)
        held.append(HeldSlots(name, info.limit, len(info.claimed_slots), info.pending_step_count,
                              tuple(sorted(info.active_run_ids))))
    return held


def _run_pids(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[int]:
    pids = set()
    if run.tags.get(PID_TAG, "").isdigit():
        pids.add(int(run.tags[PID_TAG]))
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        data = event.event_specific_data if event else None
        pid = getattr(data, "pid", None)
        if pid:
            pids.add(int(pid))
    return pids


def _is_alive(pid: int, run_started: float) -> bool:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return process.create_time() <= run_started + PID_REUSE_SLACK_S
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's live process: not ours to call dead
        return True


def _launches_local_processes(instance: dg.DagsterInstance) -> bool:
    from dagster._core.launcher.default_run_launcher import DefaultRunLauncher

    try:
        return isinstance(instance.run_launcher, DefaultRunLauncher)
    except Exception:  # noqa: BLE001 - a launcher that cannot be built here is not ours to judge
        return False
