"""The API's own Flask-Limiter, counting per key (per address for requests without a valid
key). Its own instance, without Flask-Limiter's headers: those would stretch the
``Retry-After`` of a store-busy 429 to the end of the key's rate window."""

from __future__ import annotations

from flask import current_app
from flask_limiter import Limiter

from ..extensions import address_key

api_limiter = Limiter(key_func=address_key, default_limits=[], headers_enabled=False,
                      key_prefix="api")


def api_rate_limit() -> str:
    return current_app.config["API_RATE_LIMIT"]


def per_key() -> str:
    from .auth import rate_key

    return rate_key()
