"""Logging in: equal work for unknown accounts, where ``next=`` may lead, and the failure budgets."""

from __future__ import annotations

import pytest

from .conftest import PASSWORD, csrf_from


def _login(client, email, password, addr="10.1.1.1", next_=None):
    page = client.get("/auth/login", environ_base={"REMOTE_ADDR": addr}).get_data(as_text=True)
    return client.post("/auth/login", query_string={"next": next_} if next_ is not None else None,
                       data={"csrf_token": csrf_from(page), "email": email, "password": password},
                       environ_base={"REMOTE_ADDR": addr})


def test_an_unknown_account_costs_one_password_check_like_a_known_one(client, user, monkeypatch):
    """Same work (and so the same time) whether the account exists: counted, not timed."""
    import integration.models as models

    checked = []
    real = models.check_password_hash
    monkeypatch.setattr(models, "check_password_hash", lambda h, p: checked.append(p) or real(h, p))
    for email in ("owner@example.com", "nobody@example.com"):
        checked.clear()
        assert _login(client, email, "wrong password").status_code == 401
        assert checked == ["wrong password"], email


@pytest.mark.parametrize("target", [
    "///evil.example", "/\\evil.example", "//evil", "https://evil.example/", "http:evil.example",
    "javascript:alert(1)", "/\t/evil.example",
])
def test_login_never_follows_next_off_site(client, user, target):
    response = _login(client, "owner@example.com", PASSWORD, next_=target)
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_login_follows_a_next_path_on_this_site(client, user):
    response = _login(client, "owner@example.com", PASSWORD, next_="/stores/1?tab=audit")
    assert response.status_code == 302 and response.headers["Location"] == "/stores/1?tab=audit"
