"""The second factor's guards, each through the pages a person (or their browser's passkey) uses: TOTP's
one-step window and its replay rule, code formats, recovery codes, passkeys checked against their challenge,
origin, user verification and sign counter, challenges used once and for one purpose, removal and an admin's
reset taking everything away. Passkeys are answered by a software authenticator (``tests/passkeys.py``)."""

from __future__ import annotations

import datetime as dt
import json
import re

from sqlalchemy import select

from integration import create_app
from integration.extensions import db
from integration.models import AuditEvent, Passkey, User, WebAuthnChallenge

from .conftest import PASSWORD, csrf_from
from .passkeys import SoftPasskey
from .test_second_factor import T0, _log_out, _logged_in, _login, _second_step, browser, clock, enrol  # noqa: F401

WRONG = "That code or passkey did not work. Try again."


def audit(app, action):
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.detail).where(AuditEvent.action == action)
                                       .order_by(AuditEvent.id)))


def add_passkey(client, soft, name="Laptop", **answer):
    """Through the account page: options, the authenticator's answer, the form. (options, final page)."""
    token = csrf_from(client.get("/accounts/me").get_data(as_text=True))
    options = client.post("/accounts/me/passkeys/options", headers={"X-CSRFToken": token}).json
    page = client.post("/accounts/me/passkeys", data={"csrf_token": token, "name": name,
                                                      "passkey": soft.register(options, **answer)},
                       follow_redirects=True)
    return options, page.get_data(as_text=True)


def passkey_options(client, page):
    token = csrf_from(client.get(page).get_data(as_text=True))
    return token, client.post("/auth/passkey/options", headers={"X-CSRFToken": token}).json


def sign_in_with(client, soft, **answer):
    """The login page's "sign in with a passkey" (no password)."""
    token, options = passkey_options(client, "/auth/login")
    return client.post("/auth/passkey", data={"csrf_token": token, "passkey": soft.answer(options, **answer)})


def second_step_with(client, soft, **answer):
    token, options = passkey_options(client, "/auth/second-step")
    return client.post("/auth/second-step", data={"csrf_token": token, "passkey": soft.answer(options, **answer)})


def refused(response):
    return response.status_code == 401 and WRONG in response.get_data(as_text=True)


# --- TOTP ------------------------------------------------------------------------------------

def test_a_code_counts_for_one_step_either_way_and_each_step_only_once(app, user, clock):
    client = browser(app)
    _login(client, "owner@example.com")
    totp, _ = enrol(client, clock)  # the enrolment spent the step of T0
    _log_out(client)
    clock[0] += 3 * 30
    step = lambda n: totp.at(T0 + n * 30)  # noqa: E731 - the code of step T0 + n

    _login(client, "owner@example.com")
    assert "Use a passkey" not in client.get("/auth/second-step").get_data(as_text=True)  # it has none
    assert refused(_second_step(client, step(1)))  # two steps ago: too old
    assert refused(_second_step(client, step(5)))  # two steps ahead: too far
    assert _second_step(client, step(2)).status_code == 302 and _logged_in(client)  # a phone a step behind
    _log_out(client)
    _login(client, "owner@example.com")
    assert refused(_second_step(client, step(2)))  # the same code again
    assert _second_step(client, step(4)).status_code == 302  # a phone a step ahead
    _log_out(client)
    _login(client, "owner@example.com")
    assert refused(_second_step(client, step(3)))  # the current step, but older than the last one used
    assert not _logged_in(client)
    assert audit(app, "2fa.failed") == ["code"] * 4


def test_a_code_may_have_spaces_but_must_be_six_ascii_digits(app, user, clock):
    client = browser(app)
    _login(client, "owner@example.com")
    totp, _ = enrol(client, clock)
    _log_out(client)
    clock[0] += 30
    code = totp.at(clock[0])
    _login(client, "owner@example.com")
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in code)
    for wrong in (code[:5], code + "0", "12a456", fullwidth, "٣" * 6):
        assert refused(_second_step(client, wrong)), wrong
    assert _second_step(client, f" {code[:3]} {code[3:]} ").status_code == 302 and _logged_in(client)


def test_an_unconfirmed_authenticator_app_is_not_a_second_factor(app, user, clock):
    client = browser(app)
    _login(client, "owner@example.com")
    page = client.get("/accounts/me/totp").get_data(as_text=True)
    secret = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', page).group(1)
    _log_out(client)
    assert _login(client, "owner@example.com").headers["Location"] == "/"  # the password alone, still
    # With a passkey it has a second factor, but the unconfirmed app's codes are not one.
    add_passkey(client, SoftPasskey())
    _log_out(client)
    _login(client, "owner@example.com")
    import pyotp

    assert refused(_second_step(client, pyotp.TOTP(secret).at(clock[0])))


