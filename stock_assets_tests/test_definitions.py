"""The definitions load cleanly, and the asset graph matches its reviewed snapshot.

To accept an intended change to the graph: `UPDATE_SNAPSHOTS=1 make test`, then review the diff
of `snapshots/asset_graph.json` like any other code change.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import dagster as dg

from stock_assets import settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "asset_graph.json"


def asset_graph_snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    snapshot = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        snapshot[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "group": node.group_name,
            "partitions": str(node.partitions_def) if node.partitions_def else None,
            "backfill_policy": str(node.backfill_policy) if node.backfill_policy else None,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "code_version": node.code_version,
            "checks": {
                check.name: {
                    "blocking": graph.get(check).blocking,
                    "partitions": str(graph.get(check).partitions_def) if graph.get(check).partitions_def else None,
                }
                for check in sorted(node.check_keys, key=lambda k: k.name)
            },
            "io_manager_key": node.io_manager_key,
            "automation_condition": node.automation_condition.get_label() if node.automation_condition else None,
            "freshness_policy": type(node.freshness_policy).__name__ if node.freshness_policy else None,
            "has_description": bool(node.description),
        }
    return snapshot


def test_asset_graph_matches_snapshot():
    from stock_assets.definitions import defs

    current = asset_graph_snapshot(defs)
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_every_asset_has_a_description_owner_and_kind():
    from stock_assets.definitions import defs

    for name, spec in asset_graph_snapshot(defs).items():
        assert spec["has_description"], name
        assert spec["owners"], name
        assert spec["kinds"], name


def test_lineage_reads_from_source_to_summary():
    from stock_assets.definitions import defs

    deps = {name: spec["deps"] for name, spec in asset_graph_snapshot(defs).items()}
    assert deps["cleaned_prices"] == ["raw_quotes"]
    assert deps["monthly_prices"] == ["cleaned_prices"]
    # Point in time: that day's members and sectors, and the previous month's last close.
    assert deps["sector_daily_performance"] == ["index_membership", "monthly_prices", "sector_classification"]
    assert deps["sector_monthly_summary"] == ["index_membership", "monthly_prices", "sector_classification",
                                              "sector_daily_performance"]
    assert deps["sector_classification"] == ["ticker_universe"]


def test_definitions_import_without_deprecation_warnings_from_our_code():
    import stock_assets.definitions as module

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(module)
    ours = [
        w for w in caught
        if issubclass(w.category, (DeprecationWarning, dg.SupersessionWarning))
        and "stock_assets" in str(w.filename)
    ]
    assert ours == [], [str(w.message) for w in ours]


def test_dagster_definitions_validate(state_dir, database_url):
    env = {**os.environ, settings.DATABASE_URL_ENV: database_url}
    env.pop("DAGSTER_HOME", None)
    result = subprocess.run(
        [sys.executable, "-m", "stock_assets.tooling.cli", "validate"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All definitions loaded successfully" in result.stderr + result.stdout  # `dg check defs`


def test_the_pipeline_imports_nothing_fake(state_dir):
    """Loading the definitions (every asset, sensor and resource) never imports the test and
    benchmark fakes (the Yahoo emulator)."""
    probe = ("import sys, stock_assets.definitions; "
             "print(sorted(m for m in sys.modules if m.startswith(('stock_assets.testing', 'stock_assets_tests'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_bad_ticker_in_the_environment_fails_loading_with_a_clear_error(state_dir):
    env = {**os.environ, settings.TICKERS_ENV: "AAPL,NOT A SYMBOL"}
    result = subprocess.run(
        [sys.executable, "-c", "import stock_assets.definitions"], env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "Malformed ticker symbol 'NOT A SYMBOL'" in result.stderr
