"""What every Yahoo transport shares: the browser identity, responses built as from the wire, and
a session that sends Yahoo's requests to another base URL."""

from __future__ import annotations

import http.client
import io
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


def wire_response(
    request: requests.PreparedRequest, status: int, body: bytes, headers: Iterable[tuple[str, str]]
) -> requests.Response:
    """A `requests.Response` with exactly `headers` and `body`, as `HTTPAdapter` builds one from the
    wire (cookies included). Other transports (the emulator, the response cache, the curl_cffi
    adapter) use it to hand yfinance answers it cannot tell from a socket's."""
    headers = list(headers)
    reason = HTTPStatus(status).phrase
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    wire = http.client.HTTPResponse(_WireSocket(head.encode("latin-1") + body), method=request.method)
    wire.begin()

    response = requests.Response()
    response.status_code = status
    response.reason = reason
    response.headers = CaseInsensitiveDict(headers)
    response.encoding = get_encoding_from_headers(response.headers)
    response.url = request.url or ""
    response.request = request
    response.raw = urllib3.HTTPResponse(
        body=wire,
        headers=headers,
        status=status,
        reason=reason,
        preload_content=False,
        original_response=wire,
        request_method=request.method,
        request_url=request.url,
    )
    response._content = body
    return response


class _WireSocket:
    """Just enough of a socket for `http.client.HTTPResponse` to parse bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self._data))


class RedirectAdapter(HTTPAdapter):
    """Sends https://HOST/PATH?Q to BASE/HOST/PATH?Q (an upstream other than Yahoo's hosts: a proxy,
    or the Yahoo emulator of the tests and benchmarks, `stock_assets.testing.yahoo_emulator`).
    Cookies are still matched against the original (Yahoo) URL by the requests session."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        routed = request.copy()
        routed.url = f"{self.base_url}/{url.hostname}{url.path or '/'}" + (f"?{url.query}" if url.query else "")
        kwargs["proxies"] = {}
        response = super().send(routed, **kwargs)
        response.request, response.url = request, request.url
        return response


def session_over(adapter: BaseAdapter) -> requests.Session:
    """A requests session with a browser's User-Agent whose every http(s) request goes to `adapter`."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def redirected_session(base_url: str) -> requests.Session:
    """A requests session whose every request goes to `base_url` instead of Yahoo's hosts."""
    return session_over(RedirectAdapter(base_url))
