"""The governed transport: rate limit, retries, circuit breaker, cache and metrics under yfinance.

yfinance keeps one process-wide `YfData` singleton holding ONE session, fetches cookie and crumb
itself, and hides or swallows errors in several places. So the governance does not wrap yfinance
calls; it sits below them, as a `requests` transport adapter mounted on that one session and
wrapping the real transport (the live one, the replay or the emulator). Every HTTP request
yfinance makes, from any thread, passes through `GovernedAdapter.send`:

    chart request? -> remembered refusal? -> cache hit (unless refreshing)? -> (per-key lock, re-check)
    -> breaker admits? -> limiter slot -> inner transport -> verdict (http_calls.judge)
    -> OK / PERMANENT: return (and cache) | THROTTLED / FAILED / EMPTY: back off, retry (tenacity)

yfinance stays the parser: what it receives is either a good answer, Yahoo's own refusal, or an
exception naming the cause (`UpstreamError`, `UpstreamUnreachable`, `CircuitOpenError`).

A fetch made under `refreshing()` (a restatement after a split or dividend) never answers from the
cache: it asks upstream and stores the fresh answer, so later readers get the new prices too.

yfinance retries any 4xx once after switching cookie strategy; for a permanent refusal the adapter
answers that repeat from memory (`refusal_memory_s`) instead of asking Yahoo twice.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests
import tenacity
import urllib3
from requests.adapters import BaseAdapter
from sqlalchemy import Connection

from stock_assets.yahoo.breaker import HALF_OPEN, Admission, Breaker, CircuitOpenError
from stock_assets.yahoo.cache import CachedAnswer, ResponseCache
from stock_assets.yahoo.chart_json import share
from stock_assets.yahoo.http_calls import CHART, Judgement, UpstreamCall, Verdict, judge
from stock_assets.yahoo.limiter import RateLimiter
from stock_assets.yahoo.live import ConnectFailed
from stock_assets.yahoo.wire import wire_response

_REMEMBERED_STATUSES = frozenset({400, 404, 422})


class UpstreamError(RuntimeError):
    """A request still failed after every retry; the message names the request and the cause."""

    def __init__(self, call: UpstreamCall, judgement: Judgement, attempts: int) -> None:
        self.call, self.judgement, self.attempts = call, judgement, attempts
        super().__init__(f"{call.label}: gave up after {attempts} attempt(s): {judgement.reason}")


class UpstreamUnreachable(RuntimeError):
    """No connection could be made at all (refused, DNS, proxy): nothing to wait out in seconds,
    so it is not retried here; the step's retry policy tries again minutes later."""


@dataclass(frozen=True)
class GovernancePolicy:
    scope: str
    max_retries: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0
    cache_past_ttl_s: float = 30 * 86400.0
    cache_recent_ttl_s: float = 300.0
    refusal_memory_s: float = 60.0


@dataclass
class Governance:
    """The policy and the (shared or local) state one governed transport works with."""

    policy: GovernancePolicy
    limiter: RateLimiter
    breaker: Breaker
    cache: ResponseCache | None


@dataclass
class Trace:
    """What went over the wire for one fetch (or in total); safe to share between threads."""

    upstream_requests: int = 0
    history_requests: int = 0
    cache_hits: int = 0
    cache_refreshes: int = 0
    refusals_remembered: int = 0
    retries: int = 0
    http_429: int = 0
    failed_attempts: int = 0
    empty_answers: int = 0
    limiter_wait_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    by_kind: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def absorb(self, other: Trace) -> None:
        """Add another fetch's figures (a batch fetched in a worker process) to these."""
        with self._lock:
            for name in ("upstream_requests", "history_requests", "cache_hits", "cache_refreshes",
                         "refusals_remembered", "retries", "http_429", "failed_attempts", "empty_answers",
                         "limiter_wait_s"):
                setattr(self, name, getattr(self, name) + getattr(other, name))
            self.latencies_s.extend(other.latencies_s)
            self.by_kind.update(other.by_kind)

    # A trace travels back from a worker process: its lock does not, a fresh one is made there.
    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def sent(self, call: UpstreamCall, latency_s: float, waited_s: float) -> None:
        with self._lock:
            self.upstream_requests += 1
            self.history_requests += int(call.is_history)
            self.by_kind["history" if call.is_history else call.kind] += 1
            self.latencies_s.append(latency_s)
            self.limiter_wait_s += waited_s


class _Transient(Exception):
    """An attempt that may succeed if repeated (tenacity retries exactly these)."""

    def __init__(self, judgement: Judgement, response: requests.Response | None = None) -> None:
        super().__init__(judgement.reason)
        self.judgement, self.response = judgement, response
        self.retry_after_s = judgement.retry_after_s


class _BackoffOrRetryAfter(tenacity.wait.wait_base):
    """Exponential backoff with full jitter, but never shorter than the upstream's Retry-After."""

    def __init__(self, base_s: float, max_s: float) -> None:
        self.base_s, self.max_s = base_s, max_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        backoff = random.uniform(0, min(self.max_s, self.base_s * 2 ** (retry_state.attempt_number - 1)))
        told = getattr(retry_state.outcome.exception(), "retry_after_s", None) or 0.0
        return max(backoff, told)


