"""Two-factor login without a browser: enrolment, the second step's guards (replay, recovery codes used
once, the password budget), the INTEGRATION_REQUIRE_2FA guard on every page, an admin's and the CLI's reset."""

from __future__ import annotations

import html
import re

import pyotp
import pytest
from sqlalchemy import select

from integration import create_app
from integration.accounts import second_factor
from integration.config import ConfigError, check
from integration.extensions import db
from integration.models import AuditEvent, User

from .apikit import bearer, make_key
from .conftest import PASSWORD, csrf_from

T0 = 1_900_000_020  # a time-step boundary; each login below moves the TOTP clock on by one step


@pytest.fixture
def clock(monkeypatch):
    now = [T0]
    monkeypatch.setattr(second_factor, "_clock", lambda: now[0])
    return now


def browser(app, addr="10.1.1.1"):
    """A test client that keeps one address (sessions are bound to it: Flask-Login's "strong" protection)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = addr
    return client


def _login(client, email=None, password=PASSWORD):
    page = client.get("/auth/login").get_data(as_text=True)
    return client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": password})


def _second_step(client, code):
    page = client.get("/auth/second-step").get_data(as_text=True)
    return client.post("/auth/second-step", data={"csrf_token": csrf_from(page), "code": code})


def _log_out(client):
    page = client.get("/accounts/me").get_data(as_text=True)
    client.post("/auth/logout", data={"csrf_token": csrf_from(page)})


def enrol(client, clock) -> tuple[pyotp.TOTP, list[str]]:
    """Through the account page, as a person would: the QR page's key, a code, the recovery codes."""
    page = client.get("/accounts/me/totp").get_data(as_text=True)
    assert 'src="data:image/svg+xml' in page
    secret = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', page).group(1)
    totp = pyotp.TOTP(secret)
    # A mistyped code keeps the secret the app scanned.
    mistyped = client.post("/accounts/me/totp", data={"csrf_token": csrf_from(page), "code": "12345"})
    assert mistyped.status_code == 400 and secret in mistyped.get_data(as_text=True)
    assert mistyped.headers["Cache-Control"] == "no-store"
    response = client.post("/accounts/me/totp", data={"csrf_token": csrf_from(page), "code": totp.at(clock[0])})
    assert response.status_code == 200, response.get_data(as_text=True)
    codes = re.findall(r"<li><code>([0-9a-f]{5}-[0-9a-f]{5})</code></li>", response.get_data(as_text=True))
    assert len(codes) == 10
    return totp, codes


def _logged_in(client) -> bool:
    return client.get("/accounts/me").status_code == 200


def _actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def test_a_code_opens_the_login_once_and_a_recovery_code_once(app, client, user, clock):
    assert _login(client, "owner@example.com").status_code == 302
    totp, recovery = enrol(client, clock)
    me = client.get("/accounts/me").get_data(as_text=True)
    assert totp.secret not in me and "Recovery codes left: <strong>10</strong>" in me
    _log_out(client)

    # The password alone no longer logs in: it leads to the second step.
    response = _login(client, "owner@example.com")
    assert response.headers["Location"] == "/auth/second-step" and not _logged_in(client)
    # The code used at enrolment (same time-step) is refused: a replay.
    assert _second_step(client, totp.at(clock[0])).status_code == 401 and not _logged_in(client)
    clock[0] += 30
    assert _second_step(client, totp.at(clock[0])).status_code == 302 and _logged_in(client)
    _log_out(client)

    # The same code again, in its window, from another browser: refused.
    other = browser(app, "10.2.2.2")
    _login(other, "owner@example.com")
    assert _second_step(other, totp.at(clock[0])).status_code == 401
    # A wrong code, an old code: refused.
    assert _second_step(other, "000000").status_code == 401
    assert _second_step(other, totp.at(clock[0] - 30)).status_code == 401
    # A recovery code works once.
    assert _second_step(other, recovery[3].upper()).status_code == 302 and _logged_in(other)
    _log_out(other)
    _login(other, "owner@example.com")
    assert _second_step(other, recovery[3]).status_code == 401 and not _logged_in(other)
    assert _second_step(other, recovery[4]).status_code == 302
    assert "Recovery codes left: <strong>8</strong>" in other.get("/accounts/me").get_data(as_text=True)

    actions = _actions(app)
    assert actions.count("2fa.totp_enrolled") == 1 and actions.count("2fa.recovery_code_used") == 2
    assert actions.count("2fa.failed") == 5


