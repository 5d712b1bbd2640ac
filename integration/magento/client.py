"""A signed REST client for one Magento store.

Every call is signed (HMAC-SHA256, all ``oauth_*`` in the Authorization header) under the
store's signature profile. When the store answers "The signature is invalid" and another
profile would sign *this* request differently, the call is re-signed under that profile
(fresh nonce); nothing else is ever re-sent under another profile.

While a store's generation is not known, it is learnt from evidence only: an accepted
request rules out every profile that would have signed it differently (or not at all),
and the generation is known once a single profile is left.
"""

from __future__ import annotations

import email.utils
import functools
import json as jsonlib
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import requests

from . import errors, signing
from .oauth import magento_auth, signed_url
from .search import SearchCriteria
from .store_url import StorePolicy, normalise_base_url
from .transport import DEFAULT_DEADLINE, MAX_ANSWER_BYTES, Deadline, safe_session, send

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})
MAX_RETRY_AFTER = 60.0
# Store codes ("default", "all", a view's code) are letters, digits and underscores.
_STORE_CODE = re.compile(r"[A-Za-z0-9_]+")
#: A store's whole schema (every service the integration may call) is a few megabytes.
SCHEMA_MAX_BYTES = 16 * 1024 * 1024
#: Another attempt is only worth waiting for if at least this much of the deadline is left after the wait.
MIN_ATTEMPT = 1.0


@dataclass(frozen=True)
class Credentials:
    """The four values that sign a REST call."""

    consumer_key: str
    consumer_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    access_token_secret: str = field(repr=False)
    #: The signing object of each profile these credentials were used with (``StoreClient._auth``):
    #: it holds nothing but these four values, and goes with them.
    _auths: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)


def segment(value: object) -> str:
    """One path segment (a SKU, an id), percent-encoded: ``ABC/10`` becomes ``ABC%2F10``, and
    dots too, so that a SKU ``..`` (``%2E%2E``) is not read as "the parent folder"."""
    return quote(str(value), safe="-_~").replace(".", "%2E")  # quote() never escapes a dot


def rest_path(path: str) -> str:
    """A REST path (what follows ``/V1/``) as a person gives it: console, CLI, proxy.

    A ``.`` or ``..`` segment is refused, also percent-encoded (``%2e%2E``, ``%252e``) or
    behind an encoded slash: clients, proxies and servers resolve it, so ``../../x`` would
    reach any URL on the store's host. Raises ``UnsafePath``.
    """
    path = path.strip()
    if _has_dot_segment(path, decode=True):
        raise errors.UnsafePath(f"{path[:200]!r}: a '.' or '..' path segment is not allowed, "
                                "even percent-encoded; name the resource itself")
    return path


