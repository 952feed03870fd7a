"""One rate limit for several processes: the `ratelimit` benchmark's machinery, briefly.

Worker processes (spawned, each with its own database connections, as Dagster's step processes
are) send through the governed transport to the emulator served by this process, which enforces
the same rate and burst with 429s. The speed figures belong to `stock-assets bench ratelimit`;
this test asserts the behaviour: not one 429, never a burst above the allowance, never faster
than the rate, and every process gets its turn.
"""

from __future__ import annotations

import argparse

import pytest

from stock_assets.tooling.bench import ratelimit


@pytest.mark.timeout(120)
def test_processes_sharing_the_bucket_stay_within_the_emulators_limit(database):
    database.engine  # noqa: B018 - schema applied
    # A guard as large as the burst allowance: the emulator's whole tolerance is left for scheduling
    # jitter on a busy CI machine.
    args = argparse.Namespace(processes=3, rate=5.0, burst=2, seconds=2.0, guard=0.2)
    figures = ratelimit._measure(database.resolved_url, "sql", args)
    assert figures["worker_errors"] == []
    assert figures["emulator_429s"] == 0
    assert figures["max_burst"] <= 2
    assert figures["measured_rate"] <= 5.0 * 1.03
    assert all(sent > 0 for sent in figures["requests_per_process"])
    assert figures["requests"] >= 5  # it did run: about burst + rate x seconds
