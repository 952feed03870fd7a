"""The checks on cleaned_prices: their specs, each day's verdicts, and the events that record them.

Every check is judged per daily partition over a month of clean rows at a time (`evaluate_checks`),
in the step's process or in a worker process (defs/prices/batches.py); the step then records the
verdicts (`partition_checks`): every failure, and the passes of the newest days.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pandas as pd

from stock_assets.defs.metadata import day_names, share
from stock_assets.defs.partitions import trading_day_partitions

REJECTED_SHARE_LIMIT = 0.01
# ... and at least this many rows: one bad bar in a 58-ticker universe is 1.7% of the day, which
# the rejections table and `tickers_complete` already report; three or more on one day is a pattern
# (a bad fetch, a rule gone wrong) worth its own warning. Identical re-fetches (reason `duplicate`)
# lose nothing and are not counted.
REJECTED_MIN_ROWS = 3
UNCOUNTED_REASONS = frozenset({"duplicate"})
# Rows (or symbols) a failing check lists in its metadata; the counts are always complete.
SAMPLE_SIZE = 20
# Every check result is a Dagster event, and each costs milliseconds (3-5 ms with PostgreSQL
# storage, measured): a run records *passing* results only for its newest 31 days (every day of a
# daily, gap-filling or one-month run); failing results are recorded for every day. A backfill of
# the whole history (1,766 days) then adds ~125 events instead of ~7,000.
RECORDED_PASSING_DAYS = 31


def _check_spec(name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    # Partitioned checks are a preview in Dagster 1.13: silence exactly that warning, nothing else.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec",
                                category=dg.PreviewWarning)
        return dg.AssetCheckSpec(name, asset="cleaned_prices", blocking=blocking, description=description,
                                 partitions_def=trading_day_partitions)


# Evaluated per daily partition, so the UI shows each day's result (see `partition_checks`).
CHECKS = [
    _check_spec("ohlc_consistent", "Every row has positive prices with low <= open, close <= high.", blocking=True),
    _check_spec("unique_symbol_date", "At most one row per (symbol, trade date).", blocking=True),
    _check_spec("rejected_share", f"Fails when a day's rejected rows are both more than {REJECTED_SHARE_LIMIT:.0%} "
                f"of its raw rows and at least {REJECTED_MIN_ROWS} (identical re-fetches not counted): one bad "
                "bar is reported by the rejections table and tickers_complete, several on one day are a "
                "pattern. The result lists the day's rejections by reason."),
    _check_spec("tickers_complete", "Every tracked ticker has a clean bar for every session of its own exchange "
                "(NYSE for US listings, London for OCDO.L, Tokyo for 4063.T, ...)."),
]


@dataclass(frozen=True)
class Outcome:
    """One check on one daily partition."""

    check: str
    partition: str
    passed: bool
    metadata: Mapping[str, Any]
    description: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """Every check on every checked partition of a run."""

    partitions: Sequence[str]
    outcomes: Sequence[Outcome] = field(default_factory=list)

    def recorded(self) -> list[Outcome]:
        """What the run records as check evaluations: every failure, passes on the newest days."""
        newest = set(sorted(self.partitions)[-RECORDED_PASSING_DAYS:])
        return [outcome for outcome in self.outcomes if not outcome.passed or outcome.partition in newest]

    def failed(self, check: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.check == check and not outcome.passed]

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per check: partitions checked, how many failed (the first ones named), how many recorded."""
        recorded = self.recorded()
        return {
            spec.name: {
                "partitions_checked": len(self.partitions),
                "failed": len(self.failed(spec.name)),
                "failed_partitions": [o.partition for o in self.failed(spec.name)][:SAMPLE_SIZE],
                "results_recorded": sum(o.check == spec.name for o in recorded),
            }
            for spec in CHECKS
        }


