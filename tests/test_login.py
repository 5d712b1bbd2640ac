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
    from integration import password_hashing

    checked = []
    real = password_hashing.verify_password
    # The password and the hash's algorithm and cost (its salt and digest aside): the same work.
    monkeypatch.setattr(password_hashing, "verify_password",
                        lambda h, p: checked.append((p, h.rsplit("$", 2)[0])) or real(h, p))
    for email in ("owner@example.com", "nobody@example.com"):
        checked.clear()
        assert _login(client, email, "wrong password").status_code == 401
        assert checked == [("wrong password", "$argon2id$v=19$m=19456,t=2,p=1")], email


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


# --- failure budgets and device cookies (OWASP) ------------------------------------------

def _app(app_config, **limits):
    from integration import create_app

    return create_app({**app_config, "ACCOUNT_RATE_LIMIT": "3 per hour", "DEVICE_RATE_LIMIT": "2 per hour",
                       **limits})


def _log_out(client):
    page = client.get("/", environ_base={"REMOTE_ADDR": "10.1.1.1"}).get_data(as_text=True)
    client.post("/auth/logout", data={"csrf_token": csrf_from(page)}, environ_base={"REMOTE_ADDR": "10.1.1.1"})


def _identity_attempt(client, integration, email, password, addr):
    page = client.get(f"/magento/identity?oauth_consumer_key={integration.consumer_key}",
                      environ_base={"REMOTE_ADDR": addr}).get_data(as_text=True)
    return client.post("/magento/identity", environ_base={"REMOTE_ADDR": addr}, data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": email, "password": password})


def test_guessing_from_many_addresses_does_not_lock_out_the_owners_browser(app_config, sandbox, user):
    from .test_identity import activate

    app = _app(app_config)
    owners_browser = app.test_client()
    assert _login(owners_browser, "owner@example.com", PASSWORD).status_code == 302
    _log_out(owners_browser)

    # Somebody guesses from four addresses, through both login forms: they share one budget.
    integration = activate(app.test_client(), sandbox)
    codes = [_login(app.test_client(), "owner@example.com", "guess 1", addr="203.0.113.1").status_code,
             _identity_attempt(app.test_client(), integration, "owner@example.com", "guess 2",
                               "203.0.113.2").status_code,
             _login(app.test_client(), "owner@example.com", "guess 3", addr="203.0.113.3").status_code,
             _login(app.test_client(), "owner@example.com", PASSWORD, addr="203.0.113.4").status_code,
             _identity_attempt(app.test_client(), integration, "owner@example.com", PASSWORD,
                               "203.0.113.4").status_code]
    assert codes == [401, 401, 401, 429, 429]

    # The owner's browser still gets in, with the right password, from anywhere.
    assert _login(owners_browser, "owner@example.com", PASSWORD, addr="198.51.100.7").status_code == 302

    # A browser that never logged in is told when to try again.
    response = _login(app.test_client(), "owner@example.com", PASSWORD, addr="198.51.100.8")
    page = response.get_data(as_text=True)
    assert response.status_code == 429 and 0 < int(response.headers["Retry-After"]) <= 3600
    assert "Try again in" in page and "UTC" in page and "A browser that has logged in to it before" in page


def test_only_failures_count(app_config, user):
    app = _app(app_config)
    codes = [_login(app.test_client(), "owner@example.com", PASSWORD, addr=f"10.0.0.{i}").status_code
             for i in range(6)]
    assert codes == [302] * 6


def test_an_unknown_account_runs_out_exactly_like_a_known_one(app_config, user):
    app = _app(app_config)
    for email in ("owner@example.com", "nobody@example.com"):
        codes = [_login(app.test_client(), email, "wrong", addr=f"10.0.0.{i}").status_code for i in range(4)]
        assert codes == [401, 401, 401, 429], email


def test_a_browser_that_logged_in_before_has_a_budget_of_its_own(app_config, user, admin):
    app = _app(app_config)
    browser = app.test_client()
    assert _login(browser, "owner@example.com", PASSWORD).status_code == 302
    _log_out(browser)
    codes = [_login(browser, "owner@example.com", "wrong").status_code for _ in range(3)]
    response = _login(browser, "owner@example.com", PASSWORD)
    assert codes == [401, 401, 429] and response.status_code == 429
    assert "from this browser" in response.get_data(as_text=True)
    # ... and spending it took nothing from the account's untrusted budget.
    assert _login(app.test_client(), "owner@example.com", PASSWORD, addr="10.9.9.9").status_code == 302


def test_a_device_cookie_only_vouches_for_its_own_account_and_cannot_be_forged(app_config, user, admin):
    from itsdangerous import URLSafeSerializer

    app = _app(app_config)
    browser = app.test_client()
    assert _login(browser, "admin@example.com", PASSWORD).status_code == 302
    forged = app.test_client()  # names the owner's account, signed with a key that is not ours
    forged.set_cookie("device", URLSafeSerializer("not our secret key", salt="device-cookie").dumps({str(user): "x"}))
    # The admin's device cookie, and a forged one, leave the owner's account on its untrusted budget.
    codes = [_login(browser, "owner@example.com", "wrong").status_code,
             _login(forged, "owner@example.com", "wrong").status_code,
             _login(forged, "owner@example.com", "wrong").status_code,
             _login(app.test_client(), "owner@example.com", PASSWORD).status_code]
    assert codes == [401, 401, 401, 429]


def test_the_device_cookie_is_httponly_lax_and_secure_under_https(app_config, user):
    app = _app(app_config, PUBLIC_URL="https://companion.example", SESSION_COOKIE_SECURE=True)
    response = _login(app.test_client(), "owner@example.com", PASSWORD)
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("device="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie and "Max-Age=" in cookie


def test_failures_are_counted_in_this_process_while_redis_is_down(app_config, user):
    app = _app(app_config, RATELIMIT_STORAGE_URI="redis://127.0.0.1:9/0")
    codes = [_login(app.test_client(), "owner@example.com", "wrong", addr=f"10.0.0.{i}").status_code
             for i in range(4)]
    assert codes == [401, 401, 401, 429]


REDIS_URL = "redis://127.0.0.1:6379/4"


@pytest.fixture
def redis_url():
    import os

    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


def test_failure_budgets_are_shared_by_all_workers_through_redis(app_config, user, redis_url):
    import requests

    from .servers import Gunicorn
    from .test_workers import env_for

    server = Gunicorn(env_for(app_config, INTEGRATION_REDIS_URL=redis_url, INTEGRATION_ACCOUNT_RATE_LIMIT="3 per hour"),
                      workers=3, threads=2)

    def attempt(browser, password):
        page = browser.get(server.url + "/auth/login", timeout=10).text
        return browser.post(server.url + "/auth/login", timeout=10, allow_redirects=False, data={
            "csrf_token": csrf_from(page), "email": "owner@example.com", "password": password}).status_code

    try:
        owners_browser = requests.Session()
        assert attempt(owners_browser, PASSWORD) == 302
        owners_browser.cookies.pop("session")
        # A new connection each time: the attempts spread over the workers.
        assert [attempt(requests.Session(), "wrong") for _ in range(6)] == [401] * 3 + [429] * 3
        assert attempt(requests.Session(), PASSWORD) == 429
        assert attempt(owners_browser, PASSWORD) == 302
    finally:
        server.stop()


# --- the password hash: Argon2id, and accounts from before it --------------------------

def _stored_hash(app, email):
    from integration.models import User

    with app.app_context():
        return User.by_email(email).password_hash


def test_an_account_hashed_with_scrypt_still_logs_in_and_its_first_login_stores_argon2id(app, client, user):
    from werkzeug.security import generate_password_hash

    from integration.extensions import db
    from integration.models import User

    with app.app_context():  # as every account made before Argon2id was stored
        db.session.get(User, user).password_hash = generate_password_hash(PASSWORD, method="scrypt")
        db.session.commit()
    assert _login(client, "owner@example.com", "wrong password").status_code == 401
    assert _stored_hash(app, "owner@example.com").startswith("scrypt:")  # a wrong password upgrades nothing

    assert _login(client, "owner@example.com", PASSWORD).status_code == 302
    upgraded = _stored_hash(app, "owner@example.com")
    assert upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and PASSWORD not in upgraded

    _log_out(client)
    assert _login(client, "owner@example.com", PASSWORD).status_code == 302
    assert _stored_hash(app, "owner@example.com") == upgraded  # already current: not hashed again
    _log_out(client)
    assert _login(client, "owner@example.com", "wrong password").status_code == 401


def test_new_passwords_are_stored_as_argon2id(app):
    result = app.test_cli_runner().invoke(args=["users", "create", "new@example.com", "--password", PASSWORD])
    assert result.exit_code == 0, result.output
    assert _stored_hash(app, "new@example.com").startswith("$argon2id$v=19$m=19456,t=2,p=1$")
