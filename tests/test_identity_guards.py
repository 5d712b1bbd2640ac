"""Where the identity pop-up may send the admin back to: ``success_call_back`` is followed only when it
leads to the store's own host (or an allow-listed one), as a plain http(s) address; anything else gets
the page that lets the admin decide. Linking itself goes ahead either way."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import csrf_from
from .test_identity import activate, login, submit
from .test_second_factor import clock  # noqa: F401 - the TOTP clock fixture

SUCCESS = "http://127.0.0.1:{port}/admin/admin/integration/loginSuccessCallback/"

#: Each one is refused by exactly one clause of the rule, the others would let it through.
REFUSED = {
    "scheme": "javascript://127.0.0.1/%0aalert(document.cookie)",
    "scheme, upper case": "JAVASCRIPT://127.0.0.1/%0aalert(1)",
    "no host": "http:///admin/integration/loginSuccessCallback/",
    "no host, only a port": "http://:8080/admin/",
    "user name": "http://admin@127.0.0.1/admin/",
    "password only": "http://:secret@127.0.0.1/admin/",
    "space": "http://127.0.0.1/admin/ x",
    "tab": "http://127.0.0.1/admin/\tx",
    "carriage return": "http://127.0.0.1/admin/\rSet-Cookie:%20x=1",
    "line feed": "http://127.0.0.1/admin/\nSet-Cookie:%20x=1",
    "backslash": "http://127.0.0.1/admin\\x",
    "not a URL": "http://[::1/admin/",
    "another host": "https://evil.example/admin/",
    "a host ending like the store's": "http://127.0.0.1.evil.example/admin/",
}


@pytest.fixture
def linked_popup(app, client, sandbox, user):
    """A store linked through the pop-up (the admin logged in); submitting again only picks the way back."""
    login(client)
    integration = activate(client, sandbox)
    back = SUCCESS.format(port=sandbox.server.server_port)
    response = submit(client, integration, back)
    assert response.status_code == 302 and response.headers["Location"] == back
    assert integration.status == "Active"
    return integration, back


@pytest.mark.parametrize("why", sorted(REFUSED))
def test_a_success_call_back_off_the_store_is_never_followed(client, linked_popup, why):
    integration, _ = linked_popup
    response = submit(client, integration, REFUSED[why])
    assert response.status_code == 200, why
    assert "Location" not in response.headers, why
    assert "did not redirect automatically" in response.get_data(as_text=True), why


def test_the_store_itself_and_allow_listed_hosts_are_followed(app, client, linked_popup, sandbox):
    integration, back = linked_popup
    port = sandbox.server.server_port
    for target in (back, f"https://127.0.0.1:{port}/admin/?a=1&b=2", "http://localhost/admin/"):
        response = submit(client, integration, target)
        assert response.status_code == 302 and response.headers["Location"] == target, target
    # The store's own host is followed even when it is not on the allow-list (a public store)...
    app.config["ALLOWED_STORE_HOSTS"] = ("localhost",)
    response = submit(client, integration, back)
    assert response.status_code == 302 and response.headers["Location"] == back
    # ...and an allow-listed host other than the store's is followed too, nothing else.
    response = submit(client, integration, "http://localhost/admin/")
    assert response.status_code == 302 and response.headers["Location"] == "http://localhost/admin/"
    response = submit(client, integration, "http://127.0.0.2/admin/")
    assert response.status_code == 200 and "Location" not in response.headers


def _hidden_fields(page: str, action: str) -> dict[str, str]:
    """The hidden fields of the page's form posting to ``action``, as a browser would send them."""
    import html
    import re

    form = re.search(rf'<form method="post" action="{re.escape(action)}".*?</form>', page, re.S).group()
    fields = {}
    for tag in re.findall(r"<input[^>]*>", form):
        if 'type="hidden"' in tag:
            name = re.search(r'name="([^"]*)"', tag).group(1)
            value = re.search(r'value="([^"]*)"', tag)
            fields[name] = html.unescape(value.group(1)) if value else ""
    return fields


