"""The identity-link pop-up: login or confirm, token exchange, back to Magento."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from sqlalchemy import func, select

from integration.extensions import db
from integration.models import Activation, AuditEvent, StoreLink
from integration.sandbox.oauth_provider import new_verifier

from .conftest import PASSWORD, csrf_from

SUCCESS = "http://127.0.0.1:{port}/admin/integration/loginSuccessCallback"


def activate(client, sandbox, name="Shop"):
    """Magento's side of Activate: a verifier, then the callback POST to us."""
    integration = sandbox.state.add_integration(name, "x", "y")
    verifier = new_verifier(integration).verifier
    response = client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": verifier})
    assert response.status_code == 200
    return integration


def identity_url(integration, success=None):
    return "/magento/identity?" + requests.compat.urlencode(
        {"oauth_consumer_key": integration.consumer_key, "success_call_back": success or ""})


def submit(client, integration, success, **fields):
    page = client.get(identity_url(integration, success)).get_data(as_text=True)
    data = {"csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key,
            "success_call_back": success, **fields}
    return client.post("/magento/identity", data=data)


def login(client, email="owner@example.com"):
    page = client.get("/auth/login").get_data(as_text=True)
    return client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})


def test_unknown_key_explains_that_the_callback_never_arrived(client):
    response = client.get("/magento/identity?oauth_consumer_key=" + "z" * 32 + "&success_call_back=http://x/")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "never reached us" in page and "5 seconds" in page and "Identity link URL" in page


def test_login_in_the_popup_links_the_store_and_returns_to_magento(app, client, sandbox, user):
    integration = activate(client, sandbox)
    page = client.get(identity_url(integration, SUCCESS.format(port=sandbox.server.server_port)))
    assert page.status_code == 200 and 'type="password"' in page.get_data(as_text=True)
    success = SUCCESS.format(port=sandbox.server.server_port)
    response = submit(client, integration, success, email="owner@example.com", password=PASSWORD)
    assert response.status_code == 302 and response.headers["Location"] == success
    assert integration.status == "Active"
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.status == "linked" and link.owner_id == user
        assert link.access_token == integration.token.token
        assert link.activations[0].state == "linked"
        actions = db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
        assert actions == ["callback.received", "login", "exchange.succeeded"]


def test_wrong_password_gets_the_generic_message_and_nothing_happens(app, client, sandbox, user):
    integration = activate(client, sandbox)
    for email in ("owner@example.com", "nobody@example.com"):
        response = submit(client, integration, "", email=email, password="wrong password")
        assert response.status_code == 401
        assert "Wrong email or password." in response.get_data(as_text=True)
    assert sandbox.state.counters.request_token_calls == 0
    assert integration.status == "Inactive"


def test_logged_in_user_confirms(app, client, sandbox, user):
    login(client)
    integration = activate(client, sandbox)
    page = client.get(identity_url(integration)).get_data(as_text=True)
    assert "Link this store to your account" in page and "owner@example.com" in page
    response = submit(client, integration, "")
    assert response.status_code == 200 and "Store linked" in response.get_data(as_text=True)
    assert integration.status == "Active"


@pytest.mark.parametrize("target", [
    "https://evil.example/steal", "javascript:alert(1)", "//evil.example/", "http://127.0.0.1.evil.example/",
    "http://user@127.0.0.1/", "data:text/html,hi",
])
def test_hostile_success_call_back_is_never_redirected_to(client, sandbox, user, target):
    login(client)
    integration = activate(client, sandbox)
    response = submit(client, integration, target)
    assert response.status_code == 200 and "Location" not in response.headers
    page = response.get_data(as_text=True)
    assert "did not redirect automatically" in page
    assert integration.status == "Active"  # linking itself went fine