def test_the_second_step_is_not_skipped_by_going_elsewhere(app, client, user, clock):
    assert _login(client, "owner@example.com").status_code == 302
    enrol(client, clock)
    _log_out(client)
    _login(client, "owner@example.com")
    assert client.get("/").status_code == 302 and client.get("/accounts/me").status_code == 302
    assert client.get("/auth/second-step").status_code == 200


def test_wrong_codes_spend_the_password_budget(app_config, user, clock):
    app = create_app({**app_config, "ACCOUNT_RATE_LIMIT": "3 per hour", "DEVICE_RATE_LIMIT": "3 per hour"})
    client = browser(app)
    assert _login(client, "owner@example.com").status_code == 302
    totp, _ = enrol(client, clock)
    _log_out(client)  # this browser now has a device cookie: its own budget of 3

    _login(client, "owner@example.com")
    codes = [_second_step(client, "123456").status_code for _ in range(3)]
    clock[0] += 30
    spent = _second_step(client, totp.at(clock[0]))
    assert codes == [401, 401, 401] and spent.status_code == 429 and "Retry-After" in spent.headers
    assert not _logged_in(client)


def test_an_expired_or_missing_pending_login_asks_for_the_password(app, client, user, clock, monkeypatch):
    assert _login(client, "owner@example.com").status_code == 302
    totp, _ = enrol(client, clock)
    _log_out(client)
    assert client.get("/auth/second-step").headers["Location"] == "/auth/login"
    monkeypatch.setattr(second_factor, "PENDING_FOR", -1)
    _login(client, "owner@example.com")
    assert client.get("/auth/second-step").headers["Location"] == "/auth/login"


def test_the_identity_pop_up_keeps_the_linking_step_through_the_second_step(app, client, sandbox, user, clock):
    from integration.models import StoreLink

    from .test_identity import activate, submit

    assert _login(client, "owner@example.com").status_code == 302
    totp, _ = enrol(client, clock)
    _log_out(client)
    integration = activate(client, sandbox)
    back = f"{sandbox.url}/admin/integrations/done"
    response = submit(client, integration, back, email="owner@example.com", password=PASSWORD)
    assert response.headers["Location"] == "/magento/identity/second-step"
    page = client.get("/magento/identity/second-step").get_data(as_text=True)
    assert sandbox.url in html.unescape(page) and "Stores" not in page  # the pop-up's header, no menu
    clock[0] += 30
    response = client.post("/magento/identity/second-step", data={"csrf_token": csrf_from(page),
                                                                  "code": totp.at(clock[0])})
    assert response.status_code == 302 and response.headers["Location"] == back
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.status == "linked" and link.owner.email == "owner@example.com"


# --- policy ------------------------------------------------------------------------------

def _pages(app) -> list[str]:
    """Every GET page of the app with its arguments filled in (what an account could click to)."""
    from integration.accounts.routes import ENROLMENT_ENDPOINTS

    pages = []
    with app.test_request_context():
        from flask import url_for
        for rule in app.url_map.iter_rules():
            if "GET" not in rule.methods or rule.endpoint in ENROLMENT_ENDPOINTS or rule.endpoint.startswith(
                    ("auth.", "identity.", "callback.", "sandbox.", "api.")):
                continue
            values = {arg: 1 for arg in rule.arguments}
            pages.append(url_for(rule.endpoint, **values))
    return pages