class _TooLongToWait(tenacity.stop.stop_base):
    """Stop when the upstream asks for a wait longer than we are willing to honour in-process."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        told = getattr(retry_state.outcome.exception(), "retry_after_s", None) or 0.0
        return told > self.limit_s


_observed = threading.local()
_refresh = threading.local()


@contextmanager
def refreshing(enabled: bool = True) -> Iterator[None]:
    """This thread's chart requests skip the response cache (and refill it with what upstream says)."""
    previous = getattr(_refresh, "enabled", False)
    _refresh.enabled = enabled or previous
    try:
        yield
    finally:
        _refresh.enabled = previous


def is_refreshing() -> bool:
    return getattr(_refresh, "enabled", False)


@contextmanager
def observing(trace: Trace | None = None) -> Iterator[list[BaseException]]:
    """Record this thread's requests into `trace`; yields the list of governance errors raised in
    the meantime (so a caller can name the cause even if yfinance swallowed the exception)."""
    previous = getattr(_observed, "scope", None)
    if trace is None and previous is not None:
        trace = previous[0]  # a nested scope: same trace, its own errors
    errors: list[BaseException] = []
    _observed.scope = (trace, errors)
    try:
        yield errors
    finally:
        _observed.scope = previous


class GovernedAdapter(BaseAdapter):
    """Wraps `inner` (any requests transport). Attributes it does not define are `inner`'s, so
    callers can still read the replay's request counters through the session."""

    def __init__(self, inner: BaseAdapter, governance: Governance,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__()
        self.inner, self.governance, self._sleep = inner, governance, sleep
        self.totals = Trace()
        self._refusals: dict[str, tuple[float, CachedAnswer]] = {}
        self._refusals_lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def close(self) -> None:
        self.inner.close()

    # -- the request path ----------------------------------------------------------------------

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        call = UpstreamCall.of(request, self.governance.policy.scope)
        try:
            return share(self._send(request, call, kwargs))
        except (UpstreamError, UpstreamUnreachable, CircuitOpenError) as err:
            scope = getattr(_observed, "scope", None)
            if scope is not None:
                scope[1].append(err)
            raise

    def _send(self, request: requests.PreparedRequest, call: UpstreamCall, kwargs: dict) -> requests.Response:
        if call.kind != CHART:
            return self._upstream(request, call, kwargs)[0]
        remembered = self._remembered(call)
        if remembered is not None:
            self._count(refusals_remembered=1)
            return _from_memory(request, remembered)
        cache = self.governance.cache
        if cache is None:
            return self._fetch_and_remember(request, call, kwargs)[0]
        refresh = is_refreshing()
        # One pooled connection per request: the key's lock, the lookup and the fill. A hit waits
        # only while another process fills the same key, and then gets its answer.
        with cache.filling(call) as fill:
            answer = None if refresh else fill.get()
            if answer is None:
                if refresh:
                    self._count(cache_refreshes=1)
                response, judgement = self._fetch_and_remember(request, call, kwargs, via=fill.connection)
                if judgement.verdict is Verdict.OK and response.status_code == 200:
                    policy = self.governance.policy
                    ttl = call.cache_ttl_s(policy.cache_past_ttl_s, policy.cache_recent_ttl_s)
                    fill.put(_answer_of(response), ttl)
                return response
        self._count(cache_hits=1)
        return _from_memory(request, answer)

    def _fetch_and_remember(self, request, call: UpstreamCall, kwargs: dict,
                            via: Connection | None = None) -> tuple[requests.Response, Judgement]:
        response, judgement = self._upstream(request, call, kwargs, via)
        if judgement.verdict is Verdict.PERMANENT and response.status_code in _REMEMBERED_STATUSES:
            with self._refusals_lock:
                expires = time.monotonic() + self.governance.policy.refusal_memory_s
                self._refusals[call.cache_key] = (expires, _answer_of(response))
        return response, judgement

    def _remembered(self, call: UpstreamCall) -> CachedAnswer | None:
        with self._refusals_lock:
            entry = self._refusals.get(call.cache_key)
        return entry[1] if entry and entry[0] > time.monotonic() else None

    def _upstream(self, request, call: UpstreamCall, kwargs: dict,
                  via: Connection | None = None) -> tuple[requests.Response, Judgement]:
        policy = self.governance.policy
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.max_retries + 1) | _TooLongToWait(policy.max_retry_after_s),
            wait=_BackoffOrRetryAfter(policy.backoff_base_s, policy.backoff_max_s),
            retry=tenacity.retry_if_exception_type(_Transient),
            before_sleep=lambda state: self._count(retries=1),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._attempt, request, call, kwargs, via)
        except _Transient as failure:
            attempts = retrying.statistics.get("attempt_number", policy.max_retries + 1)
            if failure.judgement.verdict is Verdict.EMPTY and failure.response is not None:
                # Hand the empty answer to yfinance: the client reports it as a failure ("no bars
                # for a window with sessions"), never as a day without trading.
                return failure.response, failure.judgement
            error = UpstreamError(call, failure.judgement, attempts)
            if failure.judgement.verdict is Verdict.THROTTLED:
                self.governance.breaker.record_failure(str(error))  # one failure per exhausted request
            raise error from failure.__cause__

    def _attempt(self, request, call: UpstreamCall, kwargs: dict,
                 via: Connection | None = None) -> tuple[requests.Response, Judgement]:
        governance = self.governance
        admission = self._admit(via)
        waited = governance.limiter.acquire()
        began = time.perf_counter()
        try:
            response = self.inner.send(request, **kwargs)
            response.content  # read the whole body now: a truncated one must fail inside the retry
        except Exception as err:
            self._sent(call, time.perf_counter() - began, waited)
            self._count(failed_attempts=1)
            cause = f"{call.label}: {type(err).__name__}: {err}"
            governance.breaker.record(admission, ok=False, cause=cause)
            if _unreachable(err):
                raise UpstreamUnreachable(cause) from err
            if isinstance(err, (requests.RequestException, urllib3.exceptions.HTTPError, OSError)):
                raise _Transient(Judgement(Verdict.FAILED, f"{type(err).__name__}: {err}")) from err
            raise
        self._sent(call, time.perf_counter() - began, waited)
        judgement = judge(call, response)
        verdict = judgement.verdict
        if verdict in (Verdict.OK, Verdict.PERMANENT):
            governance.breaker.record(admission, ok=True)
            return response, judgement
        if verdict is Verdict.THROTTLED:
            self._count(http_429=1)
            # Everyone waits out Retry-After (capped: a longer one fails this request instead,
            # and repeated failures open the breaker rather than parking every process for hours).
            told = judgement.retry_after_s or governance.policy.backoff_base_s
            governance.limiter.hold(min(told, governance.policy.max_retry_after_s))
            if admission.probe:
                governance.breaker.record(admission, ok=False, cause=f"{call.label}: {judgement.reason}")
        elif verdict is Verdict.EMPTY:
            self._count(empty_answers=1)
            if admission.probe:  # Yahoo answered: that is recovery enough for the breaker
                governance.breaker.record(admission, ok=True)
        else:
            self._count(failed_attempts=1)
            governance.breaker.record(admission, ok=False, cause=f"{call.label}: {judgement.reason}")
        raise _Transient(judgement, response)

    def _admit(self, via: Connection | None = None) -> Admission:
        """Admission from the breaker. While a probe is in flight (half-open), wait for its outcome
        for up to the probe timeout rather than failing: the probe is likely to close it."""
        breaker = self.governance.breaker
        deadline = time.monotonic() + breaker.policy.probe_timeout_s
        while True:
            try:
                return breaker.admit(via)
            except CircuitOpenError as err:
                if err.state != HALF_OPEN or time.monotonic() >= deadline:
                    raise
                self._sleep(min(0.25, max(err.retry_in_s, 0.01)))

    # -- metrics -------------------------------------------------------------------------------

    def _traces(self) -> list[Trace]:
        scope = getattr(_observed, "scope", None)
        return [self.totals] if scope is None or scope[0] is None else [self.totals, scope[0]]

    def _count(self, **counts: float) -> None:
        for trace in self._traces():
            trace.add(**counts)

    def _sent(self, call: UpstreamCall, latency_s: float, waited_s: float) -> None:
        for trace in self._traces():
            trace.sent(call, latency_s, waited_s)


