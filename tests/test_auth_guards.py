"""``/auth``'s own rules, as a browser meets them: ``next=`` survives the second step (on-site paths only),
the pages that need a pending login send you back to the password, logging out says so, and the per-address
limit counts attempts (POSTs), not page views."""

from __future__ import annotations

import pytest

from integration import create_app

from .conftest import PASSWORD, csrf_from
from .test_second_factor import T0, browser, enrol


@pytest.fixture
def clock(monkeypatch):
    from integration.accounts import second_factor

    now = [T0]
    monkeypatch.setattr(second_factor, "_clock", lambda: now[0])
    return now


def _login(client, next_=None):
    page = client.get("/auth/login").get_data(as_text=True)
    return client.post("/auth/login", query_string={"next": next_} if next_ is not None else None,
                       data={"csrf_token": csrf_from(page), "email": "owner@example.com", "password": PASSWORD})


def _log_out(client):
    page = client.get("/accounts/me").get_data(as_text=True)
    return client.post("/auth/logout", data={"csrf_token": csrf_from(page)})


def _second_step(client, code):
    page = client.get("/auth/second-step").get_data(as_text=True)
    return client.post("/auth/second-step", data={"csrf_token": csrf_from(page), "code": code})


@pytest.mark.parametrize("target", ["stores/1", "evil.example", ".", "?next=//evil.example"])
def test_a_next_that_is_not_an_absolute_path_falls_back_to_the_dashboard(client, user, target):
    response = _login(client, next_=target)
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_next_is_kept_through_the_second_step_and_checked_there_too(app, user, clock):
    client = browser(app)
    assert _login(client).status_code == 302
    totp, _ = enrol(client, clock)
    _log_out(client)

    assert _login(client, next_="/stores/7?tab=audit").headers["Location"] == "/auth/second-step"
    clock[0] += 30
    response = _second_step(client, totp.at(clock[0]))
    assert response.status_code == 302 and response.headers["Location"] == "/stores/7?tab=audit"
    _log_out(client)

    assert _login(client, next_="/\\evil.example").headers["Location"] == "/auth/second-step"
    clock[0] += 30
    response = _second_step(client, totp.at(clock[0]))
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_the_second_step_without_a_password_first_asks_for_the_password(client, user):
    token = csrf_from(client.get("/auth/login").get_data(as_text=True))
    for response in (client.get("/auth/second-step"),
                     client.post("/auth/second-step", data={"csrf_token": token, "code": "123456"})):
        assert response.status_code == 302 and response.headers["Location"] == "/auth/login"


def test_an_overlong_second_step_is_a_bad_request_not_a_login(app, user, clock):
    client = browser(app)
    _login(client)
    enrol(client, clock)
    _log_out(client)
    _login(client)
    page = client.get("/auth/second-step")
    assert page.status_code == 200
    response = client.post("/auth/second-step", data={"csrf_token": csrf_from(page.get_data(as_text=True)),
                                                      "code": "1" * 33})
    assert response.status_code == 400
    assert client.get("/").status_code == 302  # still not logged in


def test_logging_out_says_so_and_leads_to_the_login_page(client, user):
    _login(client)
    response = _log_out(client)
    assert response.status_code == 302 and response.headers["Location"] == "/auth/login"
    page = client.get("/auth/login").get_data(as_text=True)
    assert '<p class="flash info" role="status">You are logged out.</p>' in page  # shown as information
    assert client.get("/").status_code == 302


def test_only_attempts_count_against_the_per_address_limit(app_config, user):
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "3 per minute"})
    client = app.test_client()
    for _ in range(6):  # reading the form costs nothing
        assert client.get("/auth/login").status_code == 200
        assert client.get("/auth/second-step").status_code == 302
    page = client.get("/auth/login").get_data(as_text=True)
    statuses = [client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": "owner@example.com",
                                                 "password": "wrong"}).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_each_login_endpoint_is_limited(app_config, user):
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "2 per minute"})
    for path in ("/auth/second-step", "/auth/passkey/options", "/auth/passkey"):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"10.9.9.{len(path)}"
        token = csrf_from(client.get("/auth/login").get_data(as_text=True))
        statuses = [client.post(path, data={"csrf_token": token}, headers={"X-CSRFToken": token}).status_code
                    for _ in range(3)]
        assert statuses[-1] == 429 and 429 not in statuses[:-1], (path, statuses)