def test_enrolling_twice_is_refused_and_removing_the_app_lets_it_enrol_again_at_once(app, user, clock):
    client = browser(app)
    _login(client, "owner@example.com")
    totp, recovery = enrol(client, clock)
    again = client.get("/accounts/me/totp", follow_redirects=True).get_data(as_text=True)
    assert "An authenticator app is already set up; remove it first." in again
    _log_out(client)
    clock[0] += 30
    _login(client, "owner@example.com")
    assert _second_step(client, totp.at(clock[0])).status_code == 302  # this step is now used
    me = client.get("/accounts/me").get_data(as_text=True)
    client.post("/accounts/me/totp/remove", data={"csrf_token": csrf_from(me)})
    assert audit(app, "2fa.totp_removed") == [None]
    new_totp, _ = enrol(client, clock)  # a new app, in the same 30 s step
    assert new_totp.secret != totp.secret
    _log_out(client)
    clock[0] += 30
    _login(client, "owner@example.com")
    assert refused(_second_step(client, totp.at(clock[0])))  # the old app's codes are gone
    assert refused(_second_step(client, recovery[0]))  # and so are its recovery codes
    assert _second_step(client, new_totp.at(clock[0])).status_code == 302


def test_confirming_needs_a_started_app_and_the_current_code(app, user, clock):
    client = browser(app)
    _login(client, "owner@example.com")
    me = client.get("/accounts/me").get_data(as_text=True)
    # A confirmation with no scanned secret (the form posted without the page first).
    with app.app_context():
        assert db.session.get(User, user).totp_secret is None
    started = client.post("/accounts/me/totp", data={"csrf_token": csrf_from(me), "code": "123456"})
    assert started.status_code == 400 and "Start again: scan the QR code first." in started.get_data(as_text=True)
    page = started.get_data(as_text=True)
    secret = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', page).group(1)
    import pyotp

    late = client.post("/accounts/me/totp", data={"csrf_token": csrf_from(page),
                                                  "code": pyotp.TOTP(secret).at(clock[0] - 60)})
    assert late.status_code == 400 and "not the one the app shows now" in late.get_data(as_text=True)


def test_recovery_codes_are_typed_loosely_used_once_and_only_by_their_account(app, user, admin, clock):
    owner = browser(app)
    _login(owner, "owner@example.com")
    _, codes = enrol(owner, clock)
    _log_out(owner)
    boss = browser(app, "10.9.9.9")
    _login(boss, "admin@example.com")
    enrol(boss, clock)
    _log_out(boss)

    _login(boss, "admin@example.com")
    assert refused(_second_step(boss, codes[0]))  # another account's code
    _login(owner, "owner@example.com")
    assert refused(_second_step(owner, codes[0][:-1]))  # nine characters
    assert refused(_second_step(owner, codes[0] + "0"))  # eleven
    assert _second_step(owner, " " + codes[0].upper().replace("-", " ") + " ").status_code == 302
    _log_out(owner)
    _login(owner, "owner@example.com")
    assert refused(_second_step(owner, codes[0].replace("-", "")))  # used
    assert _second_step(owner, codes[1]).status_code == 302
    assert audit(app, "2fa.recovery_code_used") == ["9 left", "8 left"]
    assert "Recovery codes left: <strong>8</strong>" in owner.get("/accounts/me").get_data(as_text=True)


def test_the_second_step_keeps_where_the_login_was_going_and_ends_with_the_account(app, user, clock):
    client = browser(app)
    _login(client, "owner@example.com")
    totp, _ = enrol(client, clock)
    _log_out(client)
    page = client.get("/auth/login?next=/accounts/me").get_data(as_text=True)
    answer = client.post("/auth/login?next=/accounts/me", data={"csrf_token": csrf_from(page),
                                                                "email": "owner@example.com", "password": PASSWORD})
    assert answer.headers["Location"] == "/auth/second-step"
    clock[0] += 30
    assert _second_step(client, totp.at(clock[0])).headers["Location"] == "/accounts/me"
    _log_out(client)

    # Disabled between the password and the code: the second step starts over.
    _login(client, "owner@example.com")
    with app.app_context():
        db.session.get(User, user).active = False
        db.session.commit()
    assert client.get("/auth/second-step").headers["Location"] == "/auth/login"


# --- passkeys -----------------------------------------------------------------------------

