"""The live transport: Yahoo over curl_cffi (Chrome's TLS fingerprint) behind a `requests` adapter.

yfinance prefers curl_cffi because Yahoo blocks or throttles clients whose TLS handshake does not
look like a browser's. The governance lives in a `requests` transport adapter, so the live
transport is one too: it hands each prepared request (cookies already attached by the requests
session) to a curl_cffi session impersonating Chrome and turns the answer back into a
`requests.Response`. Without curl_cffi it falls back to requests' own HTTPAdapter.

curl_cffi's errors become requests' (Timeout, ConnectionError, ...) so the governed transport
classifies them like any other; `ConnectFailed` marks connections that could not be made at all.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from stock_assets.yahoo.wire import USER_AGENT, wire_response

# curl error codes for "could not connect at all": couldn't resolve proxy / host, couldn't connect.
_CONNECT_FAILED_CODES = frozenset({5, 6, 7})
# Headers describing the encoded wire body; curl hands us the decoded body.
_WIRE_ONLY = frozenset({"content-encoding", "transfer-encoding", "content-length"})


class ConnectFailed(requests.exceptions.ConnectionError):
    """No connection could be established (DNS, refused, proxy)."""


class CurlCffiAdapter(BaseAdapter):
    """Sends through curl_cffi impersonating `impersonate`; one curl session per thread, because
    curl handles are not shared between threads. Cookies stay in the requests session."""

    def __init__(self, impersonate: str = "chrome") -> None:
        super().__init__()
        self.impersonate = impersonate
        self._local = threading.local()

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: dict | None = None) -> requests.Response:
        from curl_cffi.requests import exceptions as curl_errors

        session = self._session()
        session.cookies.clear()  # the Cookie header below is the requests session's, and only it
        proxy = (proxies or {}).get(request.url.split(":", 1)[0]) if proxies else None
        try:
            answer = session.request(
                request.method, request.url, headers=dict(request.headers), data=request.body,
                timeout=timeout if not isinstance(timeout, tuple) else sum(t or 0 for t in timeout) or None,
                proxy=proxy, verify=verify, allow_redirects=False,
            )
        except curl_errors.Timeout as err:
            raise requests.exceptions.ReadTimeout(str(err), request=request) from err
        except (curl_errors.ChunkedEncodingError, curl_errors.IncompleteRead) as err:
            raise requests.exceptions.ChunkedEncodingError(str(err), request=request) from err
        except curl_errors.RequestException as err:
            if getattr(err, "code", None) in _CONNECT_FAILED_CODES or isinstance(err, curl_errors.DNSError):
                raise ConnectFailed(str(err), request=request) from err
            raise requests.exceptions.ConnectionError(str(err), request=request) from err
        body = answer.content
        headers = [(name, value) for name, value in answer.headers.multi_items() if name.lower() not in _WIRE_ONLY]
        headers.append(("Content-Length", str(len(body))))
        return wire_response(request, answer.status_code, body, headers)

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

    def _session(self):
        session = getattr(self._local, "session", None)
        if session is None:
            from curl_cffi import requests as curl

            session = self._local.session = curl.Session(impersonate=self.impersonate)
        return session


def live_session() -> requests.Session:
    """A requests session for Yahoo: curl_cffi underneath when available, plain HTTP otherwise."""
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    try:
        import curl_cffi  # noqa: F401
    except ImportError:
        adapter: BaseAdapter = HTTPAdapter()
    else:
        adapter = CurlCffiAdapter()
        # curl_cffi sends Chrome's own headers (User-Agent, Accept, Accept-Encoding) with its
        # fingerprint and decodes the body itself; requests' defaults would contradict both.
        session.headers.clear()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
