"""Error pages: HTML for browsers, JSON for clients that ask for it."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

log = logging.getLogger("integration.errors")


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def render_error(error: HTTPException):
    if request.path == "/api/v1" or request.path.startswith("/api/v1/"):
        from .api.errors import render

        return render(error)
    if _wants_json():
        return jsonify(error=error.name, message=error.description, status=error.code), error.code
    return render_template("error.html", error=error), error.code


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