def test_the_popup_form_carries_magentos_way_back_through_the_login(client, sandbox, user):
    """Magento puts ``success_call_back`` in the pop-up's address; the login form must carry it, so that the
    admin lands back in Magento (which closes the pop-up), with nothing but the form as the browser sends it."""
    integration = activate(client, sandbox)
    back = SUCCESS.format(port=sandbox.server.server_port)
    page = client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key,
                                                         "success_call_back": back}).get_data(as_text=True)
    fields = _hidden_fields(page, "/magento/identity")
    assert fields["success_call_back"] == back and fields["oauth_consumer_key"] == integration.consumer_key
    response = client.post("/magento/identity", data={**fields, "email": "owner@example.com",
                                                      "password": "correct horse battery"})
    assert response.status_code == 302 and response.headers["Location"] == back


def test_a_popup_form_posted_without_a_way_back_ends_on_our_done_page(client, sandbox, user):
    login(client)
    integration = activate(client, sandbox)
    page = client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key}
                      ).get_data(as_text=True)
    fields = _hidden_fields(page, "/magento/identity")
    del fields["success_call_back"]
    response = client.post("/magento/identity", data=fields)
    assert response.status_code == 200 and "Store linked" in response.get_data(as_text=True)
    assert "did not redirect automatically" not in response.get_data(as_text=True)


def test_a_broken_confirm_form_is_shown_again_with_the_way_to_switch_accounts(client, sandbox, user):
    login(client)
    integration = activate(client, sandbox)
    response = submit(client, integration, "http://127.0.0.1/" + "x" * 2048)  # longer than the field allows
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "Not you? Use another account" in page
    switch = _hidden_fields(page, "/magento/identity/switch")
    assert switch["oauth_consumer_key"] == integration.consumer_key
    assert switch["success_call_back"] == "http://127.0.0.1/" + "x" * 2048  # kept as Magento sent it
    assert integration.status != "Active"  # nothing was linked


def test_a_popup_form_for_a_key_no_callback_brought_explains_that(client, user):
    login(client)
    token = csrf_from(client.get("/auth/login").get_data(as_text=True))
    response = client.post("/magento/identity", data={"csrf_token": token, "oauth_consumer_key": "q" * 32,
                                                      "success_call_back": ""})
    page = response.get_data(as_text=True)
    assert response.status_code == 404 and "We have not heard from this store yet" in page and "qqqqqq…" in page


def test_the_popup_second_step_keeps_offering_the_passkey_and_refuses_a_bad_form(app, client, sandbox, user):
    from .test_auth_guards import _give_passkey

    _give_passkey(app)
    integration = activate(client, sandbox)
    response = submit(client, integration, "", email="owner@example.com", password="correct horse battery")
    assert response.headers["Location"] == "/magento/identity/second-step"
    page = client.get("/magento/identity/second-step").get_data(as_text=True)
    assert 'class="passkey-choice"' in page
    wrong = client.post("/magento/identity/second-step", data={"csrf_token": _hidden_fields(
        page, "/magento/identity/second-step")["csrf_token"], "code": "913579"})
    text = wrong.get_data(as_text=True)
    assert wrong.status_code == 401 and 'class="passkey-choice"' in text and "913579" not in text
    assert "That code or passkey did not work." in text
    broken = client.post("/magento/identity/second-step", data={"csrf_token": _hidden_fields(
        page, "/magento/identity/second-step")["csrf_token"], "code": "1" * 33})
    assert broken.status_code == 400 and 'class="passkey-choice"' in broken.get_data(as_text=True)
    assert integration.status != "Active"


def test_registering_for_a_key_no_callback_brought_explains_that(app_config, user):
    from integration import create_app

    client = create_app({**app_config, "SELF_REGISTRATION": True}).test_client()
    token = csrf_from(client.get("/auth/login").get_data(as_text=True))
    response = client.post("/magento/identity/register", data={
        "csrf_token": token, "oauth_consumer_key": "q" * 32, "success_call_back": "",
        "email": "new@example.com", "password": "a new password", "confirm": "a new password"})
    page = response.get_data(as_text=True)
    assert response.status_code == 404 and "We have not heard from this store yet" in page and "qqqqqq…" in page


def test_a_store_gone_during_the_second_step_is_explained(app, client, sandbox, user):
    """The pending login remembers which store it was for: if that callback is gone (purged) by the second
    step, the page says so, naming the key."""
    from integration.extensions import db
    from integration.models import StoreLink

    from .test_auth_guards import _give_passkey

    _give_passkey(app)
    integration = activate(client, sandbox)
    response = submit(client, integration, "", email="owner@example.com", password="correct horse battery")
    assert response.headers["Location"] == "/magento/identity/second-step"
    with app.app_context():
        db.session.delete(StoreLink.by_consumer_key(integration.consumer_key))
        db.session.commit()
    response = client.get("/magento/identity/second-step")
    page = response.get_data(as_text=True)
    assert response.status_code == 404 and f"{integration.consumer_key[:6]}…" in page