def evaluate_checks(
    clean: pd.DataFrame, raw_by_day: Mapping[str, int], rejected_by_day: Mapping[str, int],
    symbols: Sequence[str], partitions: Sequence[str], sessions: Set[str],
    sessions_by_symbol: Mapping[str, Set[str]] | None = None, closed_note: str = "NYSE closed",
    rejected_reasons: Mapping[str, Mapping[str, int]] | None = None,
) -> Evaluation:
    """Every check on every partition in `partitions` (ISO days), computed over the run at once.

    `sessions` are the days among them on which some tracked listing trades: a day that is not one
    expects no bars, so it passes unless rows turn up anyway (and are checked like any others).
    `sessions_by_symbol` are each listing's own sessions (its exchange's calendar): a listing is
    expected to have a bar on those days only. Without it every listing is expected on `sessions`.
    `rejected_by_day` counts the rejections `rejected_share` judges; `rejected_reasons` (per day,
    per reason) is shown."""
    days = _day_keys(clean)
    bad_ohlc = (
        (clean[["open", "high", "low", "close", "adj_close"]] <= 0).any(axis=1)
        | (clean["low"] > clean[["open", "close"]].min(axis=1))
        | (clean["high"] < clean[["open", "close"]].max(axis=1))
    )
    # Only the days with something wrong get a frame of their own (a backfill has ~1,800 days).
    bad_by_day = dict(iter(clean[bad_ohlc].groupby(days[bad_ohlc])))
    duplicated = clean.duplicated(["symbol", "trade_date"])
    dupes_by_day = dict(iter(clean[duplicated].groupby(days[duplicated])))
    tracked = sorted(set(symbols))
    own = {symbol: sessions for symbol in tracked}
    own.update({symbol: days for symbol, days in (sessions_by_symbol or {}).items() if symbol in own})
    # Listings of one calendar share a set of sessions: test each set once per day.
    by_calendar: dict[int, tuple[Set[str], list[str]]] = {}
    for symbol in tracked:
        by_calendar.setdefault(id(own[symbol]), (own[symbol], []))[1].append(symbol)
    is_tracked = clean["symbol"].isin(tracked)
    tracked_by_day = clean["symbol"][is_tracked].groupby(days[is_tracked]).nunique().to_dict()
    none = clean.iloc[:0]

    outcomes = []
    for day in partitions:
        closed = None if day in sessions else f"{day}: {closed_note}, no bars expected"
        bad = bad_by_day.get(day, none)
        violations = len(bad)
        metadata: dict[str, Any] = {"violations": violations}
        if violations:
            metadata["violation_sample"] = dg.MetadataValue.json([
                f"{r.symbol} o={r.open} h={r.high} l={r.low} c={r.close} adj={r.adj_close}"
                for r in bad.head(SAMPLE_SIZE).itertuples(index=False)])
        outcomes.append(Outcome(
            "ohlc_consistent", day, not violations, metadata,
            f"{day}: {violations} row(s) with a non-positive price or outside low <= open, close <= high "
            f"({_names(bad['symbol'])})" if violations else closed))

        dupes = dupes_by_day.get(day, none)
        duplicates = len(dupes)
        metadata = {"duplicates": duplicates}
        if duplicates:
            metadata["duplicate_symbols"] = dg.MetadataValue.json(sorted(set(dupes["symbol"]))[:SAMPLE_SIZE])
        outcomes.append(Outcome(
            "unique_symbol_date", day, not duplicates, metadata,
            f"{day}: {duplicates} extra row(s) for the same symbol ({_names(dupes['symbol'])})"
            if duplicates else closed))

        raw, rejected = raw_by_day.get(day, 0), rejected_by_day.get(day, 0)
        rejected_share = share(rejected, raw)
        passed = rejected_share <= REJECTED_SHARE_LIMIT or rejected < REJECTED_MIN_ROWS
        by_reason = dict((rejected_reasons or {}).get(day, {}))
        metadata = {"rejected_share": rejected_share, "rejected_rows": rejected, "raw_rows": raw,
                    "limit": REJECTED_SHARE_LIMIT, "min_rows": REJECTED_MIN_ROWS}
        if by_reason:
            metadata["rejected_by_reason"] = dg.MetadataValue.json(by_reason)
        reasons_text = ", ".join(f"{why} {count}" for why, count in sorted(by_reason.items()))
        outcomes.append(Outcome(
            "rejected_share", day, passed, metadata,
            closed if passed else f"{day}: {rejected} of {raw} raw rows rejected "
                                  f"({rejected_share:.1%}; fails above {REJECTED_SHARE_LIMIT:.0%} and at least "
                                  f"{REJECTED_MIN_ROWS} rows)" + (f": {reasons_text}" if reasons_text else "")))

        missing = []
        expected = [symbol for days, members in by_calendar.values() if day in days for symbol in members]
        if closed is None and tracked_by_day.get(day, 0) < len(tracked):
            present = set(clean["symbol"][days == day])
            missing = [symbol for symbol in expected if symbol not in present]
        metadata = {"missing_bars": len(missing), "expected_listings": len(expected)}
        if missing:
            metadata["missing_sample"] = dg.MetadataValue.json([f"{s} {day}" for s in missing[:SAMPLE_SIZE]])
        outcomes.append(Outcome(
            "tickers_complete", day, not missing, metadata,
            closed if not missing else f"{day}: {len(missing)} of {len(expected)} tracked tickers have no "
                                       f"clean bar ({_names(missing)})"))
    return Evaluation(partitions=list(partitions), outcomes=outcomes)


