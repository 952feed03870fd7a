"""The live transport (curl_cffi with Chrome's fingerprint behind a requests adapter), checked
against the emulator served on loopback: statuses, headers, cookies and failures arrive the way
the governed transport expects them."""

from __future__ import annotations

import socket

import pytest
import requests

pytest.importorskip("curl_cffi")

from stock_assets.testing.yahoo_emulator import YahooEmulator  # noqa: E402
from stock_assets.yahoo.live import ConnectFailed, CurlCffiAdapter  # noqa: E402
from stock_assets.yahoo.transport import _unreachable  # noqa: E402


@pytest.fixture
def served():
    emulator = YahooEmulator(rate_per_s=1000, burst=2)
    with emulator.serve() as url:
        session = requests.Session()
        session.headers.clear()
        session.mount("http://", CurlCffiAdapter())
        yield emulator, url, session


def test_answers_headers_and_cookies_come_through(served):
    emulator, url, session = served
    cookie = session.get(f"{url}/fc.yahoo.com/", timeout=5)
    assert cookie.status_code == 404  # Yahoo's cookie page is a 404 that sets A3
    # The cookie is for .yahoo.com; had the request gone to fc.yahoo.com, requests would keep it.
    jar = requests.cookies.RequestsCookieJar()
    requests.cookies.extract_cookies_to_jar(jar, requests.Request("GET", "https://fc.yahoo.com/").prepare(),
                                            cookie.raw)
    assert [c.name for c in jar] == ["A3"]
    chart = session.get(f"{url}/query2.finance.yahoo.com/v8/finance/chart/AAPL",
                        params={"range": "5d", "interval": "1d"}, timeout=5)
    assert chart.status_code == 200 and len(chart.json()["chart"]["result"][0]["timestamp"]) == 5
    assert int(chart.headers["Content-Length"]) == len(chart.content)
    emulator.storm(3)
    refused = session.get(f"{url}/query2.finance.yahoo.com/v1/test/getcrumb", timeout=5)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"


def test_failures_become_requests_exceptions(served):
    emulator, url, session = served
    emulator.inject("truncated", symbols=["AAPL"], times=1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        session.get(f"{url}/query2.finance.yahoo.com/v8/finance/chart/AAPL", params={"range": "1d"}, timeout=5)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(ConnectFailed) as raised:
        session.get(f"http://127.0.0.1:{closed}/x", timeout=5)
    assert _unreachable(raised.value)
