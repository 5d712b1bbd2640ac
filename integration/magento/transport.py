"""One place that sends a request to a store and turns transport failures into our errors."""

from __future__ import annotations

import logging

import requests

from .errors import BadStoreResponse, StoreTimeout, StoreUnreachable

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024


def send(session: requests.Session, method: str, url: str, *, timeout, **kwargs) -> requests.Response:
    """``session.request`` that never follows a redirect and reads at most ``MAX_BODY_BYTES``."""
    try:
        response = session.request(method, url, timeout=timeout, allow_redirects=False, stream=True, **kwargs)
        content = bytearray()
        for chunk in response.iter_content(64 * 1024):
            content += chunk
            if len(content) > MAX_BODY_BYTES:
                response.close()
                raise BadStoreResponse(f"the store's answer to {method} {_path(url)} is larger than {MAX_BODY_BYTES} bytes")
        response._content = bytes(content)
    except requests.Timeout:
        raise StoreTimeout(f"the store did not answer {method} {_path(url)} within {timeout_text(timeout)}") from None
    # The socket's own words stay in our log: "connection refused" here and "timed out" there
    # would let whoever asked map hosts and ports they cannot reach themselves.
    except requests.exceptions.SSLError as exc:
        log.warning("TLS with %s failed: %s", _path(url), _reason(exc))
        raise StoreUnreachable("the TLS handshake with the store failed") from None
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        log.warning("connection to %s failed: %s", _path(url), _reason(exc))
        raise StoreUnreachable("could not connect to the store") from None
    except requests.RequestException as exc:  # malformed URL, bad headers, content decoding...
        log.warning("request to %s failed: %s", _path(url), _reason(exc))
        raise StoreUnreachable("could not talk to the store") from None
    if 300 <= response.status_code < 400:
        location = response.headers.get("Location", "")
        raise BadStoreResponse(
            f"the store answered {method} {_path(url)} with a redirect ({response.status_code}) to {location[:200]}",
            hint="Use the address the store redirects to as its base URL (https, www or not, index.php/).",
            status=response.status_code,
        )
    return response


def timeout_text(timeout) -> str:
    if isinstance(timeout, tuple):
        return f"{timeout[-1]:g} s"
    return f"{timeout:g} s"


def _path(url: str) -> str:
    return url.split("?", 1)[0]


def _reason(exc: Exception) -> str:
    # urllib3 nests the root cause a few levels deep; the innermost text is the useful one.
    cause = exc
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    text = str(cause) or type(cause).__name__
    return text[:300]
