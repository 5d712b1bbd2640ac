"""Cross-cutting web concerns: security headers, request ids, user loading."""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets

from flask import Flask, current_app, g, request, url_for
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from .accounts import sessions
from .extensions import login_manager

log = logging.getLogger("integration.web")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,64}")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
_SECURITY_HEADERS = (("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                     ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"))


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions with the cookie signer built once per set of keys, not
    for every request (it cost ~40 us of each API call, which carries no cookie at all)."""

    _signer: tuple[tuple, object] | None = None

    def get_signing_serializer(self, app: Flask):
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        cached = self._signer
        if cached is None or cached[0] != keys:  # a key rotated at run time takes effect at once
            cached = self._signer = (keys, super().get_signing_serializer(app))
        return cached[1]


def init_app(app: Flask) -> None:
    from . import display

    display.init_app(app)
    app.session_interface = SessionInterface()
    login_manager.user_loader(sessions.user_for)

    @app.before_request
    def _request_id():
        # The caller's id, if it is one (a proxy's or a load balancer's): it goes into every log
        # line of the request, where spaces, brackets or escapes would forge or hide lines.
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else secrets.token_hex(8)

    @app.after_request
    def _headers(response):
        # Each header the response does not set yet (a view may set its own). One pass over
        # the headers: werkzeug's setdefault scans them all for every name.
        present = {name.lower() for name, _ in response.headers}
        for name, value in _SECURITY_HEADERS:
            if name.lower() not in present:
                response.headers.add(name, value)
        if (app.config.get("PUBLIC_URL") or "").startswith("https://") and "strict-transport-security" not in present:
            response.headers.add("Strict-Transport-Security", "max-age=31536000")  # over TLS: browsers keep to it
        if "x-request-id" in present:
            response.headers["X-Request-Id"] = g.get("request_id", "")
        else:
            response.headers.add("X-Request-Id", g.get("request_id", ""))
        return response

    @app.context_processor
    def _globals():
        return {"self_registration": app.config.get("SELF_REGISTRATION", False), "public_url_for": public_url_for}


def public_url_for(endpoint: str, **values) -> str:
    """The address Magento must use: ``INTEGRATION_PUBLIC_URL`` when set (behind a proxy)."""
    base = current_app.config.get("PUBLIC_URL")
    if base:
        return base + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)


def body_within(limit: int) -> bytes:
    """The request body, refused (413) when over ``limit`` bytes *read*, whatever the transfer
    encoding: Werkzeug stops a chunked body quietly at a maximum instead of refusing, so read
    one byte past the limit to tell "too large" from "exactly the limit"."""
    request.max_content_length = limit + 1
    body = request.get_data(cache=True)  # a Content-Length over the limit raises here, unread
    if len(body) > limit:
        raise RequestEntityTooLarge(f"The body is larger than {limit} bytes.")
    return body


#: Our ids are 32-bit on PostgreSQL (and SQLite refuses what does not fit 64 bits): a larger
#: number in a URL cannot name a row, so it is a 404 rather than a database error.
MAX_ID = 2**31 - 1


class IdConverter(IntegerConverter):
    """``<int:…>`` in every route, bounded to what an id column holds, and written one way only: ASCII
    digits without a leading zero (``\\d`` takes any script's digits, and ``01`` named the same row as
    ``1``, an alias the audit trail would keep)."""

    regex = r"[1-9][0-9]*"

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def forwarded_address_checked(wsgi_app):
    """Inside ProxyFix: a forwarded client address that is not an IP address is not believed (the
    proxy's own address stands). X-Forwarded-For is free text to whoever writes it, and the
    address goes to rate limits and to bounded columns of the audit trail."""
    def checked(environ, start_response):
        original = (environ.get("werkzeug.proxy_fix.orig") or {}).get("REMOTE_ADDR")
        forwarded = environ.get("REMOTE_ADDR")
        if original is not None and forwarded != original:
            try:
                ipaddress.ip_address(forwarded)
            except ValueError:
                environ["REMOTE_ADDR"] = original
        return wsgi_app(environ, start_response)

    return checked