def govern(session: requests.Session, governance: Governance) -> requests.Session:
    """Mount a GovernedAdapter over each of `session`'s transports (in place; idempotent)."""
    for prefix, adapter in list(session.adapters.items()):
        if not isinstance(adapter, GovernedAdapter):
            session.mount(prefix, GovernedAdapter(adapter, governance))
    return session


def _answer_of(response: requests.Response) -> CachedAnswer:
    return CachedAnswer(response.status_code, response.headers.get("Content-Type", "application/json"),
                        response.content)


def _from_memory(request: requests.PreparedRequest, answer: CachedAnswer) -> requests.Response:
    return wire_response(request, answer.status, answer.body, [
        ("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body))), ("X-Cache", "HIT"),
    ])


def _unreachable(err: BaseException) -> bool:
    """Refused, unresolvable or proxy-refused connections: the host cannot be reached at all.
    (Timeouts are not: they are retried.) requests hides urllib3's cause in `args[0].reason`."""
    pending, seen = [err], set()
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, requests.Timeout):
            return False
        if isinstance(current, (ConnectFailed, requests.exceptions.ProxyError, urllib3.exceptions.NewConnectionError,
                                urllib3.exceptions.ProxyError, ConnectionRefusedError)):
            return True
        pending.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        pending.extend(arg for arg in current.args if isinstance(arg, BaseException))
    return False
