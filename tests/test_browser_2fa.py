"""Two-factor login in a real browser: an authenticator app (codes computed here), recovery codes, a
replayed code, passkeys through Chromium's virtual authenticator, the pop-up's second step, and the policy
that sends an admin to enrol."""

from __future__ import annotations

import pyotp
import pytest

from integration import create_app
from integration.extensions import db
from integration.models import Passkey, User, utcnow

from .conftest import PASSWORD
from .servers import Served
from .test_browser import ARTIFACTS, browser, page, pytestmark  # noqa: F401 - fixtures and marks
from .test_second_factor import clock  # noqa: F401 - fixture


def _shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"2fa-{name}.png"), full_page=True)


def _password(page, base, email="owner@example.com"):
    page.goto(f"{base}/auth/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")


def _log_out(page):
    page.click("header button:has-text('Log out')")
    page.wait_for_selector("text=You are logged out.")


def _enrol(page, base, clock) -> tuple[pyotp.TOTP, list[str]]:
    page.goto(f"{base}/accounts/me")
    page.click("a[href$='/accounts/me/totp']")
    assert page.locator("img.qr").evaluate("img => img.complete && img.naturalWidth > 100")
    _shot(page, "enrol-qr")
    totp = pyotp.TOTP(page.inner_text("code.totp-secret"))
    page.fill("input[name=code]", totp.at(clock[0]))
    page.click("input[type=submit]")
    page.wait_for_selector("text=they are not shown again")
    _shot(page, "recovery-codes")
    return totp, page.locator("ul.recovery-codes code").all_inner_texts()


def test_an_authenticator_app_guards_the_login(live_app, user, page, clock):
    base = live_app.url
    _password(page, base)
    totp, recovery = _enrol(page, base, clock)
    assert len(recovery) == 10
    page.goto(f"{base}/accounts/me")
    assert "Recovery codes left: 10" in page.inner_text("#second-factor ~ .card")
    assert totp.secret not in page.content()
    _log_out(page)

    # The password leads to the second step; the code typed at enrolment is a replay there.
    _password(page, base)
    page.wait_for_selector("h1:has-text('Second step')")
    page.fill("input[name=code]", totp.at(clock[0]))
    page.click("input[type=submit]")
    page.wait_for_selector("[role=alert]:has-text('did not work')")
    _shot(page, "replay-refused")
    clock[0] += 30
    page.fill("input[name=code]", totp.at(clock[0]))
    page.click("input[type=submit]")
    page.wait_for_selector("text=Linked stores")
    _log_out(page)

    # A recovery code logs in once.
    for expected in ("Linked stores", "did not work"):
        _password(page, base)
        page.fill("input[name=code]", recovery[0])
        page.click("input[type=submit]")
        page.wait_for_selector(f"text={expected}")
        if expected == "Linked stores":
            _log_out(page)
    _shot(page, "recovery-code-used-twice")


def _virtual_authenticator(page):
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True, "hasUserVerification": True,
        "isUserVerified": True}})
    return cdp


_ANSWER_WITH_ANY_PASSKEY = """async () => {
  const form = document.getElementById("second-step");
  const response = await fetch("/auth/passkey/options", {method: "POST",
    headers: {"X-CSRFToken": form.querySelector("input[name=csrf_token]").value}});
  const credential = await navigator.credentials.get(
    {publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(await response.json())});
  form.querySelector("input[name=passkey]").value = JSON.stringify(credential.toJSON());
  HTMLFormElement.prototype.submit.call(form);
}"""