def test_a_passkey_is_a_second_factor_and_signs_in_without_a_password(app, user):
    client = browser(app)
    soft = SoftPasskey()
    _login(client, "owner@example.com")
    options, page = add_passkey(client, soft, name="  Laptop  ")
    assert options["rp"]["id"] == "localhost" and options["excludeCredentials"] == []
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert "Passkey \u201cLaptop\u201d added." in page
    assert audit(app, "2fa.passkey_added") == ["Laptop"]
    _log_out(client)

    assert _login(client, "owner@example.com").headers["Location"] == "/auth/second-step"
    assert not _logged_in(client)
    assert "Use a passkey" in client.get("/auth/second-step").get_data(as_text=True)
    _, pending = passkey_options(client, "/auth/second-step")
    assert [c["id"] for c in pending["allowCredentials"]] == [soft.id] and pending["userVerification"] == "required"
    client.post("/auth/second-step", data={
        "csrf_token": csrf_from(client.get("/auth/second-step").get_data(as_text=True)), "passkey": "{}"})
    assert second_step_with(client, soft).status_code == 302 and _logged_in(client)
    _log_out(client)

    _, anyone = passkey_options(client, "/auth/login")
    assert anyone["allowCredentials"] == []
    assert sign_in_with(client, soft).status_code == 302 and _logged_in(client)
    with app.app_context():
        used = db.session.scalar(select(Passkey))
        assert used.sign_count == soft.sign_count == 2 and used.last_used_at is not None


def test_a_passkey_answer_must_come_from_our_origin_verified_and_with_a_growing_counter(app, user):
    client = browser(app)
    soft = SoftPasskey()
    _login(client, "owner@example.com")
    add_passkey(client, soft)
    _log_out(client)
    assert refused(sign_in_with(client, soft, origin="https://evil.example.com"))
    assert refused(sign_in_with(client, soft, rp_id="evil.example.com"))
    assert refused(sign_in_with(client, soft, verified=False))
    assert sign_in_with(client, soft, count_by=5).status_code == 302
    _log_out(client)
    assert refused(sign_in_with(client, soft, count_by=0))  # a cloned authenticator: the counter did not grow
    assert refused(sign_in_with(client, soft, count_by=-3))
    assert refused(sign_in_with(client, SoftPasskey()))  # a passkey nobody registered
    assert not _logged_in(client)
    assert audit(app, "2fa.failed") == ["passkey sign-in"] * 6


def test_an_answer_is_used_once_and_only_in_the_browser_that_asked(app, user):
    client = browser(app)
    soft = SoftPasskey()
    _login(client, "owner@example.com")
    add_passkey(client, soft)
    _log_out(client)
    token, options = passkey_options(client, "/auth/login")
    answer = soft.answer(options)
    # Another browser (no challenge in its session) cannot use it.
    other = browser(app, "10.4.4.4")
    other_token = csrf_from(other.get("/auth/login").get_data(as_text=True))
    assert refused(other.post("/auth/passkey", data={"csrf_token": other_token, "passkey": answer}))
    assert client.post("/auth/passkey", data={"csrf_token": token, "passkey": answer}).status_code == 302
    _log_out(client)
    token = csrf_from(client.get("/auth/login").get_data(as_text=True))
    assert refused(client.post("/auth/passkey", data={"csrf_token": token, "passkey": answer}))  # replayed


def older(app, by):
    """Every challenge made ``by`` earlier (time passes)."""
    with app.app_context():
        for challenge in db.session.scalars(select(WebAuthnChallenge)):
            challenge.expires_at -= by
        db.session.commit()


def test_a_challenge_expires_and_serves_only_what_it_was_made_for(app, user):
    client = browser(app)
    soft = SoftPasskey()
    _login(client, "owner@example.com")
    add_passkey(client, soft)
    # A registration challenge does not sign in.
    token = csrf_from(client.get("/accounts/me").get_data(as_text=True))
    registration = client.post("/accounts/me/passkeys/options", headers={"X-CSRFToken": token}).json
    answer = soft.answer({"rpId": "localhost", "challenge": registration["challenge"]})
    token = csrf_from(client.get("/auth/login").get_data(as_text=True))
    assert refused(client.post("/auth/passkey", data={"csrf_token": token, "passkey": answer}))
    _log_out(client)
    # An expired one does not either (and expired ones are cleared when the next is made).
    token, options = passkey_options(client, "/auth/login")
    older(app, dt.timedelta(minutes=5, seconds=1))
    assert refused(client.post("/auth/passkey", data={"csrf_token": token, "passkey": soft.answer(options)}))
    passkey_options(client, "/auth/login")  # asked for, never answered
    older(app, dt.timedelta(minutes=6))
    passkey_options(browser(app, "10.5.5.5"), "/auth/login")
    with app.app_context():  # the abandoned, expired one was cleared when the next was made
        assert db.session.scalar(select(db.func.count()).select_from(WebAuthnChallenge)) == 1
        lifetime = db.session.scalar(select(WebAuthnChallenge.expires_at)) - dt.datetime.now(dt.UTC).replace(
            tzinfo=None)
        assert dt.timedelta(minutes=4, seconds=50) < lifetime <= dt.timedelta(minutes=5)
    # Just within its five minutes, it works.
    token, options = passkey_options(client, "/auth/login")
    older(app, dt.timedelta(minutes=4, seconds=50))
    assert client.post("/auth/passkey", data={"csrf_token": token, "passkey": soft.answer(options)}
                       ).status_code == 302


