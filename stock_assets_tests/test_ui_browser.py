"""The Dagster UI in a real browser (Debian's chromium driven by Playwright): the asset graph, a
partition launched from the UI, the checks (and one check per day) and the sector asset's page.

Screenshots go to `test-artifacts/ui/` (git-ignored); `UPDATE_DOCS_SCREENSHOTS=1` also copies them
to `docs/` for the README (`make docs-screenshots`). Without chromium or Playwright the test skips
on a workstation, and fails in CI (`CI=true`), where `.ci/run` installs chromium.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from stock_assets import settings
from stock_assets_tests.support.ui_server import BAD_DAY, MONTH, UI_TICKERS

pytestmark = pytest.mark.integration

ARTIFACTS = settings.PROJECT_DIR / "test-artifacts" / "ui"
DOCS = settings.PROJECT_DIR / "docs"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
CORE_ASSETS = ["raw_quotes", "cleaned_prices", "monthly_prices", "ticker_universe",
               "sector_daily_performance", "sector_monthly_summary"]
# Skip Dagster's one-time community dialog and start with the navigation collapsed.
INIT_SCRIPT = ("window.localStorage.setItem('communityNux', JSON.stringify('1'));"
               "window.localStorage.setItem('dagster-nav-collapsed', 'true');")
RUN_TIMEOUT_MS = 180_000


def _chromium() -> str | None:
    configured = os.environ.get("STOCK_ASSETS_CHROMIUM")
    if configured:
        return configured
    return next((path for path in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
                 if path and Path(path).exists()), None)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    if executable is None:
        _unavailable("chromium is not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _page(browser, width: int, height: int):
    context = browser.new_context(viewport={"width": width, "height": height})
    context.add_init_script(INIT_SCRIPT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def _screenshot(page, name: str, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000, path  # a real page, not a blank one
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        shutil.copyfile(path, DOCS / name)
    return path


def _expand_all_groups(page) -> None:
    """Alt+E ("Expand all groups"); the graph only takes it once it has rendered, so retry."""
    page.locator("button:has([aria-label='zoom_in'])").wait_for()
    node = page.get_by_text("cleaned_prices", exact=True).first
    for _ in range(10):
        page.keyboard.press("Alt+KeyE")
        try:
            node.wait_for(state="visible", timeout=2_000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: not rendered yet, press again
            continue
    raise AssertionError("the asset graph's groups did not expand")


def test_graph_launch_a_partition_checks_and_sector_page(browser, dagster_ui, ui_history):
    from playwright.sync_api import expect

    # The asset graph, every group expanded (Alt+E), reloaded so that it fits the window.
    page = _page(browser, 2000, 1000)
    page.goto(f"{dagster_ui.url}/asset-groups", wait_until="networkidle")
    _expand_all_groups(page)
    page.reload(wait_until="networkidle")
    for asset in CORE_ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    for group in ("ingestion", "prices", "warehouse", "reference", "sectors"):
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    page.wait_for_timeout(1000)  # let the nodes' live data (latest events, checks) arrive
    _screenshot(page, "asset-graph.png")

    # Open cleaned_prices from the graph and launch one partition from the UI.
    page.get_by_text("cleaned_prices", exact=True).first.click()
    page.get_by_role("link", name="View in Asset Catalog").click()
    page.wait_for_url(re.compile(r".*/assets/cleaned_prices.*"))
    page.get_by_role("button", name="Materialize…").first.click()
    confirm = page.get_by_role("button", name="Confirm")  # only when an upstream was never materialized
    if confirm.is_visible():
        confirm.click()
    dialog = page.get_by_role("dialog").last
    expect(dialog).to_contain_text("Launch runs to materialize cleaned_prices")
    show_all = dialog.get_by_role("button", name="Show all partitions")
    if show_all.is_visible():
        show_all.click()
    partitions = dialog.locator("input[type=text]").first
    partitions.fill(BAD_DAY)
    partitions.press("Enter")
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    launch.click()

    # The toast links to the run; its page says Success once the daemon has run it.
    view = page.locator("a[href^='/runs/']", has_text=re.compile(r"^View$")).first
    run_id = view.get_attribute("href").rsplit("/", 1)[-1]
    view.click()
    page.wait_for_url(re.compile(rf".*/runs/{run_id}.*"))
    expect(page.get_by_text(f"partition: {BAD_DAY}")).to_be_visible()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    assert dagster_ui.client.get_run_status(run_id).value == "SUCCESS"

    # The checks of that run: blocking ones passed, PFE's missing bar fails tickers_complete (a warning).
    page.goto(f"{dagster_ui.url}/assets/cleaned_prices?view=checks", wait_until="networkidle")
    page.get_by_text("tickers_complete", exact=True).first.click()
    expect(page.get_by_text("Failed").first).to_be_visible()
    expect(page.get_by_text("missing_bars", exact=True).first).to_be_visible()
    _screenshot(page, "cleaned-prices-checks.png")
    # The same check per day (its Partitions tab): the bad day, failed, with its own metadata.
    page.get_by_role("tab", name="Partitions").last.click()
    page.get_by_placeholder("Filter by partition").fill(BAD_DAY)
    page.locator(f"text='{BAD_DAY}' >> visible=true").last.click()
    why = f"{BAD_DAY}: 1 of {len(UI_TICKERS)} tracked tickers have no clean bar (PFE)"
    expect(page.get_by_text(why).first).to_be_visible()
    page.wait_for_timeout(1000)  # let the partition bar settle
    _screenshot(page, "cleaned-prices-check-partitions.png")
    page.context.close()

    # The sector asset's page: description, column schema, table, latest month's metadata.
    page = _page(browser, 1600, 1400)
    page.goto(f"{dagster_ui.url}/assets/sector_monthly_summary", wait_until="networkidle")
    expect(page.get_by_text("market.sector_monthly_summary").first).to_be_visible()
    expect(page.get_by_text("PRIMARY KEY (sector, month)").first).to_be_visible()
    expect(page.get_by_text("best_sector", exact=True).first).to_be_visible()
    # The month's own figures, on its partition: the overview shows the latest materialization,
    # which is whichever month automation finished last (it fills every month after the universe
    # is first materialized), not necessarily the ui history's month.
    page.goto(f"{dagster_ui.url}/assets/sector_monthly_summary?view=partitions&partition={MONTH}",
              wait_until="networkidle")
    expect(page.get_by_text(MONTH).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_text("best_sector", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    _screenshot(page, "sector-asset.png")
    page.context.close()
