"""Sensors that watch the whole code location rather than one domain."""

import datetime as dt
import json

import dagster as dg

from stock_assets import settings
from stock_assets.defs.operations.alerting import RUN_FAILURE, Alert, data_alerts, send_alert
from stock_assets.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from stock_assets.health import check_daily_partitions
from stock_assets.instance.dead_runs import reap_dead_runs


def describe_failure(run: dg.DagsterRun, step_failures: list[dg.DagsterEvent]) -> str:
    """One line an operator can act on: which run, which partitions, which step, and why."""
    tags = run.tags
    if RANGE_START_TAG in tags:
        partitions = f"partitions {tags[RANGE_START_TAG]}..{tags.get(RANGE_END_TAG, '?')}"
    elif "dagster/partition" in tags:
        partitions = f"partition {tags['dagster/partition']}"
    else:
        partitions = "no partition"
    causes = []
    for event in step_failures:
        error = event.step_failure_data.error if event.step_failure_data else None
        while error is not None and error.cause is not None and error.cls_name.startswith("Dagster"):
            error = error.cause  # the user code's own exception, not Dagster's wrapper
        if error is None:
            reason = "unknown error"
        else:
            first = (error.message.strip().splitlines() or [""])[0]
            # The serialized message already starts with the class name (Python's own format).
            reason = first if first.startswith(f"{error.cls_name}:") else f"{error.cls_name}: {first}"
        causes.append(f"step {event.step_key}: {reason}")
    return f"Run {run.run_id[:8]} of {run.job_name} failed for {partitions}: " + (
        "; ".join(causes) or "the run failed before any step (see the run's logs)")


@dg.run_failure_sensor(
    description="Names the failed partitions and their cause in the sensor's tick log and alerts the operator "
                "(webhook, e-mail: STOCK_ASSETS_ALERT_*), so no failure is silent.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_reporter(context: dg.RunFailureSensorContext) -> None:
    message = describe_failure(context.dagster_run, context.get_step_failure_events())
    context.log.error(message)
    run = context.dagster_run
    delivered = send_alert(Alert(RUN_FAILURE, f"run of {run.job_name} failed", message))
    if delivered:
        context.log.info("alert sent via %s", ", ".join(delivered))


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts the operator (webhook, e-mail: STOCK_ASSETS_ALERT_*) when a blocking check fails on a day "
                "or the daily data goes stale; each finding once.",
)
def data_alert_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    return evaluate_data_alerts(context, dt.datetime.now(dt.timezone.utc))


def evaluate_data_alerts(context: dg.SensorEvaluationContext, now: dt.datetime) -> dg.SkipReason:
    result = check_daily_partitions(context.instance, None, now, settings.quote_source())
    findings = data_alerts(result)
    sent = set(json.loads(context.cursor or "[]"))
    new = {key: alert for key, alert in findings.items() if key not in sent}
    for alert in new.values():
        send_alert(alert)
        context.log.warning(alert.title)
    # Keep only current findings: a day that recovers and fails again is alerted again.
    context.update_cursor(json.dumps(sorted(set(findings))))
    return dg.SkipReason(f"{len(new)} new alert(s), {len(findings) - len(new)} already sent: {result.summary}")


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks runs whose process is gone (killed, out of memory) as failed and frees the pool slots they "
                "hold, so the queue and the gap sensor do not wait on them forever.",
)
def dead_run_reaper(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    dead = reap_dead_runs(context.instance)
    for run in dead:
        context.log.error(f"{run.describe()}: marked failed, pool slots freed")
    return dg.SkipReason(f"{len(dead)} dead run(s) marked failed" if dead else "no dead runs")
