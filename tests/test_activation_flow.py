"""The whole activation over real HTTP, as Magento and the admin's browser drive it."""

from __future__ import annotations

import logging

import requests
from sqlalchemy import text

from integration.extensions import db
from integration.models import StoreLink

from .conftest import PASSWORD, csrf_from


def run_activation(live_app, sandbox, integration_id=1):
    """Click Activate in the sandbox admin, log in inside the pop-up, follow it back."""
    reply = requests.get(f"{sandbox.url}/admin/integrations/{integration_id}/tokens_exchange", timeout=10).json()
    assert "error" not in reply, reply
    browser = requests.Session()
    popup = browser.get(reply["identity_link_url"], params={
        "oauth_consumer_key": reply["oauth_consumer_key"], "success_call_back": reply["success_call_back"]},
        timeout=10)
    assert popup.status_code == 200
    done = browser.post(f"{live_app.url}/magento/identity", data={
        "csrf_token": csrf_from(popup.text), "oauth_consumer_key": reply["oauth_consumer_key"],
        "success_call_back": reply["success_call_back"], "email": "owner@example.com", "password": PASSWORD},
        timeout=30)
    return reply, done


def test_activate_in_magento_then_login_links_the_store(app, live_app, sandbox, user, caplog):
    caplog.set_level(logging.DEBUG)
    reply, done = run_activation(live_app, sandbox)
    # The pop-up ended on Magento's success page, which closes it.
    assert done.url == reply["success_call_back"] and "self.close()" in done.text
    integration = sandbox.state.integrations[1]
    assert integration.status == "Active"
    admin_page = requests.get(f"{sandbox.url}/admin/integrations", timeout=10).text
    assert "status-Active" in admin_page and "Reauthorize" in admin_page
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.status == "linked" and link.base_url == sandbox.url + "/"
        raw = db.session.execute(text(
            "SELECT consumer_secret, access_token, access_token_secret FROM store_links")).one()
        raw_verifier = db.session.execute(text("SELECT verifier FROM activations")).scalar_one()
    secrets = [integration.consumer_secret, integration.token.token, integration.token.secret,
               integration.token.verifier, PASSWORD]
    stored = " ".join(raw) + raw_verifier
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in stored
        assert secret not in logged
        assert secret not in done.text


def test_reauthorize_replaces_the_token(app, live_app, sandbox, user):
    run_activation(live_app, sandbox)
    first = sandbox.state.integrations[1].token.token
    # Sandbox's Reauthorize: deletes the token, posts a new verifier.
    reply = requests.get(f"{sandbox.url}/admin/integrations/1/tokens_exchange?reauthorize=1", timeout=10).json()
    assert sandbox.state.integrations[1].status == "Inactive"
    browser = requests.Session()
    popup = browser.get(reply["identity_link_url"], params={
        "oauth_consumer_key": reply["oauth_consumer_key"], "success_call_back": reply["success_call_back"]},
        timeout=10)
    browser.post(f"{live_app.url}/magento/identity", data={
        "csrf_token": csrf_from(popup.text), "oauth_consumer_key": reply["oauth_consumer_key"],
        "success_call_back": reply["success_call_back"], "email": "owner@example.com", "password": PASSWORD},
        timeout=30)
    integration = sandbox.state.integrations[1]
    assert integration.status == "Active" and integration.token.token != first
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.access_token == integration.token.token
        assert [a.kind for a in link.activations] == ["reauthorize", "activate"]


def test_callback_to_an_unreachable_app_shows_magentos_error(sandbox):
    sandbox.state.add_integration("Broken", "http://127.0.0.1:9/magento/callback", "http://127.0.0.1:9/id")
    reply = requests.get(f"{sandbox.url}/admin/integrations/1/tokens_exchange", timeout=10).json()
    assert reply["error"].startswith("The attempt to post data to consumer failed")