def test_after_signing_up_in_the_popup_the_login_form_has_the_address_filled_in(app_config, sandbox):
    import re

    from integration import create_app

    client = create_app({**app_config, "SELF_REGISTRATION": True}).test_client()
    integration = activate(client, sandbox)
    back = SUCCESS.format(port=sandbox.server.server_port)
    page = client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key,
                                                         "success_call_back": back}).get_data(as_text=True)
    response = client.post("/magento/identity/register", data={
        **_hidden_fields(page, "/magento/identity/register"),
        "email": "merchant@example.com", "password": "merchant password", "confirm": "merchant password"})
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and "has one now" in text
    assert re.search(r'<input[^>]*name="email"[^>]*value="merchant@example.com"', text) or \
        re.search(r'<input[^>]*value="merchant@example.com"[^>]*name="email"', text)
    # Logging in with that form still ends back in Magento, which closes the pop-up.
    response = client.post("/magento/identity", data={**_hidden_fields(text, "/magento/identity"),
                                                      "email": "merchant@example.com", "password": "merchant password"})
    assert response.status_code == 302 and response.headers["Location"] == back
    assert integration.status == "Active"


def test_a_refused_sign_up_in_the_popup_is_a_bad_request_with_the_reason(app_config, sandbox):
    from integration import create_app

    client = create_app({**app_config, "SELF_REGISTRATION": True}).test_client()
    integration = activate(client, sandbox)
    back = SUCCESS.format(port=sandbox.server.server_port)
    page = client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key,
                                                         "success_call_back": back}).get_data(as_text=True)
    response = client.post("/magento/identity/register", data={
        **_hidden_fields(page, "/magento/identity/register"),
        "email": "merchant@example.com", "password": "merchant password", "confirm": "another password"})
    text = response.get_data(as_text=True)
    assert response.status_code == 400 and 'action="/magento/identity/register"' in text
    # Both forms shown again still lead back to Magento.
    assert _hidden_fields(text, "/magento/identity/register")["success_call_back"] == back
    assert _hidden_fields(text, "/magento/identity")["success_call_back"] == back


def test_an_admin_who_must_enrol_is_told_so_in_the_popup(app_config, sandbox, admin):
    from integration import create_app

    client = create_app({**app_config, "REQUIRE_2FA": "admins"}).test_client()
    integration = activate(client, sandbox)
    response = submit(client, integration, "", email="admin@example.com", password="correct horse battery")
    page = response.get_data(as_text=True)
    assert response.status_code == 403 and "Set up a second factor first" in page
    assert "This account must have a second factor before it can link stores." in page
    assert f"Store: {sandbox.url}/" in page
    assert integration.status != "Active"


def test_an_admin_the_policy_covers_links_once_it_has_a_second_factor(app_config, sandbox, admin, clock):
    """INTEGRATION_REQUIRE_2FA stops an admin without a second factor in the pop-up, not one who has it."""
    from integration import create_app

    from .test_second_factor import _log_out, _login, browser, enrol

    client = browser(create_app({**app_config, "REQUIRE_2FA": "admins"}))
    assert _login(client, "admin@example.com").status_code == 302
    totp, _ = enrol(client, clock)
    _log_out(client)
    integration = activate(client, sandbox)
    back = SUCCESS.format(port=sandbox.server.server_port)
    response = submit(client, integration, back, email="admin@example.com", password="correct horse battery")
    assert response.headers["Location"] == "/magento/identity/second-step"
    response = client.get("/magento/identity/second-step")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    clock[0] += 30
    response = client.post("/magento/identity/second-step", data={
        **_hidden_fields(page, "/magento/identity/second-step"), "code": totp.at(clock[0])})
    assert response.status_code == 302 and response.headers["Location"] == back
    assert integration.status == "Active"


