"""The identity pop-up's own header: who is signed in, and a way to switch accounts that keeps the linking
step; a 429 says when to try again."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from integration import create_app
from integration.models import StoreLink

from .conftest import PASSWORD, csrf_from
from .test_identity import activate, identity_url, login

SUCCESS = "http://127.0.0.1:{port}/admin/integration/loginSuccessCallback"


def test_the_popup_shows_no_dashboard_menu_and_offers_another_account(app, client, sandbox, user, admin):
    login(client)
    integration = activate(client, sandbox)
    success = SUCCESS.format(port=sandbox.server.server_port)
    page = client.get(identity_url(integration, success)).get_data(as_text=True)
    header = re.search(r"<header.*?</header>", page, re.S).group()
    assert "owner@example.com" in header and "Not you? Use another account" in header
    for menu in ("Add store", "Accounts", "Audit", "Log out", 'href="/"'):
        assert menu not in header

    # "Not you?" ends this session and starts the same linking step again, logged out.
    form = re.search(r'<form method="post" action="(/magento/identity/switch)".*?</form>', header, re.S)
    response = client.post(form.group(1), data={
        "csrf_token": csrf_from(form.group()), "oauth_consumer_key": integration.consumer_key,
        "success_call_back": success})
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert target.path == "/magento/identity"
    assert parse_qs(target.query) == {"oauth_consumer_key": [integration.consumer_key], "success_call_back": [success]}
    assert client.get("/").status_code == 302  # logged out

    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'type="password"' in page and "Not you?" not in page
    response = client.post("/magento/identity", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": success,
        "email": "admin@example.com", "password": PASSWORD})
    assert response.status_code == 302 and response.headers["Location"] == success
    with app.app_context():
        assert StoreLink.by_consumer_key(integration.consumer_key).owner.email == "admin@example.com"


def test_the_switch_refuses_a_forged_or_broken_form(client, user, sandbox):
    login(client)
    integration = activate(client, sandbox)
    token = csrf_from(client.get(identity_url(integration)).get_data(as_text=True))
    for data in ({"oauth_consumer_key": integration.consumer_key},  # no CSRF token: another site's form
                 {"csrf_token": token, "oauth_consumer_key": "not a key"},
                 {"csrf_token": token, "oauth_consumer_key": integration.consumer_key,
                  "success_call_back": "x" * 2049}):
        assert client.post("/magento/identity/switch", data=data).status_code == 400
    assert client.get("/").status_code == 200  # still logged in


def test_too_many_requests_says_when_to_try_again(app_config, sandbox):
    app = create_app({**app_config, "LOGIN_RATE_LIMIT": "2 per minute"})
    client = app.test_client()
    integration = activate(client, sandbox)
    page = client.get(identity_url(integration)).get_data(as_text=True)
    data = {"csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
            "email": "nobody@example.com", "password": "wrong"}
    responses = [client.post("/magento/identity", data=data) for _ in range(3)]
    assert [r.status_code for r in responses] == [401, 401, 429]
    page = responses[-1].get_data(as_text=True)
    assert 0 < int(responses[-1].headers["Retry-After"]) <= 60
    assert re.search(r"Try again in \d+ seconds \(after \d\d:\d\d:\d\d UTC\)", page), page
    # Still the pop-up: no dashboard menu, and the way back to the linking step.
    assert "Add store" not in page
    assert f'href="/magento/identity?oauth_consumer_key={integration.consumer_key}' in page