def test_an_admin_the_policy_covers_can_only_enrol_until_it_has(app_config, admin, user, clock):
    app = create_app({**app_config, "REQUIRE_2FA": "admins"})
    client = browser(app)
    assert _login(client, "admin@example.com").status_code == 302
    pages = _pages(app)
    assert "/" in pages and "/accounts/" in pages and "/audit" in pages and len(pages) >= 7
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302 and response.headers["Location"] == "/accounts/me#second-factor", page
    # POSTs too (an admin action without enrolling).
    me = client.get("/accounts/me").get_data(as_text=True)
    assert "must have a second factor" in me
    assert client.post(f"/accounts/{user}/toggle", data={"csrf_token": csrf_from(me)}).status_code == 302
    with app.app_context():
        assert db.session.get(User, user).active

    # The service API answers by key, whatever browser session comes with the request.
    assert client.get("/api/v1/stores").status_code == 401
    assert client.get("/api/v1/stores", headers=bearer(make_key(app))).status_code == 200

    enrol(client, clock)
    assert client.get("/").status_code == 200 and client.get("/accounts/").status_code == 200

    # A member is not covered by "admins"; "all" covers it; "off" covers nobody.
    member = browser(app)
    assert _login(member, "owner@example.com").status_code == 302 and member.get("/").status_code == 200
    everyone = browser(create_app({**app_config, "REQUIRE_2FA": "all"}))
    assert _login(everyone, "owner@example.com").status_code == 302 and everyone.get("/").status_code == 302


def test_admins_must_enrol_by_default_except_in_development(monkeypatch, tmp_path):
    """./scripts/run's demo admin links a sandbox store without a phone app; production asks admins."""
    from integration.config import from_environment

    monkeypatch.delenv("INTEGRATION_REQUIRE_2FA", raising=False)
    for env, policy in (("production", "admins"), ("development", "off")):
        monkeypatch.setenv("INTEGRATION_ENV", env)
        assert from_environment(str(tmp_path))["REQUIRE_2FA"] == policy, env
    monkeypatch.setenv("INTEGRATION_REQUIRE_2FA", "All")
    assert from_environment(str(tmp_path))["REQUIRE_2FA"] == "all"


def test_the_policy_setting_is_checked():
    base = {"SECRET_KEY": "k" * 40, "ENCRYPTION_KEYS": ("5Vv1Z1lQTbjJ1cUVtGPVbCsaEGm1Dr2lVV4N9MuJs5Y=",),
            "LOGIN_RATE_LIMIT": "1 per minute", "ACCOUNT_RATE_LIMIT": "1 per minute",
            "DEVICE_RATE_LIMIT": "1 per minute", "IDENTITY_RATE_LIMIT": "1 per minute",
            "API_RATE_LIMIT": "1 per minute"}
    check({**base, "REQUIRE_2FA": "all"})
    with pytest.raises(ConfigError, match="REQUIRE_2FA"):
        check({**base, "REQUIRE_2FA": "admin"})