def _refused_after_the_second_step(client, sandbox, clock):
    """The owner (with an authenticator app) logs in through the pop-up of a store that then refuses the
    exchange: the refusal page drawn by the second step's POST, and Magento's key and way back."""
    import time

    from .test_second_factor import _log_out, _login, enrol

    assert _login(client, "owner@example.com").status_code == 302
    totp, _ = enrol(client, clock)
    _log_out(client)
    integration = activate(client, sandbox)
    integration.consumer_updated_at = time.time() - 1000  # the store answers "Consumer key has expired"
    back = SUCCESS.format(port=sandbox.server.server_port)
    response = submit(client, integration, back, email="owner@example.com", password="correct horse battery")
    assert response.headers["Location"] == "/magento/identity/second-step"
    page = client.get("/magento/identity/second-step").get_data(as_text=True)
    clock[0] += 30
    response = client.post("/magento/identity/second-step", data={
        **_hidden_fields(page, "/magento/identity/second-step"), "code": totp.at(clock[0])})
    text = response.get_data(as_text=True)
    assert response.status_code == 502 and "Consumer key has expired" in text
    assert f"Store: {sandbox.url}/" in text
    return text, integration.consumer_key, back


def test_a_store_refusal_after_the_second_step_still_offers_the_switch_back_to_this_link(
        client, sandbox, user, clock):
    """The second step's form holds only the code: the "Not you?" form on the refusal page must carry
    Magento's key and way back from the pending login, or switching accounts would lose the link."""
    page, key, back = _refused_after_the_second_step(client, sandbox, clock)
    switch = _hidden_fields(page, "/magento/identity/switch")
    assert switch["oauth_consumer_key"] == key and switch["success_call_back"] == back


def test_switching_accounts_from_a_refusal_right_after_logging_in_goes_back_to_the_link(
        client, sandbox, user, clock):
    page, key, back = _refused_after_the_second_step(client, sandbox, clock)
    response = client.post("/magento/identity/switch", data=_hidden_fields(page, "/magento/identity/switch"))
    assert response.status_code == 302
    again = client.get(response.headers["Location"]).get_data(as_text=True)
    fields = _hidden_fields(again, "/magento/identity")
    assert fields["oauth_consumer_key"] == key and fields["success_call_back"] == back
    assert 'type="password"' in again  # logged out: the login form, for another account


def test_a_signed_in_admin_opening_an_expired_popup_can_still_switch_accounts(app, client, sandbox, user):
    """Past the activation window the pop-up says so (410) before trying anything, and still offers
    "Not you?" with Magento's key and way back, so another account can take over after a Reauthorize."""
    from .test_doctor import age_activation

    login(client)
    integration = activate(client, sandbox)
    back = SUCCESS.format(port=sandbox.server.server_port)
    assert client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key,
                                                         "success_call_back": back}).status_code == 200
    age_activation(app, integration, 300)  # the admin waited too long before confirming
    response = client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key,
                                                             "success_call_back": back})
    page = response.get_data(as_text=True)
    assert response.status_code == 410 and "The time to link has run out" in page
    switch = _hidden_fields(page, "/magento/identity/switch")
    assert switch["oauth_consumer_key"] == integration.consumer_key and switch["success_call_back"] == back
    response = client.post("/magento/identity/switch", data=switch)
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == "/magento/identity" and parse_qs(location.query) == {
        "oauth_consumer_key": [integration.consumer_key], "success_call_back": [back]}
    assert "Signed in as" not in client.get(response.headers["Location"]).get_data(as_text=True)


