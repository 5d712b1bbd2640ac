"""Accounts: sign-up that does not tell who has an account, and no control characters in stored text."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select, text

from integration import create_app
from integration.extensions import db
from integration.models import StoreLink, User, audit
from integration.sandbox.oauth_provider import new_verifier

from .conftest import PASSWORD, csrf_from

# ESC sequences (CSI, OSC with BEL), a carriage return that overwrites the line, C1 NEL, a bidi override.
HOSTILE = ["a\x1b[2Jb@example.com", "a\x1b]0;owned\x07@example.com", "a\rroot@example.com",
           "a\x85b@example.com", "a\u202eb@example.com", "a\x00b@example.com"]


def _registration(app_config, sandbox):
    app = create_app({**app_config, "SELF_REGISTRATION": True})
    client = app.test_client()
    integration = sandbox.state.add_integration("New merchant", "x", "y")
    client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": new_verifier(integration).verifier})
    page = client.get(f"/magento/identity?oauth_consumer_key={integration.consumer_key}").get_data(as_text=True)

    def register(email, password="merchant password"):
        return client.post("/magento/identity/register", data={
            "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
            "email": email, "password": password, "confirm": password})

    return app, client, integration, register


def _comparable(response, local_part):
    """The page with the address and the CSRF token (signed with the time, to the second) blanked out."""
    page = response.get_data(as_text=True).replace(local_part, "X@")
    return re.sub(r'name="csrf_token" type="hidden" value="[^"]+"', "", page)


def test_sign_up_gives_the_same_answer_whether_the_email_has_an_account(app_config, sandbox, user):
    app, client, integration, register = _registration(app_config, sandbox)
    taken = register("owner@example.com")
    free = register("merchant@example.com")
    assert taken.status_code == free.status_code == 200
    assert _comparable(taken, "owner@") == _comparable(free, "merchant@")
    assert "already" not in taken.get_data(as_text=True)
    with app.app_context():
        assert User.by_email("owner@example.com").check_password(PASSWORD)  # the existing account is untouched
        assert db.session.scalar(select(func.count()).select_from(User)) == 2
    # The new merchant goes on in the same pop-up: log in, and the store is linked to the new account.
    page = free.get_data(as_text=True)
    assert 'value="merchant@example.com"' in page
    response = client.post("/magento/identity", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "merchant@example.com", "password": "merchant password"})
    assert response.status_code == 200 and "Store linked" in response.get_data(as_text=True)
    with app.app_context():
        assert StoreLink.by_consumer_key(integration.consumer_key).owner.email == "merchant@example.com"


@pytest.mark.parametrize("email", HOSTILE)
def test_sign_up_refuses_control_characters_in_the_email(app_config, sandbox, email):
    app, _client, _integration, register = _registration(app_config, sandbox)
    response = register(email)
    assert response.status_code == 400 and "control characters" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize("email", HOSTILE)
def test_admins_and_the_cli_refuse_control_characters_in_the_email(app, client, admin, email):
    from .test_dashboard import login, post

    login(client, "admin@example.com")
    response = post(client, "/accounts/", "/accounts/", email=email, password="long enough password",
                    role="member")
    assert response.status_code == 400 and "control characters" in response.get_data(as_text=True)
    result = app.test_cli_runner().invoke(args=["users", "create", email, "--password", "long enough password"])
    assert result.exit_code != 0 and "control characters" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_users_list_shows_control_characters_escaped(app):
    """A row stored before the check (or written around the app) cannot drive the terminal."""
    with app.app_context():
        db.session.execute(text("INSERT INTO users (email, password_hash, role, active, created_at) "
                                "VALUES (:e, 'x', 'member', true, CURRENT_TIMESTAMP)"),
                           {"e": "a\x1b]0;owned\x07\x1b[2J\r\u202eb@example.com"})
        db.session.commit()
    output = app.test_cli_runner().invoke(args=["users", "list"]).output
    assert not any(c in output for c in "\x1b\x07\r\u202e")
    assert r"a\x1b]0;owned\x07\x1b[2J\r\u202eb@example.com" in output


def test_no_stored_text_keeps_control_characters(app):
    """Whatever the source (a store's error text, a header), stored text has none; multi-line text keeps its lines."""
    with app.app_context():
        event = audit("store.tested", remote_addr="10.0.0.1\x1b[2J", detail="line one\x1b[31m\nline\ttwo\u202e")
        db.session.commit()
        raw = db.session.execute(text("SELECT remote_addr, detail FROM audit_events WHERE id = :id"),
                                 {"id": event.id}).one()
    assert raw.remote_addr == "10.0.0.1\ufffd[2J"
    assert raw.detail == "line one\ufffd[31m\nline\ttwo\ufffd"