def _has_dot_segment(path: str, *, decode: bool) -> bool:
    route = path.split("?", 1)[0].split("#", 1)[0]
    while decode and "%" in route and unquote(route) != route:
        route = unquote(route)  # each pass is shorter, so this ends
    return any(part in (".", "..") for part in route.split("/"))


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
        deadline: Deadline | None = None,
        call_deadline: float = DEFAULT_DEADLINE,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        retries: int = 3,
        backoff: float = 0.5,
        on_profile: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 10,
        slot: Callable[[], AbstractContextManager] | None = None,
    ):
        self.base_url = normalise_base_url(base_url)
        self.credentials = credentials
        if profile is not None and profile not in signing.PROFILES:
            raise ValueError(f"unknown signature profile {profile!r}; expected one of {', '.join(signing.PROFILES)}")
        self.profile = profile or signing.PROFILES[0]
        #: The generations the store may run: those not ruled out by an accepted request.
        self.candidates: tuple[str, ...] = (profile,) if profile else signing.PROFILES
        self.store_code = store_code
        self.session = session or safe_session(policy or StorePolicy(), pool_size=pool_size)
        self.timeout = timeout
        # One user action shares ``deadline``; without one (an export), each call gets its own.
        self.deadline = deadline
        self.call_deadline = call_deadline
        self.max_answer_bytes = max_answer_bytes
        self.retries = retries
        self.backoff = backoff
        self.on_profile = on_profile
        self.sleep = sleep
        #: The maximum page size a store with input limits on stated when it refused a larger one.
        self.page_size_limit: int | None = None
        #: Held around each attempt (not across the waits between them): the caller's share of
        #: the store's concurrency cap, so long jobs and the proxy count against one limit.
        self.slot = slot or nullcontext

    @property
    def profile_known(self) -> bool:
        return self.candidates == (self.profile,)

    # --- URLs -------------------------------------------------------------------------

    def url(self, path: str, store_code: str | None = None) -> str:
        """``{base}rest/{store}/V1/{path}``; the base keeps any ``index.php/`` or store segment."""
        store_code = store_code or self.store_code
        if not _STORE_CODE.fullmatch(store_code):
            raise errors.UnsafePath(f"{store_code[:100]!r} is not a store code (letters, digits, _)")
        if _has_dot_segment(path, decode=False):  # the URL would lose it on the way
            raise errors.UnsafePath(f"{path[:200]!r} has a '.' or '..' segment; build paths with segment()")
        path = path.lstrip("/")
        if path.startswith("V1/"):
            path = path[3:]
        return f"{self.base_url}rest/{store_code}/V1/{path}"

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
        return self._send_signed(method, url, headers, body, self._deadline())

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

        try:
            first = page(1)
        except errors.PageSizeTooLarge as exc:
            if not 0 < exc.limit < page_size:
                raise
            # Input limits on: ask again with the maximum the store stated, once.
            page_size = self.page_size_limit = exc.limit
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

    def schema(self, *, store_code: str | None = None, async_api: bool = False,
               max_bytes: int = SCHEMA_MAX_BYTES) -> dict:
        """The store's Swagger 2.0 schema, ``GET {base}rest/{store}/schema?services=all`` (or
        ``…/async/schema`` from Magento_WebapiAsync), signed: Magento lists only the operations
        this integration's ACL allows (``Webapi\\Model\\AbstractSchemaGenerator::
        getAllowedServicesMetadata``). A full schema runs to megabytes, hence its own cap."""
        store_code = store_code or self.store_code
        if not _STORE_CODE.fullmatch(store_code):
            raise errors.UnsafePath(f"{store_code[:100]!r} is not a store code (letters, digits, _)")
        url = f"{self.base_url}rest/{store_code}/{'async/' if async_api else ''}schema?services=all"
        response = self._send_signed("GET", url, {"Accept": "application/json"}, None, self._deadline(),
                                     max_bytes=max_bytes)
        document = self._decode(response, "GET", url)
        if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
            raise errors.BadStoreResponse("the schema endpoint did not answer with a Swagger document")
        return document

    def magento_version(self) -> str:
        """``{base}magento_version``: unsigned, e.g. ``Magento/2.4 (Community)``."""
        response = send(self.session, "GET", self.base_url + "magento_version", timeout=self.timeout,
                        deadline=self._deadline(), max_bytes=1024)
        if response.status_code != 200 or len(response.content) > 200:
            raise errors.BadStoreResponse(f"magento_version answered HTTP {response.status_code}",
                                          status=response.status_code)
        return response.content.decode("utf-8", "replace").strip()

    # --- internals --------------------------------------------------------------------

    def _auth(self, profile: str):
        """The signing object of these credentials and ``profile``, made once for them: it keeps no
        state between requests (each signature gets a fresh nonce and timestamp), and making one
        (requests-oauthlib's and oauthlib's constructors) cost ~0.2 ms of every proxied call."""
        c = self.credentials
        auth = c._auths.get(profile)
        if auth is None:
            auth = c._auths[profile] = magento_auth(c.consumer_key, c.consumer_secret, c.access_token,
                                                    c.access_token_secret, profile=profile)
        return auth

    def _deadline(self) -> Deadline:
        return self.deadline or Deadline(self.call_deadline)

    def _send_signed(self, method: str, url: str, headers: dict, body: str | None,
                     deadline: Deadline, *, max_bytes: int | None = None) -> requests.Response:
        content_type, sent = headers.get("Content-Type"), functools.cache(lambda: signed_url(url))

        @functools.cache
        def base(profile: str) -> str | None:  # only worked out where a decision needs it
            return _probe_base_of(profile, method, sent(), body, content_type)

        # The presumed profile, then the others not ruled out, then the rest (a store can be upgraded).
        order = sorted(signing.PROFILES, key=lambda p: (p != self.profile, p not in self.candidates))
        # A known profile needs no probe: signing the request raises UnsignableRequest before
        # anything is sent if that generation cannot verify it (the common call signs once).
        if not self.profile_known and base(self.profile) is None and all(base(p) is None for p in order):
            # None can sign it: the store would answer 500.
            _probe_base(self.profile, method, sent(), body, content_type, refuse=True)  # raises, saying why
        refused: set[str] = set()
        for profile in order:
            if not (self.profile_known and profile == self.profile):
                signed_as = base(profile)
                if signed_as is None or signed_as in refused:
                    continue  # this generation cannot verify it, or the store just refused this very signature
            response = self._send_with_retries(method, url, headers, body, profile, deadline, max_bytes)
            # Only "signature invalid" proves the store did not act on the request: anything
            # else is final, a POST that may have been accepted is never sent again.
            if not (response.status_code == 401 and _signature_rejected(response)):
                if response.status_code < 400 and not (self.profile_known and profile == self.profile):
                    self._accepted(profile, base)
                return response
            refused.add(base(profile))
        return response

    def _accepted(self, profile: str, base: Callable[[str], str | None]) -> None:
        """The store accepted this request signed as ``profile``: it does not run any profile
        that signs the request differently, or cannot sign it."""
        was_known, was = self.profile_known, self.profile
        pool = self.candidates if profile in self.candidates else signing.PROFILES
        self.candidates = tuple(p for p in pool if base(p) == base(profile))
        self.profile = profile
        if self.profile_known and not (was_known and was == profile) and self.on_profile:
            self.on_profile(profile)

    def _send_with_retries(self, method, url, headers, body, profile, deadline: Deadline,
                           max_bytes: int | None = None) -> requests.Response:
        attempt = 0
        while True:
            try:
                # A fresh nonce per attempt (the auth makes one per request): Magento burns one even on failure.
                with self.slot():
                    response = send(self.session, method, url, timeout=self.timeout, deadline=deadline,
                                    max_bytes=max_bytes or self.max_answer_bytes, headers=headers,
                                    data=body.encode("utf-8") if body is not None else None,
                                    auth=self._auth(profile))
            except errors.StoreUnreachable:
                if method not in IDEMPOTENT or attempt >= self.retries or not self._wait(
                        self._delay(attempt, None), deadline):
                    raise
                attempt += 1
                continue
            if (response.status_code in RETRYABLE_STATUS and method in IDEMPOTENT and attempt < self.retries
                    and self._wait(self._delay(attempt, response.headers.get("Retry-After")), deadline)):
                attempt += 1
                continue
            return response

    def _wait(self, seconds: float, deadline: Deadline) -> bool:
        """Sleep before another attempt if one still fits before the deadline; a longer
        Retry-After gets the store's answer at once instead of a wait that cannot pay off."""
        if seconds + MIN_ATTEMPT > deadline.remaining():
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
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
            payload = None
            if response.status_code < 400:
                raise errors.BadStoreResponse(
                    f"{method} {url.split('?')[0]} answered HTTP {response.status_code} with a body that is not JSON",
                    status=response.status_code) from None
        if response.status_code < 400:
            return payload
        raise api_error(response.status_code, payload, method, url)


