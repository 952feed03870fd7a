"""Declarative automation and freshness shared by the domains.

Downstream monthly assets follow their upstream declaratively instead of through sensors: when a
daily partition is re-materialized (a gap filled, a restatement), the month that holds it reloads,
and the sector aggregations of that month follow, and so do the next month's (their first return
starts from this month's last close: the sector assets depend on the previous month too).
"""

import datetime as dt

import dagster as dg

from stock_assets.defs.partitions import MARKET_TIMEZONE


def follow_upstream() -> dg.AutomationCondition:
    """Requested when a dependency's partition is updated, for every partition, not only the latest.

    Unlike Dagster's `eager`, it does not wait until *every* mapped upstream partition exists: a
    month whose days are partly materialized (the running month, a month at the end of the data, a
    gap the sensor just filled) loads what it has, and a sector month whose previous month was never
    loaded is still computed (its first session then has no return). Never while a dependency or the
    target itself is in progress, and not on the first evaluation (so enabling it does not launch the
    whole history): it only acts on updates.
    """
    return (
        deps_updated_ignoring_unchanged(REFERENCE_ASSETS).since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("follow upstream (all partitions, any update)")


# Unpartitioned reference data that every month depends on. They are refreshed often (every
# `universe_job`) and usually unchanged; each carries a content data version, so a refresh that
# changed nothing does not make every month of the sector tables recompute.
REFERENCE_ASSETS = dg.AssetSelection.assets("ticker_universe", "index_membership", "sector_classification")


def deps_updated_ignoring_unchanged(references: dg.AssetSelection) -> dg.AutomationCondition:
    """Dagster's `any_deps_updated`, except that an update of one of `references` counts only when
    its data version changed."""
    return (
        dg.AutomationCondition.any_deps_updated().ignore(references)
        | dg.AutomationCondition.any_deps_match(
            dg.AutomationCondition.newly_updated() & dg.AutomationCondition.data_version_changed()
        ).allow(references)
    ).with_label("any_deps_updated (references: only on a changed data version)")


# Daily data lands after the 16:00 close; the daily schedule runs at 18:30 New York.
DAILY_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 20 * * 1-5", lower_bound_delta=dt.timedelta(hours=4), timezone=MARKET_TIMEZONE
)
# Sector tables follow the monthly reload at 19:15.
SECTOR_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 21 * * 1-5", lower_bound_delta=dt.timedelta(hours=5), timezone=MARKET_TIMEZONE
)


# Database work that failed on a dropped connection or a restarting server is retried: a load is one
# transaction, so a retry starts from a clean slate. Jitter spreads retries of parallel runs.
DATABASE_RETRY = dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


# Evaluates the conditions above; on by default so months and sectors follow their days without an
# operator turning anything on. It only acts on updates: enabling it launches nothing by itself.
follow_upstream_sensor = dg.AutomationConditionSensorDefinition(
    "follow_upstream_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Reloads a month, and its sector aggregations, when one of its days is re-materialized.",
)
