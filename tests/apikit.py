"""Helpers for the service API's tests: make keys, call with them."""

from __future__ import annotations

from integration.apikeys import service
from integration.models import User

from .conftest import _account


def make_key(app, name: str = "svc", scopes=("stores:read", "stores:call"), owner: str | None = None) -> str:
    with app.app_context():
        _, plain = service.create(name, list(scopes), owner=User.by_email(owner) if owner else None)
        return plain


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def account(app, email: str, role: str = "member") -> int:
    return _account(app, email, role)