def test_the_doctor_page_shows_each_popup_login_as_it_went(app, client, sandbox, user, admin, clock):
    """What the operator reads on the store's doctor page: a refused password with the reason the pop-up
    gave, a password waiting for its second factor, the second factor, and an admin already signed in."""
    import re

    from .test_doctor import doctor_page, link_id, operator
    from .test_second_factor import _log_out, _login, enrol

    assert _login(client, "owner@example.com").status_code == 302
    totp, _ = enrol(client, clock)
    _log_out(client)
    integration = activate(client, sandbox)
    refused = submit(client, integration, "", email="owner@example.com", password="not the password")
    reason = re.search(r'class="flash error"[^>]*>\s*(?:<p>)?([^<]+)', refused.get_data(as_text=True)).group(1).strip()
    assert submit(client, integration, "", email="owner@example.com", password="correct horse battery"
                  ).headers["Location"] == "/magento/identity/second-step"
    page = client.get("/magento/identity/second-step").get_data(as_text=True)
    clock[0] += 30
    assert client.post("/magento/identity/second-step", data={
        **_hidden_fields(page, "/magento/identity/second-step"), "code": totp.at(clock[0] + 3000)}).status_code == 401
    assert client.post("/magento/identity/second-step", data={
        **_hidden_fields(page, "/magento/identity/second-step"), "code": totp.at(clock[0])}).status_code == 200
    ops = operator(app)
    submit(ops, integration, "")  # an admin already signed in confirms again
    steps = re.findall(r'<li class="\w+" data-step="login" data-outcome="(\w+)">(.*?)</li>',
                       doctor_page(ops, link_id(app, integration)), re.S)
    assert [outcome for outcome, _ in steps] == ["failed", "ok", "failed", "ok", "ok"]
    assert reason and reason in steps[0][1]
    assert "password accepted; second factor next" in steps[1][1]
    assert "second factor: That code or passkey did not work." in steps[2][1]
    assert "as owner@example.com (second factor)" in steps[3][1]
    assert "as admin@example.com (already signed in)" in steps[4][1]


def test_the_popup_second_step_without_a_pending_login_explains_the_missing_callback(client):
    response = client.get("/magento/identity/second-step")
    page = response.get_data(as_text=True)
    assert response.status_code == 404 and "We have not heard from this store yet" in page
    assert "consumer key <code>" not in page  # no key to name


def test_a_sign_up_in_the_popup_is_audited_with_the_address_it_came_from(app_config, sandbox, admin):
    import re

    from integration import create_app

    from .test_identity import login as log_in

    app = create_app({**app_config, "SELF_REGISTRATION": True})
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "10.9.8.7"
    integration = activate(client, sandbox)
    page = client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key}
                      ).get_data(as_text=True)
    for email in ("merchant@example.com", "admin@example.com"):  # a new address, then a taken one
        assert client.post("/magento/identity/register", data={
            **_hidden_fields(page, "/magento/identity/register"),
            "email": email, "password": "merchant password", "confirm": "merchant password"}).status_code == 200
    ops = app.test_client()
    log_in(ops, "admin@example.com")
    rows = re.findall(r"<td>(account\.[\w.]+)</td><td>[^<]*</td>\s*<td>([^<]*)</td>",
                      ops.get("/audit").get_data(as_text=True))
    assert ("account.created", "10.9.8.7") in rows and ("account.sign_up_taken", "10.9.8.7") in rows


def test_a_sign_up_the_account_rules_refuse_says_why_in_the_popup(app_config, sandbox):
    from integration import create_app

    client = create_app({**app_config, "SELF_REGISTRATION": True}).test_client()
    integration = activate(client, sandbox)
    page = client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key}
                      ).get_data(as_text=True)
    response = client.post("/magento/identity/register", data={
        **_hidden_fields(page, "/magento/identity/register"),
        "email": "mer\u202echant@example.com", "password": "merchant password", "confirm": "merchant password"})
    assert response.status_code == 400 and "control characters" in response.get_data(as_text=True)


def test_a_signed_in_admin_is_not_offered_to_sign_up_in_the_popup(app_config, sandbox, user):
    from integration import create_app

    client = create_app({**app_config, "SELF_REGISTRATION": True}).test_client()
    integration = activate(client, sandbox)
    url = {"oauth_consumer_key": integration.consumer_key}
    assert 'action="/magento/identity/register"' in client.get("/magento/identity", query_string=url
                                                                ).get_data(as_text=True)
    login(client)
    page = client.get("/magento/identity", query_string=url).get_data(as_text=True)
    assert "Signed in as owner@example.com" in page and 'action="/magento/identity/register"' not in page


def test_a_popup_opened_without_a_way_back_ends_on_our_done_page(client, sandbox, user):
    """No success_call_back in the pop-up's address: nothing to send the admin back to, so our own page."""
    integration = activate(client, sandbox)
    page = client.get("/magento/identity", query_string={"oauth_consumer_key": integration.consumer_key}
                      ).get_data(as_text=True)
    fields = _hidden_fields(page, "/magento/identity")
    assert fields["success_call_back"] == ""
    response = client.post("/magento/identity", data={**fields, "email": "owner@example.com",
                                                      "password": "correct horse battery"})
    text = response.get_data(as_text=True)
    assert response.status_code == 200 and "Store linked" in text and "did not redirect automatically" not in text
