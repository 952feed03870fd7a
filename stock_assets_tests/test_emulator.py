"""The Yahoo emulator: the replay's payloads, its own rate limit, and the faults it injects."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import requests
import yfinance as yf
from yfinance.data import YfData

from stock_assets.testing.yahoo_emulator import TOO_MANY_REQUESTS, YahooEmulator
from stock_assets.yahoo.replay import replay_session
from stock_assets.yahoo.wire import redirected_session

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

CHART = "https://query2.finance.yahoo.com/v8/finance/chart/"
WINDOW = {"period1": "1577941200", "period2": "1580533200", "interval": "1d"}  # 2020-01-02..2020-02-01 NY


def _get(session: requests.Session, symbol: str, **params: str) -> requests.Response:
    return session.get(CHART + symbol, params=params or WINDOW, timeout=5)


def test_it_enforces_its_own_limit_with_429_and_retry_after():
    emulator = YahooEmulator(rate_per_s=2.0, burst=2)
    session = emulator.session()
    statuses = [_get(session, "AAPL").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]  # the burst, then nothing before 1/rate has passed
    refused = _get(session, "AAPL")
    assert refused.content == TOO_MANY_REQUESTS
    assert int(refused.headers["Retry-After"]) >= 1
    assert emulator.throttled == 3
    assert [e.status for e in emulator.requests_of("history")] == [200, 200, 429, 429, 429]


def test_a_storm_refuses_everything_for_a_while():
    emulator = YahooEmulator(rate_per_s=1000, burst=100)
    emulator.storm(5)
    response = _get(emulator.session(), "MSFT")
    assert response.status_code == 429 and response.headers["Retry-After"] == "5"


def test_faults_hit_only_the_chosen_symbols_and_only_as_often_as_asked():
    emulator = YahooEmulator(rate_per_s=1000, burst=100)
    emulator.inject("5xx", symbols=["AAPL"], times=2, status=502)
    emulator.inject("delisted", symbols=["ZZZZ"])
    session = emulator.session()
    assert [_get(session, "AAPL").status_code for _ in range(3)] == [502, 502, 200]
    assert _get(session, "MSFT").status_code == 200
    delisted = _get(session, "ZZZZ")
    assert delisted.status_code == 404
    assert delisted.json()["chart"]["error"]["description"] == "No data found, symbol may be delisted"


def test_truncated_empty_and_timeout_faults_in_process():
    emulator = YahooEmulator(rate_per_s=1000, burst=100)
    emulator.inject("truncated", symbols=["AAPL"], times=1)
    emulator.inject("empty", symbols=["MSFT"], times=1)
    emulator.inject("timeout", symbols=["XOM"], times=1)
    session = emulator.session()
    truncated = _get(session, "AAPL")
    assert int(truncated.headers["Content-Length"]) > len(truncated.content)
    with pytest.raises(ValueError):
        json.loads(truncated.content)
    empty = _get(session, "MSFT").json()["chart"]["result"][0]
    assert "timestamp" not in empty and empty["meta"]["symbol"] == "MSFT"
    assert _get(session, "MSFT", range="1d", interval="1d").json()["chart"]["result"][0]["timestamp"]
    with pytest.raises(requests.exceptions.ReadTimeout):
        _get(session, "XOM")
    assert _get(session, "XOM").status_code == 200


def test_over_loopback_http_faults_look_like_a_network_would_show_them():
    emulator = YahooEmulator(rate_per_s=1000, burst=100, timeout_delay_s=0.5)
    emulator.inject("truncated", symbols=["AAPL"], times=1)
    emulator.inject("timeout", symbols=["XOM"], times=1)
    with emulator.serve() as url:
        session = redirected_session(url)
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            _get(session, "AAPL")
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(CHART + "XOM", params=WINDOW, timeout=0.2)
        assert _get(session, "AAPL").status_code == 200
        assert url.startswith("http://127.0.0.1:")
    assert [e.kind for e in emulator.log] == ["history"] * 3


def test_yfinance_reads_the_served_emulator_exactly_like_the_replay(state_dir):
    hide = yf.config.debug.hide_exceptions
    yf.config.debug.hide_exceptions = False
    frames = []
    emulator = YahooEmulator(rate_per_s=1000, burst=100)
    try:
        with emulator.serve() as url:
            for session in (replay_session(), redirected_session(url)):
                YfData.cache_get.cache_clear()
                frames.append(yf.Ticker("AAPL", session=session).history(
                    start="2020-08-03", end="2020-09-03", auto_adjust=False, actions=True))
    finally:
        yf.config.debug.hide_exceptions = hide
        YfData.cache_get.cache_clear()
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert frames[1]["Stock Splits"].max() == 4.0  # AAPL 4:1 on 2020-08-31
    assert len(emulator.requests_of("history", "AAPL")) == 1
    assert dt.date(2020, 9, 2) == frames[1].index[-1].date()
