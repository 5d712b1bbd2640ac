"""A signed REST client for one Magento store.

Every call is signed (HMAC-SHA256, all ``oauth_*`` in the Authorization header) under the
store's signature profile. When the store answers "The signature is invalid" and another
profile would sign *this* request differently, the call is re-signed under that profile
(fresh nonce) and the profile that worked is remembered.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote

import requests

from . import errors, signing
from .oauth import magento_auth
from .search import SearchCriteria
from .store_url import StorePolicy, normalise_base_url, safe_session
from .transport import send

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
MAX_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class Credentials:
    """The four values that sign a REST call."""

    consumer_key: str
    consumer_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    access_token_secret: str = field(repr=False)


def segment(value: object) -> str:
    """One path segment (a SKU, an id), percent-encoded: ``ABC/10`` becomes ``ABC%2F10``."""
    return quote(str(value), safe="-._~")


def query_string(pairs: Iterable[tuple[str, object]] | Mapping[str, object]) -> str:
    """``name=value`` pairs as Magento verifies them: ``%20`` not ``+``, every name once."""
    items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
    seen: set[str] = set()
    out = []
    for name, value in items:
        if name in seen:
            raise ValueError(f"query parameter {name!r} given twice; Magento only sees the last one. "
                             "Use explicit indexes (name[0], name[1]) instead.")
        seen.add(name)
        out.append(f"{signing.enc(str(name))}={signing.enc('' if value is None else str(value))}")
    return "&".join(out)


class StoreClient:
    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        profile: str | None = None,
        store_code: str = "default",
        session: requests.Session | None = None,
        policy: StorePolicy | None = None,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        retries: int = 3,
        backoff: float = 0.5,
        on_profile: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 10,
        deadline: float | None = None,
    ):
        self.base_url = normalise_base_url(base_url)
        self.credentials = credentials
        self.profile = profile or signing.PROFILE_248
        self.profile_known = profile is not None
        self.store_code = store_code
        self.session = session or safe_session(policy or StorePolicy(), pool_size=pool_size)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.on_profile = on_profile
        self.sleep = sleep
        #: Seconds one call may take in all, retries and their waits included (None: no bound
        #: beyond ``timeout`` per attempt and ``retries``).
        self.deadline = deadline

    # --- URLs -------------------------------------------------------------------------

    def url(self, path: str, store_code: str | None = None) -> str:
        """``{base}rest/{store}/V1/{path}``; the base keeps any ``index.php/`` or store segment."""
        path = path.lstrip("/")
        if path.startswith("V1/"):
            path = path[3:]
        return f"{self.base_url}rest/{store_code or self.store_code}/V1/{path}"

    # --- calls ------------------------------------------------------------------------

    def get(self, path: str, params=None, **kw):
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, json=None, **kw):
        return self.request("POST", path, json=json, **kw)

    def put(self, path: str, json=None, **kw):
        return self.request("PUT", path, json=json, **kw)

    def delete(self, path: str, **kw):
        return self.request("DELETE", path, **kw)

    def request(self, method: str, path: str, *, params=None, json=None, form=None,
                store_code: str | None = None):
        """Send a signed call and return Magento's decoded JSON answer."""
        response = self.request_raw(method, path, params=params, json=json, form=form, store_code=store_code)
        return self._decode(response, method.upper(), response.request.url)

    def request_raw(self, method: str, path: str, *, params=None, json=None, form=None,
                    store_code: str | None = None) -> requests.Response:
        """Send a signed call and return the store's answer as it came, whatever its status
        (signing, profile fallback and retries as for ``request``; transport failures raise)."""
        method = method.upper()
        url = self.url(path, store_code)
        if params:
            url += "?" + query_string(params)
        headers, body = {"Accept": "application/json"}, None
        if json is not None:
            headers["Content-Type"] = "application/json"
            body = jsonlib.dumps(json, separators=(",", ":"))
        elif form is not None:
            headers["Content-Type"] = signing.FORM_CONTENT_TYPE
            body = query_string(form)
        ends = time.monotonic() + self.deadline if self.deadline is not None else None
        return self._send_signed(method, url, headers, body, ends)

    def search(self, path: str, criteria: SearchCriteria, *, store_code: str | None = None) -> dict:
        return self.get(path, params=criteria.params(), store_code=store_code)

    def iter_search(self, path: str, criteria: SearchCriteria | None = None, *, page_size: int = 100,
                    concurrency: int = 1, store_code: str | None = None,
                    on_total: Callable[[int], None] | None = None) -> Iterator[dict]:
        """Every item of a search, page by page, in order.

        Pages are counted from ``total_count`` (Magento answers a page past the end with the
        last page again, so "stop at an empty page" would loop); with ``concurrency`` > 1 up to
        that many pages are fetched at once, never more held in memory.
        """
        base = (criteria or SearchCriteria()).copy()

        def page(n: int) -> dict:
            c = base.copy()
            c.page_size, c.current_page = page_size, n
            return self.search(path, c, store_code=store_code)

        first = page(1)
        total = int(first.get("total_count") or 0)
        if on_total:
            on_total(total)
        pages = max((total + page_size - 1) // page_size, 1)
        yield from first.get("items") or []
        if pages == 1:
            return
        if concurrency <= 1:
            for n in range(2, pages + 1):
                yield from page(n).get("items") or []
            return
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            pending: deque = deque()
            next_page = 2
            while next_page <= pages or pending:
                while next_page <= pages and len(pending) < concurrency:
                    pending.append(pool.submit(page, next_page))
                    next_page += 1
                yield from pending.popleft().result().get("items") or []

    def magento_version(self) -> str:
        """``{base}magento_version``: unsigned, e.g. ``Magento/2.4 (Community)``."""
        response = send(self.session, "GET", self.base_url + "magento_version", timeout=self.timeout)
        if response.status_code != 200 or len(response.content) > 200:
            raise errors.BadStoreResponse(f"magento_version answered HTTP {response.status_code}",
                                          status=response.status_code)
        return response.content.decode("utf-8", "replace").strip()

    # --- internals --------------------------------------------------------------------

    def _auth(self, profile: str):
        c = self.credentials
        return magento_auth(c.consumer_key, c.consumer_secret, c.access_token, c.access_token_secret,
                            profile=profile)

    def _send_signed(self, method: str, url: str, headers: dict, body: str | None,
                     ends: float | None) -> requests.Response:
        response = self._send_with_retries(method, url, headers, body, self.profile, ends)
        content_type = headers.get("Content-Type")
        others = [p for p in signing.PROFILES if p != self.profile]
        if response.status_code == 401 and _signature_rejected(response):
            signed_as = _probe_base(self.profile, method, url, body, content_type)
            for profile in others:
                probe = _probe_base(profile, method, url, body, content_type)
                if probe is None or probe == signed_as:
                    continue  # this profile would send the very same signature
                retry = self._send_with_retries(method, url, headers, body, profile, ends)
                if not (retry.status_code == 401 and _signature_rejected(retry)):
                    if retry.status_code < 400:
                        self._confirm(profile)
                    return retry
            return response
        # A success only tells which generation the store runs if the profiles disagree here.
        if response.status_code < 400 and not self.profile_known:
            signed_as = _probe_base(self.profile, method, url, body, content_type)
            if any(_probe_base(p, method, url, body, content_type) != signed_as for p in others):
                self._confirm(self.profile)
        return response

    def _confirm(self, profile: str) -> None:
        changed = profile != self.profile or not self.profile_known
        self.profile, self.profile_known = profile, True
        if changed and self.on_profile:
            self.on_profile(profile)

    def _send_with_retries(self, method, url, headers, body, profile, ends: float | None) -> requests.Response:
        attempt = 0
        while True:
            try:
                # A new auth per attempt: a fresh nonce, since Magento burns one even on failure.
                response = send(self.session, method, url, timeout=self._attempt_timeout(ends, method, url),
                                headers=headers, data=body.encode("utf-8") if body is not None else None,
                                auth=self._auth(profile))
            except errors.StoreUnreachable as exc:
                if method not in IDEMPOTENT or attempt >= self.retries or \
                        not self._wait(self._delay(attempt, None), ends):
                    if isinstance(exc, errors.StoreTimeout) and ends is not None and time.monotonic() >= ends:
                        raise self._past_deadline(method, url) from None
                    raise
                attempt += 1
                continue
            if response.status_code in RETRYABLE_STATUS and method in IDEMPOTENT and attempt < self.retries:
                if self._wait(self._delay(attempt, response.headers.get("Retry-After")), ends):
                    attempt += 1
                    continue
            return response

    def _attempt_timeout(self, ends: float | None, method: str, url: str):
        if ends is None:
            return self.timeout
        left = ends - time.monotonic()
        if left <= 0:
            raise self._past_deadline(method, url)
        if isinstance(self.timeout, tuple):
            return tuple(min(t, left) for t in self.timeout)
        return min(self.timeout, left)

    def _past_deadline(self, method: str, url: str) -> errors.StoreTimeout:
        return errors.StoreTimeout(f"the store did not answer {method} {url.split('?')[0]} within {self.deadline:g} s")

    def _wait(self, seconds: float, ends: float | None) -> bool:
        """Sleep before a retry, unless that would leave no time for it before the deadline."""
        if ends is not None and time.monotonic() + seconds >= ends:
            return False
        self.sleep(seconds)
        return True

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            seconds = _retry_after_seconds(retry_after)
            if seconds is not None:
                return min(seconds, MAX_RETRY_AFTER)
        # Exponential backoff with full jitter.
        return random.uniform(0, self.backoff * (2 ** attempt))

    def _decode(self, response: requests.Response, method: str, url: str):
        try:
            payload = response.json() if response.content else None
        except ValueError:
            payload = None
            if response.status_code < 400:
                raise errors.BadStoreResponse(
                    f"{method} {url.split('?')[0]} answered HTTP {response.status_code} with a body that is not JSON",
                    status=response.status_code) from None
        if response.status_code < 400:
            return payload
        raise api_error(response.status_code, payload, method, url)


def _probe_base(profile: str, method: str, url: str, body: str | None, content_type: str | None) -> str | None:
    probe = [("oauth_consumer_key", "k"), ("oauth_nonce", "n"), ("oauth_signature_method", signing.SIGNATURE_METHOD),
             ("oauth_timestamp", "1"), ("oauth_token", "t"), ("oauth_version", "1.0")]
    try:
        return signing.base_string(profile, method, url, probe, body, content_type)
    except signing.UnsignableRequest:
        return None


def _signature_rejected(response: requests.Response) -> bool:
    return b"signature is invalid" in response.content[:2000].lower()


def _retry_after_seconds(value: str) -> float | None:
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def api_error(status: int, payload, method: str, url: str) -> errors.ApiError:
    """The typed error for a REST error answer, placeholders filled in."""
    where = f"{method} {url.split('?')[0]}"
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        message = errors.fill_placeholders(payload["message"], payload.get("parameters"))
        details = [errors.fill_placeholders(e.get("message", ""), e.get("parameters"))
                   for e in payload.get("errors") or [] if isinstance(e, dict)]
        parameters = payload.get("parameters")
    else:
        message, details, parameters = f"{where} answered HTTP {status}", [], None
    lowered = message.lower()
    if status == 400:
        cls = errors.BadRequest
    elif status == 401:
        if "signature is invalid" in lowered:
            cls = errors.SignatureRejected
        elif "isn't authorized" in lowered or "not authorized" in lowered:
            cls = errors.NotAuthorized
        elif any(s in lowered for s in ("revoked", "not associated", "does not exist", "not an access token")):
            cls = errors.TokenRevoked
        else:
            cls = errors.Unauthorized
    elif status == 404:
        cls = errors.NotFound
    elif status == 429:
        cls = errors.RateLimited
    elif status >= 500:
        cls = errors.ServerError
    else:
        cls = errors.ApiError
    if details:
        message += " (" + "; ".join(details) + ")"
    return cls(message, status=status, parameters=parameters, errors=details)
