"""The gap and restatement sensors: keep the daily data whole and correctly adjusted, unattended."""

import datetime as dt
import json

import dagster as dg
from pydantic import Field

from stock_assets.database.resource import PostgresResource
from stock_assets.defs.jobs import daily_prices_job
from stock_assets.defs.partitions import FIRST_DAY, RANGE_END_TAG, RANGE_START_TAG, range_tags
from stock_assets.defs.prices.gaps import (
    Hole,
    contiguous_ranges,
    in_flight,
    selection_holes,
    sessions_in_window,
    sessions_missing_rows,
    unmaterialized_sessions,
)
from stock_assets.defs.prices.restatements import StoredDays, stale_reason
from stock_assets.defs.quotes.resources import QuoteClient
from stock_assets.defs.quotes.ticker_runs import TICKERS_TAG, TRIGGER_TAG, ticker_run_request
from stock_assets.defs.universe.resources import TickerSelection
from stock_assets.landing.io_manager import LandingIOManager


class GapPolicy(dg.ConfigurableResource):
    """How far back the gap sensor looks, and how long it waits before asking again."""

    lookback_days: int = Field(default=30, description="Calendar days before today that the gap sensor inspects.")
    retry_after_minutes: int = Field(default=60, description="Minimum wait before re-requesting the same range "
                                     "(and before asking again for a ticker's missing bar).")
    max_retry_hours: float = Field(
        default=24.0, description="A ticker's missing bar is asked for again after retry_after_minutes, then twice "
        "as long each time, up to this many hours (a bar Yahoo keeps refusing is not asked for every tick).")

    def retry_wait(self, attempts: int) -> dt.timedelta:
        minutes = self.retry_after_minutes * 2 ** max(attempts - 1, 0)
        return dt.timedelta(minutes=min(minutes, self.max_retry_hours * 60))


@dg.sensor(
    job=daily_prices_job,
    minimum_interval_seconds=300,
    description="Requests one run per contiguous range of missing or failed trading days in the look-back "
                "window (weekends and NYSE holidays are not gaps), and one run per tick refetching only the "
                "tickers that miss a bar on a stored day; skips what is already queued or running.",
)
def gap_sensor(
    context: dg.SensorEvaluationContext, database: PostgresResource, quotes: QuoteClient, gap_policy: GapPolicy,
    tickers: TickerSelection, landing_io_manager: dg.ResourceParam[LandingIOManager],
) -> dg.SensorResult:
    now = dt.datetime.now(dt.timezone.utc)
    sessions = sessions_in_window(quotes.market_today(now), gap_policy.lookback_days)
    whole_days = unmaterialized_sessions(context.instance, sessions) | sessions_missing_rows(
        context.instance, database, sessions)
    coverage = in_flight(context.instance, daily_prices_job.name)
    gaps = whole_days - coverage.days

    state = json.loads(context.cursor or "{}")
    requested: dict[str, str] = state.get("requested", {})
    cutoff = now - dt.timedelta(minutes=gap_policy.retry_after_minutes)
    requested = {k: v for k, v in requested.items() if dt.datetime.fromisoformat(v) > cutoff}
    run_requests = []
    for first, last in contiguous_ranges(gaps):
        label = f"{first}..{last}"
        if label in requested:
            continue
        requested[label] = now.isoformat()
        run_requests.append(dg.RunRequest(
            run_key=f"gap:{label}:{now:%Y%m%dT%H%M%S}",
            tags={**range_tags(first, last), TRIGGER_TAG: "gap_sensor"},
        ))

    # Point in time (TickerSelection.sp500_point_in_time): a member without a single stored bar is
    # not served (delisted) and is not refetched.
    _, holes = selection_holes(context.instance, database.engine, landing_io_manager.store(), tickers, sessions,
                               skip_days=whole_days)
    holes = [hole for hole in holes if not coverage.covers(hole.symbol, hole.session)]
    tried: dict[str, list] = {key: value for key, value in state.get("holes", {}).items()
                              if key in {str(hole) for hole in holes}}  # filled holes are forgotten
    refetch = _holes_due(holes, tried, now, gap_policy)
    if refetch:
        run_requests.append(_refetch_tickers(refetch, holes, tried, now))

    cursor = json.dumps({"requested": requested, "holes": tried}, sort_keys=True)
    waiting = f"; {len(holes) - len(refetch)} ticker bar(s) missing, asked for already" if len(holes) > len(refetch) \
        else ""
    if not run_requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(
            f"No gaps in {len(sessions)} sessions up to {sessions[-1] if sessions else '-'}"
            + (f" ({len(gaps)} gap days already requested)" if gaps else "") + waiting), cursor=cursor)
    context.log.info("Requesting %d run(s): %s%s", len(run_requests), ", ".join(
        f"{r.tags[RANGE_START_TAG]}..{r.tags[RANGE_END_TAG]}" + (f" for {r.tags[TICKERS_TAG]}"
                                                                 if TICKERS_TAG in r.tags else "")
        for r in run_requests), waiting)
    return dg.SensorResult(run_requests=run_requests, cursor=cursor)