#: A query value every generation copies into the base string as it is (nothing to decode or
#: encode, no name of it): a sync's pages differ in such values only (``currentPage``).
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9]+")
#: Stands for the n-th such value in a request's template. Made of the same characters, so each
#: generation treats it as it treats the value; no decoding or encoding of a URL without
#: ``QqZ`` (at any depth of escapes) yields ``QqZ``, so the marks are the only ones in a base string.
_MARK = "QqZ{}ZqQ"
_MARKED = re.compile(r"QqZ([0-9]+)ZqQ")


def _probe_base_of(profile: str, method: str, url: str, body: str | None, content_type: str | None) -> str | None:
    """``_probe_base``, worked out once per request shape: the base string of the request with
    its plain query values marked, the values then put in their marks' places. Each base string
    cost more than the request's own signature, for every generation a store may still run."""
    template = _template(url) if body is None else None
    if template is None:
        return _probe_base(profile, method, url, body, content_type)
    marked, values = template
    shape = _probe_shape(profile, method, marked, content_type)
    return None if shape is None else _MARKED.sub(lambda m: values[int(m.group(1))], shape)


def _template(url: str) -> tuple[str, tuple[str, ...]] | None:
    """``url`` with each plain query value replaced by its mark, and the values; None where the
    URL has no query, a fragment, a piece that is not one ``name=value``, or ``QqZ`` anywhere."""
    head, _, query = url.partition("?")
    if not query or "#" in url:
        return None
    decoded = url
    while "%" in decoded and unquote(decoded) != decoded:
        decoded = unquote(decoded)  # each pass is shorter, so this ends
    if "QqZ" in decoded:
        return None
    pieces, values = [], []
    for piece in query.split("&"):
        name, equals, value = piece.partition("=")
        if not equals or "=" in value:
            return None
        if _PLAIN_VALUE.fullmatch(value):
            value = _MARK.format(len(values))
            values.append(piece[len(name) + 1:])
        pieces.append(f"{name}={value}")
    return f"{head}?{'&'.join(pieces)}", tuple(values)


@functools.lru_cache(maxsize=256)
def _probe_shape(profile: str, method: str, marked: str, content_type: str | None) -> str | None:
    return _probe_base(profile, method, marked, None, content_type)


def _probe_base(profile: str, method: str, url: str, body: str | None, content_type: str | None, *,
                refuse: bool = False) -> str | None:
    """The base string ``profile`` builds for this request (with stand-in ``oauth_*`` values of
    the same alphabet as real ones), or ``None`` if that generation cannot verify it; with
    ``refuse``, ``UnsignableRequest`` says why."""
    probe = [("oauth_consumer_key", "k"), ("oauth_nonce", "n"), ("oauth_signature_method", signing.SIGNATURE_METHOD),
             ("oauth_timestamp", "1"), ("oauth_token", "t"), ("oauth_version", "1.0")]
    try:
        return signing.base_string(profile, method, url, probe, body, content_type)
    except signing.UnsignableRequest:
        if refuse:
            raise
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
    limit = errors.PAGE_SIZE_REFUSAL.match(message) if status == 400 else None
    if limit and int(limit.group(1)) > 0:
        return errors.PageSizeTooLarge(message, limit=int(limit.group(1)), status=status, parameters=parameters,
                                       errors=details)
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