def test_store_refusal_shows_what_to_do_and_a_reauthorize_then_works(app, client, sandbox, user):
    login(client)
    integration = activate(client, sandbox)
    integration.consumer_updated_at = time.time() - 1000
    response = submit(client, integration, "")
    assert response.status_code == 502
    page = response.get_data(as_text=True)
    assert "Consumer key has expired" in page and "Reauthorize" in page
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.status == "failed" and "expired" in link.last_error
    # Reauthorize: Magento deletes the token, posts a new verifier, the window restarts.
    integration.token = None
    integration.consumer_updated_at = time.time()
    verifier = new_verifier(integration).verifier
    client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": verifier})
    assert submit(client, integration, "").status_code == 200
    assert integration.status == "Active"


def test_store_down_during_exchange_keeps_the_activation_for_a_retry(app, client, sandbox, user):
    login(client)
    integration = activate(client, sandbox)
    sandbox.state.failures.append(["/oauth/token/request", 503, 1])
    response = submit(client, integration, "")
    assert response.status_code == 502 and "HTTP 503" in response.get_data(as_text=True)
    assert submit(client, integration, "").status_code == 200  # the same activation, retried
    assert integration.status == "Active"


def test_store_linked_by_someone_else_is_refused(app, client, sandbox, user, admin):
    integration = activate(client, sandbox)
    submit(client, integration, "", email="owner@example.com", password=PASSWORD)
    client.post("/auth/logout", data={"csrf_token": csrf_from(client.get("/").get_data(as_text=True))})
    from integration.models import User

    with app.app_context():
        other = User(email="other@example.com")
        other.set_password(PASSWORD)
        db.session.add(other)
        db.session.commit()
    exchanges = sandbox.state.counters.request_token_calls
    integration.token = None
    new_verifier(integration)
    client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": integration.token.verifier})
    response = submit(client, integration, "", email="other@example.com", password=PASSWORD)
    assert response.status_code == 403 and "linked to another account" in response.get_data(as_text=True)
    assert sandbox.state.counters.request_token_calls == exchanges  # no exchange for the other account
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.owner.email == "owner@example.com" and link.access_token is None


def test_double_submit_runs_exactly_one_exchange(app, live_app, sandbox, user):
    """Two tabs (two sessions, two server threads) submitting at once: one exchange, both succeed."""
    integration = sandbox.state.integrations[1]
    reply = requests.get(f"{sandbox.url}/admin/integrations/1/tokens_exchange", timeout=10).json()
    success = reply["success_call_back"]
    sessions, forms = [], []
    for _ in range(2):
        s = requests.Session()
        page = s.get(f"{live_app.url}/magento/identity", params={
            "oauth_consumer_key": integration.consumer_key, "success_call_back": success}, timeout=10).text
        sessions.append(s)
        forms.append({"csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key,
                      "success_call_back": success, "email": "owner@example.com", "password": PASSWORD})
    results = [None, None]
    barrier = threading.Barrier(2)

    def go(i):
        barrier.wait()
        results[i] = sessions[i].post(f"{live_app.url}/magento/identity", data=forms[i], allow_redirects=False,
                                      timeout=30)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [r.status_code for r in results] == [302, 302]
    assert sandbox.state.counters.request_token_calls == 1
    assert sandbox.state.counters.access_token_calls == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(StoreLink)) == 1
        assert db.session.scalar(select(func.count()).select_from(Activation)) == 1


def test_a_used_activation_of_an_unlinked_store_says_to_reauthorize(app, client, sandbox, user):
    login(client)
    integration = activate(client, sandbox)
    assert submit(client, integration, "").status_code == 200
    with app.app_context():
        from integration import stores

        stores.unlink(StoreLink.by_consumer_key(integration.consumer_key))
    response = submit(client, integration, "")
    assert response.status_code == 409 and "Reauthorize" in response.get_data(as_text=True)


def test_a_password_typed_into_the_email_field_is_not_audited(app, client, user):
    page = client.get("/auth/login").get_data(as_text=True)
    client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": "MyS3cretPassw0rd",
                                     "password": "x"})
    with app.app_context():
        details = db.session.scalars(select(AuditEvent.detail)).all()
    assert details == ["(not an email address)"]
