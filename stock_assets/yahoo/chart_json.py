"""A chart answer's JSON, parsed once per response.

Three readers look at every chart answer: the governed transport (is it complete, an error, empty?),
the missing-volume watcher (`volumes.py`) and yfinance (`response.json()`). A 20-year answer is
about 300 KB; parsing it three times with the standard library cost ~7 ms per ticker, a tenth of
the fetch. `parsed(response)` parses it once, with orjson, and keeps the result on the response;
`share(response)` makes the response's own `json()` hand yfinance that same document, which the
response then forgets.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import requests

_PARSED = "_stock_assets_json"


def parsed(response: requests.Response) -> Any:
    """The response body as JSON (parsed on first use, then kept). Raises ValueError when it is not
    JSON (orjson's error is a json.JSONDecodeError)."""
    document = response.__dict__.get(_PARSED)
    if document is None:
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            # orjson is strict JSON; the standard library also reads NaN and Infinity, which a
            # hand-written or older recorded answer may hold (Yahoo itself writes null).
            document = json.loads(response.content)
        response.__dict__[_PARSED] = document
    return document


def share(response: requests.Response) -> requests.Response:
    """Let `response.json()` return the document `parsed` keeps (parsing it then if nobody has).
    A body that is not JSON raises what requests raises, so callers see no difference."""

    def json(**kwargs: Any) -> Any:
        if kwargs:  # a caller with its own decoder options gets requests' own parse
            return requests.Response.json(response, **kwargs)
        try:
            document = parsed(response)
        except ValueError:
            return requests.Response.json(response)
        # yfinance reads last: the response lets go of the document (a 20-year answer is ~2 MB of
        # Python objects, and yfinance keeps recent responses in a cache of its own).
        response.__dict__.pop(_PARSED, None)
        return document

    response.json = json  # type: ignore[method-assign]
    return response
