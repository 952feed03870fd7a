"""Sensors that watch the whole code location rather than one domain."""

import dagster as dg

from stock_assets.partitions import RANGE_END_TAG, RANGE_START_TAG


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
        reason = f"{error.cls_name}: {error.message.strip().splitlines()[0]}" if error else "unknown error"
        causes.append(f"step {event.step_key}: {reason}")
    return f"Run {run.run_id[:8]} of {run.job_name} failed for {partitions}: " + (
        "; ".join(causes) or "the run failed before any step (see the run's logs)")


@dg.run_failure_sensor(
    description="Names the failed partitions and their cause in the sensor's tick log, so no failure is silent.",
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def run_failure_reporter(context: dg.RunFailureSensorContext) -> None:
    message = describe_failure(context.dagster_run, context.get_step_failure_events())
    context.log.error(message)
