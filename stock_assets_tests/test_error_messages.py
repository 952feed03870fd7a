"""What an operator reads when a quote cannot be had: the real reason, not a guess."""

from __future__ import annotations

import datetime as dt

import pytest
import requests
import yfinance as yf

from stock_assets.defs.quotes.resources import QuoteClient, TickerFetchError
from stock_assets.yahoo.http_calls import UpstreamCall, Verdict, judge

CHART_URL = "https://query2.finance.yahoo.com/v8/finance/chart/AAPL?period1=1577836800&period2=1580515200&interval=1d"


def _response(body: bytes, content_type: str, status: int = 200) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers["Content-Type"] = content_type
    response.url = CHART_URL
    return response


def _chart_call() -> UpstreamCall:
    return UpstreamCall.of(requests.Request("GET", CHART_URL).prepare(), scope="yahoo")


def test_an_html_page_is_named_as_such_not_as_a_truncated_body():
    page = b"<!DOCTYPE html><html><head><title>Yahoo - Will be right back</title></head><body>...</body></html>"
    judgement = judge(_chart_call(), _response(page, "text/html; charset=utf-8"))
    assert judgement.verdict == Verdict.FAILED
    assert judgement.reason == "an HTML page instead of chart JSON ('Yahoo - Will be right back')"
    cut = judge(_chart_call(), _response(b'{"chart": {"result": [{"meta"', "application/json"))
    assert "truncated body" in cut.reason  # a cut JSON answer is still called what it is


def test_a_symbol_missing_from_the_replay_is_not_called_delisted(state_dir):
    """ABT is an S&P 500 member the bundled archive did not record."""
    with pytest.raises(TickerFetchError) as raised:
        QuoteClient(source="replay").daily_bars("ABT", dt.date(2020, 1, 2), dt.date(2020, 1, 31))
    message = str(raised.value)
    assert "delisted" not in message
    assert message.startswith("ABT: not in the bundled replay archive")
    assert "STOCK_ASSETS_QUOTE_SOURCE=yahoo" in message


def test_a_symbol_missing_from_the_replay_is_not_called_delisted_when_its_time_zone_is_cached(state_dir):
    """With the time zone in yfinance's cache, yfinance asks the chart directly and gets its 404
    ("No data found, symbol may be delisted"): still named as missing from the replay."""
    yf.cache.get_tz_cache().store("ABT", "America/New_York")
    with pytest.raises(TickerFetchError) as raised:
        QuoteClient(source="replay").daily_bars("ABT", dt.date(2020, 1, 2), dt.date(2020, 1, 31))
    assert str(raised.value).startswith("ABT: not in the bundled replay archive")


def test_the_cli_shows_the_live_source_hint_under_dagsters_wrappers():
    """A run that fails because Yahoo cannot be reached: the CLI's one line is the quote client's
    own message, with its hint (it was the last of 160+ lines before)."""
    import dagster as dg

    from stock_assets.defs.quotes.resources import _unreachable
    from stock_assets.tooling.cli import error_line

    @dg.op
    def fetch() -> None:
        try:
            raise requests.exceptions.ConnectionError("Could not resolve host: fc.yahoo.com")
        except requests.exceptions.ConnectionError as err:
            raise _unreachable("yahoo", err) from err

    @dg.job
    def fetching() -> None:
        fetch()

    with pytest.raises(Exception) as raised:  # noqa: PT011 - whatever Dagster raises is the CLI's input
        fetching.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    line = error_line(raised.value)
    assert "\n" not in line
    assert line.startswith("Live Yahoo Finance cannot be reached from this machine (ConnectionError:")
    assert line.endswith("set STOCK_ASSETS_QUOTE_SOURCE=replay to use the bundled recorded data.")
