"""Error pages: HTML for browsers, JSON for clients that ask for it."""

from __future__ import annotations

import datetime as dt
import logging
import math
import time

from flask import Flask, jsonify, render_template, request, url_for
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

log = logging.getLogger("integration.errors")


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def when_to_retry(seconds: int) -> str:
    """"Try again in 42 seconds (after 14:05:09 UTC)." for a refusal that lasts ``seconds``."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    if seconds < 120:
        return f"Try again in {seconds} seconds (after {at:%H:%M:%S} UTC)."
    return f"Try again in {math.ceil(seconds / 60)} minutes (after {at:%H:%M} UTC)."


def _rate_limited(error: HTTPException) -> tuple[str, dict[str, str]]:
    """What a 429 from Flask-Limiter says: which limit, and when it lets this address in again."""
    from .extensions import limiter

    current = limiter.current_limit
    retry_after = max(1, math.ceil(current.reset_at - time.time())) if current else 60
    return (f"Too many attempts from your address ({error.description}). {when_to_retry(retry_after)}",
            {"Retry-After": str(retry_after)})


def _back_to_linking() -> str | None:
    """In the identity pop-up, the way back to the same linking step (Magento's two values kept)."""
    if request.blueprint != "identity":
        return None
    try:
        values = request.values
    except HTTPException:  # the body itself was refused (too large): nothing to carry over
        return None
    key = values.get("oauth_consumer_key", "")
    if len(key) != 32 or not key.isalnum():
        return None
    return url_for("identity.start", oauth_consumer_key=key, success_call_back=values.get("success_call_back", ""))


def render_error(error: HTTPException):
    if request.path == "/api/v1" or request.path.startswith("/api/v1/"):
        from .api.errors import render

        return render(error)
    message, headers = error.description, {}
    if error.code == 429:
        message, headers = _rate_limited(error)
    if _wants_json():
        return jsonify(error=error.name, message=message, status=error.code), error.code, headers
    return render_template("error.html", error=error, message=message, back=_back_to_linking()), error.code, headers


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, render_error)

    @app.errorhandler(OperationalError)
    def _database_down(exc):
        from .extensions import db

        db.session.rollback()
        log.error("database unavailable: %s", type(exc.orig).__name__ if exc.orig else type(exc).__name__)
        return render_error(ServiceUnavailable("The database is unavailable. Try again in a moment."))

    @app.errorhandler(Exception)
    def _unexpected(exc):
        if isinstance(exc, HTTPException):
            return render_error(exc)
        log.exception("unhandled error")
        return render_error(InternalServerError())
