"""The service API under ``/api/v1``: API keys (Bearer), JSON only, no cookies, no CSRF."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, request

from ..extensions import limiter

bp = Blueprint("api", __name__, url_prefix="/api/v1")
log = logging.getLogger("integration.api")


@bp.before_request
def _limit_and_refuse_key_in_query():
    from .auth import rate_key, refuse_key_in_query
    from .errors import RateLimited

    retry_after = limits.current().hit(rate_key())
    if retry_after is not None:
        raise RateLimited(limits.current().item, retry_after)
    refuse_key_in_query()


@bp.after_request
def _audit(response):
    from .auth import record

    try:
        record(response)
    except Exception:  # noqa: BLE001 - the answer is made; losing its audit row is logged, not raised
        from ..extensions import db

        db.session.rollback()
        log.exception("could not audit an API request")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    from ..apikeys import usage
    from ..extensions import csrf
    from . import cache

    cache.init_app(app)
    usage.init_app(app)
    csrf.exempt(bp)
    app.register_blueprint(bp)
    limits.init_app(app, limiter.storage)  # the storage of the app's other limits (Redis when configured)
    _app_limits_outside_the_api(app)


# The API counts its own requests (limits.py).
@limiter.request_filter
def _is_api() -> bool:
    return request.blueprint == "api"


def _app_limits_outside_the_api(app: Flask) -> None:
    """Flask-Limiter's check of the app's other limits, not run for API requests at all: even
    for a request its filter exempts, it works out which limits and exemptions would apply."""
    hooks = app.before_request_funcs.get(None, [])
    check = limiter._check_request_limit
    if check not in hooks:  # another version of Flask-Limiter: its check runs, exempting the API by the filter
        return

    def _check_unless_api():
        if request.blueprint != "api":
            return check()
        return None

    hooks[hooks.index(check)] = _check_unless_api


from . import docs, lean, limits, routes  # noqa: E402,F401 - the views register themselves on bp