def _day_keys(frame: pd.DataFrame) -> pd.Series:
    """Each row's daily partition key (ISO date)."""
    if not len(frame):
        return pd.Series([], index=frame.index, dtype="object")
    return day_names(frame["trade_date"])


def _names(symbols, limit: int = 5) -> str:
    names = sorted(set(symbols))
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def partition_checks(
    context: dg.AssetExecutionContext, evaluation: Evaluation
) -> Iterator[dg.Output | dg.AssetCheckEvaluation]:
    """The check outputs, one AssetCheckEvaluation per recorded check and day, then the verdict.

    Dagster 1.13 fills in an AssetCheckResult's partition only in single-partition runs, so the
    evaluations are built here, each with its partition and the materialization of that partition
    it checked (which makes it the partition's current result in the UI). Dagster fails the step
    on a failed blocking evaluation without naming the partition; the Failure raised here names
    the days, so the run's error (and the failure sensor) says which days were stopped.
    """
    specs = {spec.name: spec for spec in CHECKS}
    selected = [name for name in specs if dg.AssetCheckKey(context.asset_key, name) in
                context.selected_asset_check_keys]
    for name in selected:
        key = dg.AssetCheckKey(context.asset_key, name)
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(key))
    recorded = [outcome for outcome in evaluation.recorded() if outcome.check in selected]
    targets = _materializations(context, sorted({outcome.partition for outcome in recorded}))
    for outcome in recorded:
        spec = specs[outcome.check]
        yield dg.AssetCheckEvaluation(
            asset_key=context.asset_key,
            check_name=outcome.check,
            passed=outcome.passed,
            metadata=dict(outcome.metadata),
            target_materialization_data=targets.get(outcome.partition),
            severity=dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN,
            description=outcome.description,
            blocking=spec.blocking,
            partition=outcome.partition,
        )
    blocked = {name: evaluation.failed(name) for name in selected if specs[name].blocking}
    blocked = {name: failures for name, failures in blocked.items() if failures}
    if blocked:
        days = sorted({failure.partition for failures in blocked.values() for failure in failures})
        raise dg.Failure(
            description=(
                f"Blocking check(s) failed on {len(days)} partition(s) of cleaned_prices, "
                f"{', '.join(days[:10])}{' ...' if len(days) > 10 else ''}: "
                + "; ".join(f"{name} on {' / '.join(str(f.description) for f in failures[:3])}"
                            f"{' ...' if len(failures) > 3 else ''}" for name, failures in blocked.items())
            ),
            metadata={
                "failed_partitions": dg.MetadataValue.json(days),
                **{f"{name}_failed_partitions": len(failures) for name, failures in blocked.items()},
            },
        )


def _materializations(context: dg.AssetExecutionContext, partitions: Sequence[str]) -> dict[str, Any]:
    """This run's materialization of each partition (what its check results point at), in one query."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    if not partitions:
        return {}
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=list(partitions)),
        limit=len(partitions),
    ).records
    targets: dict[str, Any] = {}
    for record in records:  # newest first
        if record.run_id == context.run.run_id and record.partition_key not in targets:
            targets[record.partition_key] = AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
    return targets


