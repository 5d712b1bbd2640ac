"""The service API's calls served by a Flask app of its own beside the main one: the same
blueprint, views, hooks and error handlers (the very functions the main app registers, copied
from it), without the main app's work that an API request never needs.

For each request the main app asked the CSRF guard, Flask-Limiter (its check, its headers, its
context), the 2FA enrolment guard and Flask-Login's remember cookie whether they had anything
to do (each exempts the API), opened and saved a browser session that an API request never
has, and matched the path against every route of the dashboard. A proxied call spends about a
third of its CPU in the app outside the view, and these were a good part of it.

Only the main app's hooks named in ``NOT_FOR_THE_API`` stay behind; every other hook, the
error handlers and the extensions (one ``extensions`` dict, one ``config``, one database
engine) are the main app's own, so a hook added to the main app runs for API calls too.
Where Flask-SQLAlchemy cannot share its engine the way this expects, nothing is mounted and
the main app serves the API as before. ``tests/test_api_lean.py`` sends the same calls both
ways and compares the answers and the audit.
"""

from __future__ import annotations

import logging

from flask import Flask
from flask.sessions import SessionInterface

log = logging.getLogger("integration.api")

#: The paths served here: the stores (the proxy among them) and the events feed. The OpenAPI
#: document and its docs page (templates, static files) stay with the main app.
PREFIXES = ("/api/v1/stores", "/api/v1/events")

#: Hooks of the main app, by qualified name, that do nothing for an API request.
NOT_FOR_THE_API = frozenset({
    "CSRFProtect.init_app.<locals>.csrf_protect",  # the blueprint is exempt
    "_app_limits_outside_the_api.<locals>._check_unless_api",  # the API counts its own (limits.py)
    "_enrol_first",  # returns at once for the API (accounts.routes)
    "Limiter.__inject_headers",  # no Flask-Limiter limit applies to the API
    "Limiter.__release_context",
    "LoginManager._update_remember_cookie",  # no browser session, so no remember cookie
})


class _NoSessions(SessionInterface):
    """An API request carries a key, never a browser session: a cookie it sends is not read."""

    def open_session(self, app, request):
        return self.make_null_session(app)

    def save_session(self, app, session, response):  # pragma: no cover - a null session is never saved
        return None


def _name(hook) -> str:
    return getattr(getattr(hook, "func", hook), "__qualname__", "")


def lean_app(app: Flask) -> Flask | None:
    """The API's own app, sharing ``app``'s settings, extensions and database; None where it
    cannot share the database engine."""
    from ..extensions import db
    from ..web import IdConverter
    from . import bp

    engines = getattr(db, "_app_engines", None)
    if engines is None or app not in engines:
        log.warning("Flask-SQLAlchemy keeps its engines otherwise: the main app serves the API")
        return None
    lean = type(app)(app.import_name, instance_path=app.instance_path, static_folder=None)
    lean.config = app.config
    lean.extensions = app.extensions
    if hasattr(app, "login_manager"):
        lean.login_manager = app.login_manager
    lean.session_interface = _NoSessions()
    lean.url_map.converters["int"] = IdConverter
    engines[lean] = engines[app]
    for funcs in ("before_request_funcs", "after_request_funcs", "teardown_request_funcs"):
        hooks = [hook for hook in getattr(app, funcs).get(None, ()) if _name(hook) not in NOT_FOR_THE_API]
        if hooks:
            getattr(lean, funcs)[None] = hooks
    lean.teardown_appcontext_funcs[:] = app.teardown_appcontext_funcs
    for code, handlers in app.error_handler_spec[None].items():
        lean.error_handler_spec[None][code].update(handlers)
    # Routing answers nothing by redirect here (a redirect would repeat a key sent in the query).
    lean.url_map.merge_slashes = lean.url_map.strict_slashes = False
    lean.register_blueprint(bp)
    # All this app serves is the API: its hooks (rate limit, key in the URL refused, audit, no-store)
    # run for the answers routing gives too (404, 405), which belong to no blueprint.
    for funcs in ("before_request_funcs", "after_request_funcs"):
        hooks = getattr(lean, funcs)
        hooks[None] = hooks.get(None, []) + hooks.pop(bp.name, [])
    return lean


class Dispatch:
    """WSGI: the API's paths to its own app, the rest to the main one."""

    def __init__(self, main, api: Flask):
        self.main, self.api = main, api

    def __call__(self, environ, start_response):
        # Leading slashes as the router reads them: "//api/v1/stores" is the API's too.
        if ("/" + environ.get("PATH_INFO", "").lstrip("/")).startswith(PREFIXES):
            return self.api.wsgi_app(environ, start_response)
        return self.main(environ, start_response)


def mount(app: Flask) -> None:
    """Serve the API's calls with their own app, if it can be made. Call once every hook and
    error handler of ``app`` is registered, and before a middleware such as ProxyFix wraps it."""
    lean = lean_app(app)
    if lean is not None:
        app.extensions["api_app"] = lean
        app.wsgi_app = Dispatch(app.wsgi_app, lean)