def test_passkey_options_are_json_and_a_passkey_form_without_an_answer_goes_back_to_the_login(client, user):
    page = client.get("/auth/login").get_data(as_text=True)
    options = client.post("/auth/passkey/options", headers={"X-CSRFToken": csrf_from(page)})
    assert options.status_code == 200 and options.mimetype == "application/json" and options.json["challenge"]
    response = client.post("/auth/passkey", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/auth/login"


def test_pages_know_who_is_logged_in(client, user):
    assert "owner@example.com" not in client.get("/auth/login").get_data(as_text=True)
    _login(client)
    assert "owner@example.com" in client.get("/accounts/me").get_data(as_text=True)


def test_a_refused_login_says_why_on_the_page(app_config, user, clock):
    app = create_app({**app_config, "ACCOUNT_RATE_LIMIT": "2 per hour"})
    client = browser(app)
    page = client.get("/auth/login").get_data(as_text=True)
    wrong = client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": "owner@example.com",
                                             "password": "wrong"})
    assert wrong.status_code == 401 and "Wrong email or password." in wrong.get_data(as_text=True)
    assert 'type="password"' in wrong.get_data(as_text=True)  # the form again, to try once more
    client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": "owner@example.com",
                                     "password": "wrong"})
    spent = client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": "owner@example.com",
                                             "password": PASSWORD})
    assert spent.status_code == 429 and int(spent.headers["Retry-After"]) > 0
    assert "Too many wrong passwords" in spent.get_data(as_text=True)


def test_a_wrong_second_factor_says_why_on_the_page(app, user, clock):
    client = browser(app)
    _login(client)
    enrol(client, clock)
    _log_out(client)
    _login(client)
    response = _second_step(client, "000000")
    page = response.get_data(as_text=True)
    assert response.status_code == 401 and "That code or passkey did not work." in page
    assert 'name="code"' in page


def _give_passkey(app, email="owner@example.com"):
    """A passkey on file for the account (its public key is never used here: no passkey answer is sent)."""
    from integration.extensions import db
    from integration.models import Passkey, User

    with app.app_context():
        user = User.by_email(email)
        db.session.add(Passkey(user_id=user.id, credential_id="Y3JlZA", public_key="a2V5", name="Laptop"))
        db.session.commit()


def test_a_wrong_code_keeps_offering_the_passkey_and_forgets_the_code(app, user):
    _give_passkey(app)
    client = browser(app)
    assert _login(client).headers["Location"] == "/auth/second-step"
    first = client.get("/auth/second-step").get_data(as_text=True)
    assert 'class="passkey-choice"' in first
    response = _second_step(client, "913579")
    page = response.get_data(as_text=True)
    assert response.status_code == 401 and 'class="passkey-choice"' in page
    assert "913579" not in page  # a refused code is not typed back into the form


def test_signing_in_with_a_passkey_follows_the_login_pages_next_path(app, user):
    """The login page's "Sign in with a passkey" form keeps the page's ``next=``: the passkey lands where
    the password would have (on-site paths only)."""
    import html
    import re

    from .passkeys import SoftPasskey
    from .test_second_factor import _log_out as log_out, _login as log_in
    from .test_second_factor_guards import add_passkey

    client = browser(app)
    soft = SoftPasskey()
    log_in(client, "owner@example.com")
    add_passkey(client, soft)
    log_out(client)
    for target, landing in (("/accounts/me", "/accounts/me"), ("//evil.example/", "/")):
        page = client.get("/auth/login", query_string={"next": target}).get_data(as_text=True)
        action = html.unescape(re.search(r'<form method="post" action="([^"]*)" id="passkey-sign-in"', page).group(1))
        token = csrf_from(page)
        options = client.post("/auth/passkey/options", headers={"X-CSRFToken": token}).json
        response = client.post(action, data={"csrf_token": token, "passkey": soft.answer(options)})
        assert response.status_code == 302 and response.headers["Location"] == landing, target
        log_out(client)