def test_an_admin_resets_an_owners_second_factor_and_ends_its_sessions(app, user, admin, clock):
    owner = browser(app)
    assert _login(owner, "owner@example.com").status_code == 302
    enrol(owner, clock)
    assert _logged_in(owner)

    boss = browser(app, "10.3.3.3")
    _login(boss, "admin@example.com")
    page = boss.get("/accounts/").get_data(as_text=True)
    assert "Reset second factor" in page
    response = boss.post(f"/accounts/{user}/second-factor/reset", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    assert not _logged_in(owner)  # the owner's session ended
    assert _login(owner, "owner@example.com").headers["Location"] == "/"  # password alone again
    assert "2fa.reset" in _actions(app)
    # Members cannot reset anybody.
    assert owner.post(f"/accounts/{admin}/second-factor/reset",
                      data={"csrf_token": csrf_from(owner.get("/accounts/me").get_data(as_text=True))}
                      ).status_code == 403


def test_the_cli_resets_a_locked_out_admin(app, admin, clock):
    client = browser(app)
    _login(client, "admin@example.com")
    enrol(client, clock)
    result = app.test_cli_runner().invoke(args=["users", "reset-2fa", "admin@example.com"])
    assert result.exit_code == 0, result.output
    assert "second factor removed for admin@example.com" in result.output
    assert not _logged_in(client)
    assert _login(client, "admin@example.com").headers["Location"] == "/"
    again = app.test_cli_runner().invoke(args=["users", "reset-2fa", "admin@example.com"])
    assert again.exit_code == 0 and again.output.strip() == "admin@example.com had no second factor; its sessions are ended"
    assert app.test_cli_runner().invoke(args=["users", "reset-2fa", "nobody@example.com"]).exit_code != 0


def test_removing_the_app_is_audited_and_no_secret_is_kept_readable(app, client, user, clock, caplog):
    import logging

    from sqlalchemy import text

    caplog.set_level(logging.DEBUG)
    _login(client, "owner@example.com")
    totp, recovery = enrol(client, clock)
    with app.app_context():
        stored = db.session.execute(text("SELECT totp_secret FROM users WHERE id = :id"), {"id": user}).scalar()
        assert stored and totp.secret not in stored
        hashes = " ".join(db.session.execute(text("SELECT code_hash FROM recovery_codes")).scalars())
        assert len(hashes.split()) == 10 and not any(code.replace("-", "") in hashes for code in recovery)
        audit = " ".join(filter(None, db.session.scalars(select(AuditEvent.detail))))
    for code in (totp.secret, *recovery):
        assert code not in caplog.text and code not in audit
    page = client.get("/accounts/me").get_data(as_text=True)
    client.post("/accounts/me/totp/remove", data={"csrf_token": csrf_from(page)})
    _log_out(client)
    assert _login(client, "owner@example.com").headers["Location"] == "/"
    assert "2fa.totp_removed" in _actions(app)


@pytest.mark.parametrize("junk", ["not json", "[]", '{"id": "x"}', '{"id": 1, "response": {}}', "{" * 5000])
def test_a_broken_passkey_answer_is_refused_not_a_crash(app, client, user, junk):
    page = client.get("/auth/login").get_data(as_text=True)
    token = csrf_from(page)
    options = client.post("/auth/passkey/options", headers={"X-CSRFToken": token})
    assert options.status_code == 200 and options.json["rpId"] == "localhost" and options.json["challenge"]
    response = client.post("/auth/passkey", data={"csrf_token": token, "passkey": junk})
    assert response.status_code == 401 and "did not work" in response.get_data(as_text=True)
    assert not _logged_in(client)

    _login(client, "owner@example.com")
    me = client.get("/accounts/me").get_data(as_text=True)
    assert client.post("/accounts/me/passkeys/options", headers={"X-CSRFToken": csrf_from(me)}).status_code == 200
    response = client.post("/accounts/me/passkeys", data={"csrf_token": csrf_from(me), "passkey": junk},
                           follow_redirects=True)
    assert response.status_code == 200 and "could not be verified" in response.get_data(as_text=True)
    with app.app_context():
        assert not second_factor.accounts_with_passkeys()


def test_a_passkey_challenge_is_used_once(app, client, user):
    """Options, then two answers: the second finds no challenge (deleted by the first)."""
    page = client.get("/auth/login").get_data(as_text=True)
    client.post("/auth/passkey/options", headers={"X-CSRFToken": csrf_from(page)})
    with client.session_transaction() as state:
        token = state[second_factor.CHALLENGE_KEY]
    with app.app_context():
        from integration.models import WebAuthnChallenge
        assert db.session.get(WebAuthnChallenge, second_factor._digest(token)) is not None
    client.post("/auth/passkey", data={"csrf_token": csrf_from(page), "passkey": '{"id": "x"}'})
    with app.app_context():
        assert db.session.get(WebAuthnChallenge, second_factor._digest(token)) is None


def test_the_pop_up_refuses_to_link_for_an_admin_who_must_enrol(app_config, sandbox, admin):
    from .test_identity import activate, submit

    app = create_app({**app_config, "REQUIRE_2FA": "admins"})
    client = app.test_client()
    integration = activate(client, sandbox)
    response = submit(client, integration, "", email="admin@example.com", password=PASSWORD)
    assert response.status_code == 403 and "Set up a second factor first" in response.get_data(as_text=True)
    with app.app_context():
        from integration.models import StoreLink
        assert StoreLink.by_consumer_key(integration.consumer_key).status != "linked"


def test_key_rotation_re_encrypts_totp_secrets(app, app_config, user):
    from cryptography.fernet import Fernet

    from integration.crypto import rotate_all

    secret = pyotp.random_base32()
    with app.app_context():
        owner = db.session.get(User, user)
        owner.totp_secret, owner.totp_enrolled_at = secret, None
        db.session.commit()
    rotated = create_app({**app_config, "ENCRYPTION_KEYS": (Fernet.generate_key().decode(),
                                                            app_config["ENCRYPTION_KEYS"][0])})
    with rotated.app_context():
        assert rotate_all()["users"] == 1
    only_new = create_app({**app_config, "ENCRYPTION_KEYS": rotated.config["ENCRYPTION_KEYS"][:1]})
    with only_new.app_context():
        assert db.session.get(User, user).totp_secret == secret
