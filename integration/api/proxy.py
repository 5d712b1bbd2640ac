"""The signing proxy: a caller's REST call, signed with a store's tokens and sent through the
one client factory, answered with the store's own status and JSON.

Our own JSON errors only where the store gave no answer we can pass on: unreachable, too
slow, token revoked (which also marks the link revoked), not linked, too busy.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from flask import g

from .. import store_cap, stores
from ..magento import errors as magento
from ..magento.client import api_error
from ..metrics import PROXY_CALLS, PROXY_SECONDS
from ..models import StoreLink
from . import cache as api_cache
from .errors import ApiProblem, InvalidRequest, NotFound, StoreBusy, store_problem

STORE_CODE = re.compile(r"^[a-z0-9_]{1,64}$")
#: What a path may contain as sent: RFC 3986 path characters and well-formed %XX escapes.
RAW_PATH = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$")
#: The answer's Content-Type says JSON (``application/json``, ``application/problem+json`` ...).
JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json\s*(?:;|$)", re.I)
#: Store headers worth passing on besides the body's type.
PASSED_HEADERS = ("Retry-After",)


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str | None
    store_status: str
    elapsed_ms: float
    headers: dict[str, str] = field(default_factory=dict)


def rest_path(raw_uri: str | None, decoded_tail: str) -> str:
    """The part after ``/V1/`` as the caller encoded it (``ABC%2F10`` stays one segment);
    ``InvalidRequest`` for dot segments, encoded or not, and for malformed paths."""
    tail = decoded_tail
    if raw_uri:
        path = urlsplit(raw_uri).path if raw_uri.startswith(("http://", "https://")) else raw_uri.split("?", 1)[0]
        # /api/v1/stores/{id}/rest/{code}/V1/{tail}: the first eight pieces are ours.
        pieces = path.split("/")
        tail = "/".join(pieces[8:])
        if len(pieces) <= 8 or pieces[7] != "V1" or unquote(tail) != decoded_tail:
            raise InvalidRequest("the path must be /api/v1/stores/{id}/rest/{store_code}/V1/{Magento path}",
                                 error_code="bad_path")
    if not tail or not RAW_PATH.match(tail):
        raise InvalidRequest("the Magento path after /V1/ is empty or has characters that must be percent-encoded",
                             error_code="bad_path")
    for segment in tail.split("/"):
        # %252e%252e is %2e%2e is ..: whoever decodes next must not see a dot segment. Checked as
        # sent and after each of up to three decodings (bounded: each pass costs the segment's length).
        for _ in range(4):
            if any(part in (".", "..") for part in re.split(r"[/\\]", segment)):
                raise InvalidRequest("dot segments (. and ..) are not allowed in the path", error_code="bad_path")
            decoded = unquote(segment)
            if decoded == segment:
                break
            segment = decoded
    return tail


def json_body(raw: bytes):
    """The caller's JSON body (None when empty); ``InvalidRequest`` if it is not JSON."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidRequest("the body is not JSON", error_code="bad_json") from None


def forward(link_id: int, caller, method: str, tail: str, store_code: str, params: list, body,
            remote_addr: str | None) -> Answer:
    """Send one call to store ``link_id`` (if ``caller`` may see it), under its concurrency cap
    and the store deadline."""
    if not STORE_CODE.match(store_code):
        raise InvalidRequest("store_code is a Magento store code: a-z, 0-9 and _", error_code="bad_path")
    try:
        return _forward(_callable(link_id, caller), caller, method, tail, store_code, params, body, remote_addr,
                        retry_on_change=True)
    except stores.LinkChanged:
        # Reauthorized (or unlinked) by another process since we cached it: once more, as it is now.
        api_cache.current().links.forget(link_id)
        return _forward(_callable(link_id, caller), caller, method, tail, store_code, params, body, remote_addr)


def _callable(link_id: int, caller) -> stores.CallableLink:
    links = api_cache.current().links
    link = links.get(link_id)
    if link is None:
        link = stores.callable_link(link_id)
        if link is not None:
            links.put(link_id, link)
    if link is None or not caller.sees(link.owner_id):  # someone else's store is as absent as a missing one
        raise NotFound(f"no store {link_id} for this key")
    g.api_store_link_id = link_id  # for the audit entry
    return link


def _forward(link: stores.CallableLink, caller, method: str, tail: str, store_code: str, params: list, body,
             remote_addr: str | None, *, retry_on_change: bool = False) -> Answer:
    started = elapsed = time.perf_counter()
    try:
        # Audited once per request by the API layer (method, path, status).
        with stores.contact_quietly(link, user=lambda: caller.owner, remote_addr=remote_addr,
                                    retry_on_change=retry_on_change) as client:
            try:
                with store_cap.current().hold(link.id):
                    started = time.perf_counter()
                    response = client.request_raw(method, "V1/" + tail, params=params or None, json=body,
                                                  store_code=store_code)
                    elapsed = time.perf_counter() - started
            except store_cap.StoreBusy as exc:
                PROXY_CALLS.labels("store_busy").inc()
                raise StoreBusy(exc.retry_after) from None
            _raise_if_revoked(response, method)
    except magento.MagentoError as exc:
        PROXY_SECONDS.observe(time.perf_counter() - started)
        status = StoreLink.REVOKED if isinstance(exc, magento.TokenRevoked) else link.status
        problem = store_problem(exc, headers={"X-Companion-Store-Status": status})
        PROXY_CALLS.labels(problem.error_code).inc()
        raise problem from None
    except ValueError as exc:  # a query parameter given twice
        PROXY_CALLS.labels("bad_request").inc()
        raise InvalidRequest(str(exc)) from None
    PROXY_SECONDS.observe(elapsed)
    content_type = response.headers.get("Content-Type", "")
    headers = {h: response.headers[h] for h in PASSED_HEADERS if h in response.headers}
    if response.content and not JSON_TYPE.match(content_type):
        # An error page from a proxy or PHP keeps its status (a 503 still says "back off");
        # a success that is not JSON is not Magento's.
        failed = response.status_code >= 400
        code = "store_http_error" if failed else "store_bad_response"
        PROXY_CALLS.labels(code).inc()
        raise ApiProblem(f"the store answered HTTP {response.status_code} with a body that is not JSON "
                         f"({content_type or 'no Content-Type'})", error_code=code,
                         status=response.status_code if failed else 502,
                         store_error={"type": "BadStoreResponse", "status": response.status_code,
                                      "message": response.text[:300], "hint": magento.BadStoreResponse.hint},
                         headers={"X-Companion-Store-Status": StoreLink.LINKED, **headers})
    PROXY_CALLS.labels(f"{response.status_code // 100}xx").inc()
    return Answer(response.status_code, response.content, content_type or None, StoreLink.LINKED,
                  elapsed * 1000, headers)


def _raise_if_revoked(response, method: str) -> None:
    """A 401 saying the token is gone is the only sign of a deleted integration: raised as
    ``TokenRevoked`` inside ``stores.contact``, which marks the link."""
    if response.status_code != 401:
        return
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = api_error(401, payload, method, response.request.url)
    if isinstance(error, magento.TokenRevoked):
        raise error