def test_a_passkey_is_registered_then_used_as_second_factor_and_without_a_password(live_app, app, user, admin,
                                                                                 page):
    # WebAuthn needs a secure context: http://localhost is one, and "localhost" is the RP id.
    base = live_app.url.replace("127.0.0.1", "localhost")
    _virtual_authenticator(page)
    _password(page, base)
    page.wait_for_selector("text=Linked stores")
    page.goto(f"{base}/accounts/me")
    page.fill("#passkey-add input[name=name]", "Test laptop")
    page.click("text=Add a passkey")
    page.wait_for_selector("text=Passkey “Test laptop” added.")
    _shot(page, "passkey-added")
    _log_out(page)
    with app.app_context():
        first_count = db.session.query(Passkey).one().sign_count

    # As the second factor after the password.
    _password(page, base)
    page.wait_for_selector("h1:has-text('Second step')")
    page.click("text=Use a passkey")
    page.wait_for_selector("text=Linked stores")
    _log_out(page)

    # Another account's second step: the owner's passkey (the only one this authenticator holds) is refused.
    with app.app_context():
        other = db.session.get(User, admin)
        other.totp_secret, other.totp_enrolled_at = pyotp.random_base32(), utcnow()
        db.session.commit()
    _password(page, base, "admin@example.com")
    page.wait_for_selector("h1:has-text('Second step')")
    assert page.locator("text=Use a passkey").count() == 0  # not offered: the account has none
    page.evaluate(_ANSWER_WITH_ANY_PASSKEY)
    page.wait_for_selector("[role=alert]:has-text('did not work')")
    assert "admin@example.com" not in page.inner_text("header")

    # Alone, without a password.
    page.goto(f"{base}/auth/login")
    _shot(page, "login-with-passkey-button")
    page.click("text=Sign in with a passkey")
    page.wait_for_selector("text=Linked stores")
    assert "owner@example.com" in page.inner_text("header")
    with app.app_context():
        passkey = db.session.query(Passkey).one()
        assert passkey.sign_count > first_count and passkey.last_used_at is not None
        # A counter behind the one we saw last is a cloned authenticator: refused.
        passkey.sign_count = 10**6
        db.session.commit()
    _log_out(page)
    page.click("text=Sign in with a passkey")
    page.wait_for_selector("[role=alert]:has-text('did not work')")
    assert "owner@example.com" not in page.inner_text("header")


def test_the_identity_pop_up_completes_an_activation_after_the_second_factor(live_app, app, sandbox, user, page,
                                                                            clock):
    secret = pyotp.random_base32()
    with app.app_context():  # an account that set an authenticator app up before
        owner = db.session.get(User, user)
        owner.totp_secret, owner.totp_enrolled_at = secret, utcnow()
        db.session.commit()
    page.goto(f"{sandbox.url}/admin/integrations")
    with page.expect_popup() as popup_info:
        page.click("tr[data-integration='1'] button.activate")
    popup = popup_info.value
    popup.wait_for_load_state()
    popup.fill("input[name=email]", "owner@example.com")
    popup.fill("input[name=password]", PASSWORD)
    popup.click("input[type=submit]")
    popup.wait_for_selector("h1:has-text('Link your Magento store')")
    popup.wait_for_selector("input[name=code]")
    assert sandbox.url in popup.inner_text("main") and popup.locator("header nav").count() == 0
    _shot(popup, "popup-second-step")
    popup.fill("input[name=code]", pyotp.TOTP(secret).at(clock[0]))
    with popup.expect_event("close", timeout=20000):
        popup.click("input[type=submit]")
    page.wait_for_selector("tr[data-integration='1'] .status-Active")


@pytest.fixture
def strict_app(app_config):
    app = create_app({**app_config, "REQUIRE_2FA": "admins"})
    served = Served(app)
    yield served
    served.stop()


def test_an_admin_the_policy_covers_is_sent_to_enrol(strict_app, admin, page, clock):
    base = strict_app.url
    _password(page, base, "admin@example.com")
    page.wait_for_selector("h2#second-factor")
    assert page.url.endswith("/accounts/me#second-factor")
    assert "must have a second factor" in page.inner_text("main")
    _shot(page, "admin-sent-to-enrol")
    for path in ("/", "/accounts/", "/audit", "/webhooks/", "/stores/new"):
        page.goto(base + path)
        assert page.url == f"{base}/accounts/me#second-factor", path
        assert "before anything else" in page.inner_text("main .flash"), path
    _enrol(page, base, clock)
    page.click("header nav a:has-text('Accounts')")
    page.wait_for_selector("h1:has-text('Accounts')")
    assert "app" in page.inner_text("tbody tr:has-text('admin@example.com')")
