"""Who is calling: an API key, sent only as ``Authorization: Bearer mic_…``.

A key in the query string is refused (URLs end up in access logs, proxies and browser
history); every request made with a real key is audited after it is answered.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from flask import g, request

from ..apikeys import service as keys
from ..extensions import address_key, db
from ..models import User
from . import cache as api_cache
from .errors import ApiProblem, InsufficientScope, Unauthenticated

log = logging.getLogger("integration.api")


@dataclass(frozen=True)
class Caller:
    """The key a request authenticated with, read once and kept in the per-process cache for
    ``INTEGRATION_API_CACHE_SECONDS`` (``cache.py``): ids and flags only, no database rows."""

    key_id: int
    prefix: str
    scopes: frozenset[str]
    owner_id: int | None  # None: a service key that sees every store
    owner_is_admin: bool

    @property
    def owner(self) -> User | None:
        """The account the key acts for, as a row of this request's session."""
        return db.session.get(User, self.owner_id) if self.owner_id is not None else None

    def sees(self, link_owner_id: int | None) -> bool:
        """Whether this key may use a store linked by ``link_owner_id`` (as ``stores.visible_to``)."""
        return self.owner_id is None or self.owner_is_admin or link_owner_id == self.owner_id


def refuse_key_in_query() -> None:
    """A key anywhere in the URL (its query or its path, which a proxied call would pass on to the
    store) is refused before anything records the URL."""
    for name, value in (("", request.path), *request.args.items(multi=True)):
        match = keys.KEY_IN_TEXT.search(name) or keys.KEY_IN_TEXT.search(value)
        if match:
            log.warning("refused a request with API key %s in its URL", match.group(1))
            raise ApiProblem("API keys are accepted only in the Authorization header (Bearer); this key was sent "
                             "in a URL, which logs and proxies keep: revoke it and use a new one",
                             error_code="key_in_query", status=400)


def caller() -> Caller:
    """The authenticated caller of this request; ``Unauthenticated`` if there is none."""
    if "api_caller" not in g:
        g.api_caller, g.api_refusal = None, None
        try:
            g.api_caller = _authenticate()
        except Unauthenticated as exc:
            g.api_refusal = exc
    if g.api_caller is None:
        raise g.api_refusal
    return g.api_caller


def _authenticate() -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if not header:
        raise Unauthenticated("send an API key as 'Authorization: Bearer mic_…'")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <API key>'", error_code="invalid_key")
    presented = presented.strip()
    cached = api_cache.current().keys
    fingerprint = keys.digest(presented)
    found = cached.get(fingerprint)
    if found is not None:
        return found
    try:
        key = keys.authenticate(presented)
    except keys.KeyRefused as exc:
        if exc.key is not None:
            g.api_refused_key = (exc.key.id, exc.key.prefix, exc.key.owner_id, exc.reason)
        code = {"revoked": "key_revoked", "owner_disabled": "key_owner_disabled"}.get(exc.reason, "invalid_key")
        raise Unauthenticated(exc.message, error_code=code) from None
    found = Caller(key.id, key.prefix, frozenset(key.scope_list), key.owner_id,
                   bool(key.owner is not None and key.owner.is_admin))
    db.session.commit()  # the request holds no database connection for the lookup's sake
    cached.put(fingerprint, found)
    return found


def require(scope: str):
    """The view needs a valid key with ``scope``."""
    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            if scope not in caller().scopes:
                raise InsufficientScope(scope)
            return view(*args, **kwargs)

        wrapped.required_scope = scope
        return wrapped

    return decorator


def rate_key() -> str:
    """What the rate limit counts by: the key, or the address when there is no valid key."""
    try:
        return "key:" + caller().prefix
    except ApiProblem:
        return "addr:" + address_key()


def record(response) -> None:
    """Audit the request if it named a real key (method, path, status; never a body)."""
    current = g.get("api_caller")
    link_id = g.get("api_store_link_id")
    if current is not None:
        keys.record_use(current.key_id, current.prefix, current.owner_id,
                        method=request.method, path=request.path, status=response.status_code,
                        remote_addr=request.remote_addr, store_link_id=link_id)
        return
    refused = g.get("api_refused_key")
    if refused is not None:
        _, prefix, owner_id, reason = refused
        keys.record_refusal(prefix, owner_id, reason, method=request.method, path=request.path,
                            status=response.status_code, remote_addr=request.remote_addr)
