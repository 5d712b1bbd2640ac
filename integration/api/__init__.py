"""The service API under ``/api/v1``: API keys (Bearer), JSON only, no cookies, no CSRF."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, request

from ..extensions import limiter
from .limits import api_limiter, api_rate_limit, per_key

bp = Blueprint("api", __name__, url_prefix="/api/v1")
api_limiter.limit(api_rate_limit, key_func=per_key)(bp)
log = logging.getLogger("integration.api")


@bp.before_request
def _refuse_key_in_query():
    from .auth import refuse_key_in_query

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
    api_limiter.init_app(app)


# Each limiter looks only at its own requests: the check runs on every request otherwise.
@api_limiter.request_filter
def _not_api() -> bool:
    return request.blueprint != "api"


@limiter.request_filter
def _is_api() -> bool:
    return request.blueprint == "api"


from . import docs, routes  # noqa: E402,F401 - the views register themselves on bp