def _holes_due(holes: list[Hole], tried: dict[str, list], now: dt.datetime, policy: GapPolicy) -> list[Hole]:
    """Holes never asked for, or asked for long enough ago (the wait doubles per attempt)."""
    due = []
    for hole in holes:
        attempts, last = tried.get(str(hole), (0, None))
        if last is None or now - dt.datetime.fromisoformat(last) >= policy.retry_wait(attempts):
            due.append(hole)
    return due


def _refetch_tickers(due: list[Hole], holes: list[Hole], tried: dict[str, list], now: dt.datetime) -> dg.RunRequest:
    """One run for every ticker with a due hole, over the days from the first to the last of them."""
    symbols = sorted({hole.symbol for hole in due})
    first, last = min(hole.session for hole in due), max(hole.session for hole in due)
    for hole in holes:  # every hole the run covers counts as asked for
        if hole.symbol in symbols and first <= hole.session <= last:
            tried[str(hole)] = [tried.get(str(hole), [0])[0] + 1, now.isoformat()]
    return ticker_run_request(symbols, first, last, "gap_sensor", key_suffix=f":{now:%Y%m%dT%H%M%S}")


RESTATEMENT_RETRY = dt.timedelta(hours=1)


@dg.sensor(
    job=daily_prices_job,
    minimum_interval_seconds=300,
    description="When a split or dividend arrives for a ticker whose stored earlier history does not reflect it "
                "yet, refetches that history (bypassing the response cache): one run per tick for every such "
                "ticker; nothing when the stored prices already carry the adjustment.",
)
def restatement_sensor(context: dg.SensorEvaluationContext,
                       landing_io_manager: dg.ResourceParam[LandingIOManager]) -> dg.SensorResult:
    state = _restatement_state(context.cursor)
    after = state["after"]
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_quotes"), after_storage_id=after), limit=5000, ascending=True
    ).records
    seen: dict[str, dict] = {}  # symbol -> first days of the runs that saw an action, split ratios
    stored: set[str] | None = None
    for record in records:
        after = max(after, record.storage_id)
        materialization = record.asset_materialization
        actions = materialization.metadata.get("corporate_actions") if materialization else None
        if not actions or not actions.value:
            continue
        run_start = _run_start(context.instance, record.run_id, record.partition_key)
        if run_start is None or run_start <= dt.date.fromisoformat(FIRST_DAY):
            continue  # the whole history came in the same request: already adjusted
        if stored is None:
            stored = context.instance.get_materialized_partitions(dg.AssetKey("raw_quotes"))
        if not any(key < run_start.isoformat() for key in stored):
            continue  # no earlier history is stored: nothing to restate
        for action in actions.value:
            entry = seen.setdefault(action["symbol"], {"starts": set(), "splits": []})
            entry["starts"].add(run_start)
            if action["kind"] == "split":
                entry["splits"].append(float(action["value"]))
    for symbol, pending in state["pending"].items():  # requested earlier: still stale?
        entry = seen.setdefault(symbol, {"starts": set(), "splits": []})
        entry["starts"].add(dt.date.fromisoformat(pending["start"]))
        entry["splits"].extend(pending.get("splits", []))

    days = StoredDays(landing_io_manager.store())
    stale: dict[str, dt.date] = {}
    reasons: dict[str, str] = {}
    for symbol, entry in sorted(seen.items()):
        for start in sorted(entry["starts"]):
            reason = _stale(days, symbol, start, entry["splits"], stored, context.instance)
            if reason:
                stale[symbol] = max(stale.get(symbol, start), start)
                reasons[symbol] = reason
    now = dt.datetime.now(dt.timezone.utc)
    coverage = in_flight(context.instance, daily_prices_job.name)
    pending = {symbol: {"start": start.isoformat(), "splits": seen[symbol]["splits"],
                        "requested_at": state["pending"].get(symbol, {}).get("requested_at")}
               for symbol, start in stale.items()}
    due = sorted(symbol for symbol, entry in pending.items()
                 if not coverage.covers(symbol, stale[symbol] - dt.timedelta(days=1))
                 and (entry["requested_at"] is None
                      or now - dt.datetime.fromisoformat(entry["requested_at"]) >= RESTATEMENT_RETRY))
    current = sorted(set(seen) - set(stale))
    if not due:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(
                "No stored history to restate"
                + (f"; already adjusted for their splits/dividends: {', '.join(current)}" if current else "")
                + (f"; restatement requested already for {', '.join(sorted(stale))}" if stale else "")),
            cursor=_restatement_cursor(after, pending))
    for symbol in due:
        pending[symbol]["requested_at"] = now.isoformat()
    last = max(stale[symbol] for symbol in due) - dt.timedelta(days=1)
    request = ticker_run_request(due, dt.date.fromisoformat(FIRST_DAY), last, "restatement_sensor",
                                 refresh_cache=True, key_suffix=f":{now:%Y%m%dT%H%M%S}")
    context.log.info("Restating the history of %d ticker(s) up to %s (response cache bypassed): %s%s", len(due), last,
                     "; ".join(f"{symbol}: {reasons[symbol]}" for symbol in due),
                     f". Already adjusted: {', '.join(current)}" if current else "")
    return dg.SensorResult(run_requests=[request], cursor=_restatement_cursor(after, pending))


