"""`stock-assets bench load` runs end to end on a small load and reports every figure."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from stock_assets import settings


def test_bench_load_prints_one_json_object(database_url, state_dir):
    env = {**os.environ, settings.DATABASE_URL_ENV: database_url}
    out = subprocess.run(
        [sys.executable, "-m", "stock_assets.tooling.cli", "bench", "load", "--rows", "6000", "--tickers", "100",
         "--baseline-rows", "500", "--rounds", "2", "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["rows"] == 6000
    for key in ("project", "copy_limit", "pandas_to_sql", "executemany", "psycopg_write_row"):
        assert figures["rows_per_s"][key] > 0
    assert figures["project_vs_copy"] == round(figures["project"] / figures["copy_limit"], 3)
    assert figures["peak_rss_mb"] > 0
    # The headline pair ran in interleaved rounds and is reported as the rounds' medians.
    assert figures["rounds"] == 2
    assert all(len(seconds) == 2 for seconds in figures["rounds_s"].values())
    copy_s = figures["rounds_s"]["copy_limit"]
    assert 6000 / max(copy_s) * 0.99 <= figures["copy_limit"] <= 6000 / min(copy_s) * 1.01
    # ADBC's Arrow ingest is compared when installed (the bench extra); it stored every row.
    if importlib.util.find_spec("adbc_driver_postgresql") is not None:
        assert figures["rows_per_s"]["adbc_ingest"] > 0
    else:
        assert "adbc_ingest" not in figures["rows_per_s"]
