"""`stock-assets bench backfill` runs end to end on a small synthetic history and reports every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from stock_assets import settings


def test_bench_backfill_prints_one_json_object(database_url, state_dir):
    env = {**os.environ, settings.DATABASE_URL_ENV: database_url}
    out = subprocess.run(
        [sys.executable, "-m", "stock_assets.tooling.cli", "bench", "backfill", "--tickers", "60", "--days", "30", "--json"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    figures = json.loads(lines[0])
    assert figures["synthetic"] is True
    # 60 synthetic tickers x 30 NYSE sessions, every bar loaded, one history request per ticker.
    assert figures["rows"] == 60 * 30
    assert figures["upstream_requests"] == 60
    # The universe, one daily run over the whole range, one run per batch of up to 12 months.
    assert figures["runs"] == 2 + -(-figures["months"] // 12)
    for key in ("wall_s", "rows_per_s", "daily_run_s", "monthly_runs_s", "peak_rss_mb"):
        assert figures[key] > 0, key
    # A memory profile by phase, the daily run's by stage (fetch, land, clean, ...): every peak a
    # real figure within the process's overall peak.
    profile = figures["peak_rss_by_phase_mb"]
    for phase in ("universe", "daily_run / raw_quotes: fetch", "daily_run / raw_quotes: land",
                  "daily_run / cleaned_prices: clean", "daily_run / cleaned_prices: land + checks",
                  "monthly_runs (load + sectors)"):
        assert 0 < profile[phase] <= figures["peak_rss_mb"] + 1, phase