def _stale(days: StoredDays, symbol: str, start: dt.date, splits: list[float], stored: set[str] | None,
           instance: dg.DagsterInstance) -> str | None:
    first = days.first_from(symbol, start)
    if first is None:
        return None  # the new bars are gone (replaced since): nothing to compare with
    before = days.last_before(symbol, first.day)
    if before is None:
        if stored is None:
            stored = instance.get_materialized_partitions(dg.AssetKey("raw_quotes"))
        earlier = any(key < (start - dt.timedelta(days=14)).isoformat() for key in stored)
        return f"no stored bar of {symbol} in the {14} days before {first.day} to compare" if earlier else None
    return stale_reason(before, first, splits)


def _restatement_state(cursor: str | None) -> dict:
    if not cursor:
        return {"after": 0, "pending": {}}
    if cursor.isdigit():  # the cursor of earlier versions: the storage id alone
        return {"after": int(cursor), "pending": {}}
    state = json.loads(cursor)
    return {"after": int(state.get("after", 0)), "pending": state.get("pending", {})}


def _restatement_cursor(after: int, pending: dict) -> str:
    return json.dumps({"after": after, "pending": pending}, sort_keys=True)


def _run_start(instance: dg.DagsterInstance, run_id: str, partition_key: str | None) -> dt.date | None:
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run else {}
    first = tags.get(RANGE_START_TAG) or tags.get("dagster/partition") or partition_key
    return dt.date.fromisoformat(first) if first else None