def test_another_accounts_passkey_does_not_finish_this_login(app, user, admin, clock):
    mine, theirs = SoftPasskey(), SoftPasskey()
    owner, boss = browser(app), browser(app, "10.6.6.6")
    _login(owner, "owner@example.com")
    add_passkey(owner, mine)
    _log_out(owner)
    _login(boss, "admin@example.com")
    add_passkey(boss, theirs)
    _log_out(boss)
    _login(owner, "owner@example.com")
    assert refused(second_step_with(owner, theirs)) and not _logged_in(owner)
    assert audit(app, "2fa.failed") == ["passkey"]
    assert second_step_with(owner, mine).status_code == 302 and _logged_in(owner)


def test_registration_is_verified_named_and_each_authenticator_registered_once(app, user):
    client = browser(app)
    soft = SoftPasskey()
    _login(client, "owner@example.com")
    me = client.get("/accounts/me").get_data(as_text=True)
    # No options asked first: nothing to answer.
    fake = soft.register({"rp": {"id": "localhost"}, "user": {"id": "x"}, "challenge": "AAAA"})
    expired = client.post("/accounts/me/passkeys", data={"csrf_token": csrf_from(me), "passkey": fake},
                          follow_redirects=True)
    assert "The passkey request expired; try again." in expired.get_data(as_text=True)
    for answer in ({"origin": "https://evil.example.com"}, {"verified": False}, {"rp_id": "evil.example.com"}):
        _, page = add_passkey(client, soft, **answer)
        assert "could not be verified" in page, answer
    _, page = add_passkey(client, soft, name="")
    assert "Passkey \u201cPasskey\u201d added." in page
    second = SoftPasskey()
    options, _ = add_passkey(client, second, name="x" * 100)
    assert [c["id"] for c in options["excludeCredentials"]] == [soft.id]
    _log_out(client)
    assert sign_in_with(client, second).status_code == 302  # either passkey, each with its own key
    _log_out(client)
    _login(client, "owner@example.com")
    assert second_step_with(client, second).status_code == 302
    with app.app_context():
        assert sorted(p.name for p in db.session.scalars(select(Passkey))) == ["Passkey", "x" * 100]


def test_the_longest_answer_a_form_takes_is_verified(app, user):
    client = browser(app)
    soft = SoftPasskey()
    _login(client, "owner@example.com")
    token = csrf_from(client.get("/accounts/me").get_data(as_text=True))
    options = client.post("/accounts/me/passkeys/options", headers={"X-CSRFToken": token}).json
    answer = soft.register(options)
    padded = answer[:-1] + " " * (65536 - len(answer)) + "}"
    assert len(padded) == 65536 and json.loads(padded)
    page = client.post("/accounts/me/passkeys", data={"csrf_token": token, "passkey": padded}, follow_redirects=True)
    assert "added." in page.get_data(as_text=True)


def test_the_relying_party_is_the_public_url_when_one_is_set(app_config, user):
    app = create_app({**app_config, "PUBLIC_URL": "https://companion.example.com:8443/"})
    client = browser(app)
    _login(client, "owner@example.com")
    options, page = add_passkey(client, SoftPasskey())  # answers for http://localhost
    assert options["rp"]["id"] == "companion.example.com" and "could not be verified" in page
    soft = SoftPasskey(origin="https://companion.example.com:8443")
    _, page = add_passkey(client, soft)
    assert "added." in page
    _log_out(client)
    assert sign_in_with(client, soft).status_code == 302


