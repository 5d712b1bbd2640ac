"""Cross-cutting web concerns: security headers, request ids, user loading."""

from __future__ import annotations

import logging
import secrets

from flask import Flask, current_app, g, request, url_for

from .accounts import sessions
from .extensions import login_manager

log = logging.getLogger("integration.web")

CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "form-action 'self' http: https:; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def init_app(app: Flask) -> None:
    from . import display

    display.init_app(app)
    login_manager.user_loader(sessions.user_for)

    @app.before_request
    def _request_id():
        g.request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)

    @app.after_request
    def _headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers["X-Request-Id"] = g.get("request_id", "")
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

