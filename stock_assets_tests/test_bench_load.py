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
         "--baseline-rows", "500", "--json"],
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
    # The Arrow-native encoder is compared when installed (pgpq, optional); its COPY stored every row.
    if importlib.util.find_spec("pgpq") is not None:
        assert figures["rows_per_s"]["pgpq_copy"] > 0
    else:
        assert "pgpq_copy" not in figures["rows_per_s"]