def test_removing_a_passkey_or_an_admins_reset_takes_it_away(app, user, admin, clock):
    owner, boss = browser(app), browser(app, "10.7.7.7")
    mine, theirs = SoftPasskey(), SoftPasskey()
    _login(boss, "admin@example.com")
    enrol(boss, clock)
    add_passkey(boss, theirs, name="Boss key")
    _login(owner, "owner@example.com")
    add_passkey(owner, mine, name="Phone")
    with app.app_context():
        ids = {p.name: p.id for p in db.session.scalars(select(Passkey))}
    assert boss.get("/accounts/").get_data(as_text=True).count("passkey</td>") == 2  # the admin's list
    token = csrf_from(owner.get("/accounts/me").get_data(as_text=True))
    assert owner.post(f"/accounts/me/passkeys/{ids['Boss key']}/remove", data={"csrf_token": token}
                      ).status_code == 404
    assert owner.post(f"/accounts/me/passkeys/{ids['Phone']}/remove", data={"csrf_token": token}
                      ).status_code == 302
    assert audit(app, "2fa.passkey_removed") == ["Phone"]
    assert boss.get("/accounts/").get_data(as_text=True).count("passkey</td>") == 1
    _log_out(owner)
    assert refused(sign_in_with(owner, mine))
    assert _login(owner, "owner@example.com").headers["Location"] == "/"  # no second factor left

    # The admin loses its passkey to a reset (the CLI's, for a locked-out admin).
    assert app.test_cli_runner().invoke(args=["users", "reset-2fa", "admin@example.com"]).exit_code == 0
    with app.app_context():  # nothing of the old factors is kept, not even encrypted
        reset = User.by_email("admin@example.com")
        assert (reset.totp_secret, reset.totp_enrolled_at, reset.totp_last_step) == (None, None, None)
    assert not _logged_in(boss)
    assert refused(sign_in_with(boss, theirs))
    assert _login(boss, "admin@example.com").headers["Location"] == "/"
    assert audit(app, "2fa.reset") == ["admin@example.com"]
    # An admin's reset from the accounts page records who and from where.
    page = boss.get("/accounts/").get_data(as_text=True)
    assert boss.post(f"/accounts/{user}/second-factor/reset", data={"csrf_token": csrf_from(page)}).status_code == 302
    with app.app_context():
        by_page = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "2fa.reset")).all()[-1]
        assert (by_page.detail, by_page.user_id, by_page.remote_addr) == ("owner@example.com", admin, "10.7.7.7")


# --- policy ---------------------------------------------------------------------------------

def test_who_must_enrol_follows_the_policy(app_config, user, admin):
    for policy, admin_must, member_must in (("admins", True, False), ("all", True, True), ("off", False, False)):
        app = create_app({**app_config, "REQUIRE_2FA": policy})
        for email, must in (("admin@example.com", admin_must), ("owner@example.com", member_must)):
            client = browser(app)
            _login(client, email)
            home = client.get("/")
            assert (home.status_code, home.headers.get("Location")) == (
                (302, "/accounts/me#second-factor") if must else (200, None)), (policy, email)


def test_removing_the_app_takes_its_recovery_codes_even_with_a_passkey_left(app, user, clock):
    client = browser(app)
    _login(client, "owner@example.com")
    _, recovery = enrol(client, clock)
    add_passkey(client, SoftPasskey())
    me = client.get("/accounts/me").get_data(as_text=True)
    client.post("/accounts/me/totp/remove", data={"csrf_token": csrf_from(me)})
    with app.app_context():
        removed = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "2fa.totp_removed"))
        assert (removed.user_id, removed.remote_addr) == (user, "10.1.1.1")
    _log_out(client)
    assert _login(client, "owner@example.com").headers["Location"] == "/auth/second-step"  # the passkey
    assert refused(_second_step(client, recovery[0]))


def test_a_passkey_keeps_the_counter_it_was_registered_with(app, user):
    """An authenticator already used elsewhere registers with its counter; a clone answering with a lower one
    is refused from the first sign-in."""
    client = browser(app)
    soft = SoftPasskey(sign_count=7)
    _login(client, "owner@example.com")
    add_passkey(client, soft)
    _log_out(client)
    assert refused(sign_in_with(client, soft, count_by=-2))
    assert sign_in_with(client, soft, count_by=3).status_code == 302


def test_setting_up_a_second_factor_shows_in_the_audit(app, user, admin, clock):
    client = browser(app)
    _login(client, "owner@example.com")
    enrol(client, clock)
    add_passkey(client, SoftPasskey(), name="Laptop")
    ops = browser(app, "10.2.2.2")
    _login(ops, "admin@example.com")
    page = ops.get("/audit").get_data(as_text=True)
    for action in (r"2fa\.totp_enrolled", r"2fa\.passkey_added"):  # who, and from where
        assert re.search(rf"<td>{action}</td><td>owner@example\.com</td>\s*<td>10\.1\.1\.1</td>", page), action
