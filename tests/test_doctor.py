"""The activation doctor: each failure of an activation maps to a cause and its fix, in the pop-up
(for the store admin) and on the operator's doctor page (with the timeline of steps)."""

from __future__ import annotations

import datetime as dt
import html
import re
import threading
import time

import pytest
import requests
from sqlalchemy import func, select, text, update

from integration import create_app
from integration.doctor import ActivationStep
from integration.extensions import db
from integration.magento.token_exchange import Consumer, TokenExchange
from integration.magento.transport import safe_session
from integration.magento.store_url import StorePolicy
from integration.models import Activation, AuditEvent, StoreLink
from integration.sandbox.oauth_provider import new_verifier

from .conftest import PASSWORD, csrf_from
from .servers import Served, free_port

MARGIN = 2  # doctor.MARGIN: seconds counted as gone before the callback reached us


def activate(client, sandbox, *, base_url=None, name="Shop"):
    """Magento's side of Activate: a verifier (and the consumer's window starting), then the callback."""
    integration = sandbox.state.add_integration(name, "x", "y")
    integration.consumer_updated_at = time.time()
    verifier = new_verifier(integration).verifier
    response = client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": base_url or sandbox.url + "/", "oauth_verifier": verifier})
    assert response.status_code == 200, response.get_data(as_text=True)
    return integration


def popup_url(key: str) -> str:
    return "/magento/identity?" + requests.compat.urlencode({"oauth_consumer_key": key, "success_call_back": ""})


def submit(client, integration, password=PASSWORD):
    page = client.get(popup_url(integration.consumer_key)).get_data(as_text=True)
    return client.post("/magento/identity", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "owner@example.com", "password": password})


def operator(app, email="admin@example.com"):
    ops = app.test_client()
    page = ops.get("/auth/login").get_data(as_text=True)
    assert ops.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email,
                                         "password": PASSWORD}).status_code == 302
    return ops


def link_id(app, integration) -> int:
    with app.app_context():
        return StoreLink.by_consumer_key(integration.consumer_key).id


def doctor_page(ops, link: int) -> str:
    response = ops.get(f"/stores/{link}/doctor")
    assert response.status_code == 200
    return html.unescape(response.get_data(as_text=True))


def timeline(page: str) -> list[tuple[str, str]]:
    """(step, outcome) of every step on the doctor page, in order."""
    return re.findall(r'data-step="(\w+)" data-outcome="(\w+)"', page)


def cause_of(page: str) -> str:
    found = re.search(r'<h2 id="cause">([^<]+)</h2>', page)
    return found.group(1) if found else ""


def age_activation(app, integration, seconds: int) -> None:
    """As if the callback had arrived ``seconds`` ago."""
    with app.app_context():
        for activation in StoreLink.by_consumer_key(integration.consumer_key).activations:
            activation.received_at -= dt.timedelta(seconds=seconds)
        db.session.commit()


# --- expired ------------------------------------------------------------------------------

def test_magento_refusing_an_expired_consumer_says_reauthorize_and_the_doctor_shows_each_step(
        app, client, sandbox, user, admin):
    integration = activate(client, sandbox)
    # The store's clock says the window passed (ours does not: its callback came in just now).
    aged = requests.post(f"{sandbox.url}/sandbox/integrations/{integration.id}/age", json={"seconds": 301}, timeout=5)
    assert aged.json()["expired"] is True
    response = submit(client, integration)
    assert response.status_code == 502
    popup = html.unescape(response.get_data(as_text=True))
    assert "only within a few minutes" in popup and "Consumer key has expired" in popup
    assert "click Activate on this integration (Reauthorize, if its row shows that instead)" in popup

    page = doctor_page(operator(app), link_id(app, integration))
    assert cause_of(page) == "Magento's activation window had passed"
    assert timeline(page) == [("callback", "ok"), ("popup", "ok"), ("login", "ok"), ("request_token", "failed")]
    assert "HTTP 401 · Consumer key has expired" in page and "signed with profile 2.4.8+" in page
    assert "click Activate on this integration (Reauthorize, if its row shows that instead): either starts" in page
    # The store's window was shorter than ours: the doctor says so rather than promising time left.
    assert "s left of 300 s" not in page
    assert "passed by the store's clock" in page and "INTEGRATION_ACTIVATION_WINDOW" in page


def test_a_popup_opened_within_the_window_counts_down_what_is_left(app, client, sandbox, user):
    integration = activate(client, sandbox)
    age_activation(app, integration, 100)
    page = client.get(popup_url(integration.consumer_key)).get_data(as_text=True)
    left = int(re.search(r'data-seconds-left="(\d+)"', page).group(1))
    assert 300 - 100 - MARGIN - 5 <= left <= 300 - 100 - MARGIN
    assert "more to finish linking" in page and "countdown.js" in page and 'type="password"' in page


def test_after_our_window_the_popup_says_expired_before_trying_and_never_calls_the_store(
        app, client, sandbox, user, admin):
    integration = activate(client, sandbox)
    form_page = client.get(popup_url(integration.consumer_key)).get_data(as_text=True)  # opened in time
    age_activation(app, integration, 300)
    response = client.post("/magento/identity", data={
        "csrf_token": csrf_from(form_page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "owner@example.com", "password": PASSWORD})
    assert response.status_code == 409
    popup = html.unescape(response.get_data(as_text=True))
    assert "The time to link has run out" in popup and "(Reauthorize, if its row shows that instead)" in popup
    assert sandbox.state.counters.request_token_calls == 0  # the store was never asked

    reloaded = client.get(popup_url(integration.consumer_key))
    assert reloaded.status_code == 410 and 'type="password"' not in reloaded.get_data(as_text=True)

    ops = operator(app)
    link = link_id(app, integration)
    page = doctor_page(ops, link)
    assert cause_of(page) == "Magento's activation window had passed"
    assert timeline(page) == [("callback", "ok"), ("popup", "ok"), ("login", "ok"), ("request_token", "skipped"),
                              ("popup", "skipped")]
    assert "not tried: the callback arrived more than 300 s ago" in page

    # Reauthorize restarts the window: a new callback, and the same pop-up then links.
    integration.token = None
    integration.consumer_updated_at = time.time()
    verifier = new_verifier(integration).verifier
    assert client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": verifier}).status_code == 200
    assert submit(client, integration).status_code == 200 and integration.status == "Active"
    page = doctor_page(ops, link)
    assert cause_of(page) == "" and "Nothing wrong in the last activation" in page
    assert timeline(page)[-2:] == [("request_token", "ok"), ("access_token", "ok")]


def test_the_window_follows_the_setting(app_config, sandbox, user):
    app = create_app({**app_config, "ACTIVATION_WINDOW": 60})
    client = app.test_client()
    integration = activate(client, sandbox)
    page = client.get(popup_url(integration.consumer_key)).get_data(as_text=True)
    assert 50 <= int(re.search(r'data-seconds-left="(\d+)"', page).group(1)) <= 60 - MARGIN
    age_activation(app, integration, 60)
    assert client.get(popup_url(integration.consumer_key)).status_code == 410


# --- signature, ACL, unreachable -------------------------------------------------------------

def test_a_refused_signature_names_the_profile_we_tried(app, client, sandbox, user, admin):
    integration = activate(client, sandbox)
    integration.consumer_secret = "z" * 32  # the store computes the signature with something else
    response = submit(client, integration)
    assert response.status_code == 502
    assert "could not verify our request" in html.unescape(response.get_data(as_text=True))
    page = doctor_page(operator(app), link_id(app, integration))
    assert cause_of(page) == "The store refused our signature"
    assert "The signature is invalid. Verify and try again." in page and "signed with profile 2.4.8+" in page
    assert "X-Forwarded-Proto: https" in page


def test_a_permission_the_integration_lacks_names_the_resource_to_tick(app, linked, sandbox, admin):
    link, integration = linked
    integration.resources = ("Magento_Catalog::products",)
    ops = operator(app)
    page = ops.get(f"/stores/{link}").get_data(as_text=True)
    ops.post(f"/stores/{link}/test", data={"csrf_token": csrf_from(page)})
    page = doctor_page(ops, link)
    assert cause_of(page) == "The integration lacks an API permission"
    assert "resource to tick: Magento_Backend::store" in page
    assert "The consumer isn't authorized to access Magento_Backend::store." in page
    assert "on its API tab tick the resource named above" in page

    integration.resources = ("Magento_Backend::all",)  # ticked in Magento's admin
    ops.post(f"/stores/{link}/test", data={"csrf_token": csrf_from(page)})
    page = doctor_page(ops, link)
    assert cause_of(page) == "" and timeline(page)[-1] == ("api_call", "ok")


def test_the_same_refused_call_repeated_is_recorded_once(app, linked, sandbox, admin):
    from integration import stores
    from integration.magento import errors

    link, integration = linked
    integration.resources = ("Magento_Catalog::products",)
    with app.app_context():
        store = db.session.get(StoreLink, link)
        for _ in range(5):
            with pytest.raises(errors.NotAuthorized):
                with stores.contact(store, "api.call", "GET orders") as client:
                    client.get("orders", params={"searchCriteria[pageSize]": "1"})
        assert db.session.scalar(select(func.count()).select_from(ActivationStep)
                                 .where(ActivationStep.step == "api_call")) == 1


@pytest.mark.parametrize("scheme, said", [("http", "could not connect to the store"),
                                          ("https", "the TLS handshake with the store failed")])
def test_an_unreachable_store_or_a_tls_failure_says_what_we_saw(app, client, sandbox, user, admin, scheme, said):
    if scheme == "http":
        base_url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    else:
        base_url = f"https://127.0.0.1:{sandbox.server.server_port}/"  # it speaks plain HTTP
    integration = activate(client, sandbox, base_url=base_url)
    response = submit(client, integration)
    assert response.status_code == 502
    assert "We could not connect to your store" in html.unescape(response.get_data(as_text=True))
    page = doctor_page(operator(app), link_id(app, integration))
    assert cause_of(page) == "We could not reach the store"
    assert said in page and ("request_token", "failed") in timeline(page)


# --- the callback never arrived ---------------------------------------------------------------

def test_a_popup_without_a_callback_is_listed_and_joins_the_store_once_its_callback_arrives(
        app, client, sandbox, user, admin):
    integration = sandbox.state.add_integration("Lost", "x", "y")
    key = integration.consumer_key
    assert client.get(popup_url(key)).status_code == 404
    assert client.get(popup_url(key)).status_code == 404  # the same pop-up reloaded: one entry
    ops = operator(app)
    overview = html.unescape(ops.get("/doctor").get_data(as_text=True))
    assert overview.count(f"{key[:4]}…{key[-4:]}") == 1 and "callback never reached us" in overview
    assert "Send a test POST" in overview

    # Fixed on the store's side: Activate again, the callback arrives.
    verifier = new_verifier(integration).verifier
    client.post("/magento/callback", data={
        "oauth_consumer_key": key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": verifier})
    page = doctor_page(ops, link_id(app, integration))
    assert f"{key[:4]}…{key[-4:]}" not in html.unescape(ops.get("/doctor").get_data(as_text=True))
    assert "Before any callback arrived" in page
    assert timeline(page) == [("popup", "failed"), ("callback", "ok")]
    assert cause_of(page) == ""  # it arrived: nothing to fix now


def test_a_flood_of_made_up_keys_cannot_keep_a_real_lost_popup_off_the_list(app, client, sandbox, admin,
                                                                              monkeypatch):
    from integration import doctor

    monkeypatch.setattr(doctor, "MAX_ORPHANS", 3)
    made_up = [f"{i:032d}" for i in range(5)]
    for key in made_up:
        assert client.get(popup_url(key)).status_code == 404
    real = sandbox.state.add_integration("Lost", "x", "y").consumer_key
    client.get(popup_url(real))
    overview = html.unescape(operator(app).get("/doctor").get_data(as_text=True))
    shown = [key for key in made_up + [real] if f"{key[:4]}…{key[-4:]}" in overview]
    assert shown == made_up[-2:] + [real]  # the newest three: the oldest made room


def test_a_reauthorize_whose_callback_is_lost_shows_the_checklist(app, linked, sandbox, admin):
    link, integration = linked
    age_activation(app, integration, 7200)  # the last callback we got was long ago
    client = app.test_client()
    popup = client.get(popup_url(integration.consumer_key))  # Magento's pop-up after a Reauthorize
    assert popup.status_code == 404 and 'type="password"' not in popup.get_data(as_text=True)
    assert "We have not heard from this store this time" in popup.get_data(as_text=True)
    ops = operator(app)
    page = doctor_page(ops, link)
    assert cause_of(page) == "Magento's callback never reached us"
    assert "so this one did not reach us" in page and "Identity link URL is set" in page


# --- steps keep no secrets -----------------------------------------------------------------

class EchoingStore:
    """A store whose token endpoint quotes everything it was sent back in its oauth_problem."""

    def __init__(self, secrets):
        self.secrets = secrets

    def __call__(self, environ, start_response):
        start_response("401 Unauthorized", [("Content-Type", "text/html")])
        body = "oauth_problem=" + requests.utils.quote("bad request: " + " ".join(self.secrets))
        return [body.encode()]


def test_steps_hold_no_token_secret_verifier_or_password(app, client, sandbox, user, admin):
    linked_one = activate(client, sandbox, name="Linked")
    client.get(popup_url(linked_one.consumer_key))
    wrong = "Wrong-Password-42!"
    submit(client, linked_one, password=wrong)
    assert submit(client, linked_one).status_code == 200
    access = (linked_one.token.token, linked_one.token.secret)

    secrets = []
    echo = Served(EchoingStore(secrets))
    try:
        other = sandbox.state.add_integration("Echo", "x", "y")
        verifier = new_verifier(other).verifier
        secrets += [other.consumer_secret, verifier]
        client.post("/magento/callback", data={
            "oauth_consumer_key": other.consumer_key, "oauth_consumer_secret": other.consumer_secret,
            "store_base_url": echo.url + "/", "oauth_verifier": verifier})
        page = client.get(popup_url(other.consumer_key)).get_data(as_text=True)
        client.post("/magento/identity", data={
            "csrf_token": csrf_from(page), "oauth_consumer_key": other.consumer_key, "success_call_back": ""})
    finally:
        echo.stop()

    with app.app_context():
        rows = db.session.execute(text("SELECT * FROM activation_steps")).all()
    dump = "\n".join(" ".join(str(v) for v in row) for row in rows)
    assert "bad request: [redacted] [redacted]" in dump  # the echo was recorded, blanked
    for secret in (linked_one.consumer_secret, linked_one.token.verifier, *access, other.consumer_secret, verifier,
                   wrong, PASSWORD):
        assert secret not in dump


# --- the test POST --------------------------------------------------------------------------

@pytest.fixture
def served_app(app):
    served = Served(app)
    yield served
    served.stop()


def operator_session(served, email="admin@example.com") -> requests.Session:
    s = requests.Session()
    page = s.get(f"{served.url}/auth/login", timeout=10).text
    s.post(f"{served.url}/auth/login", timeout=10,
           data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})
    return s


def counts(app) -> tuple[int, int, int]:
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).select_from(m)) for m in
                     (StoreLink, Activation, ActivationStep))


def test_the_test_post_reaches_our_callback_shows_status_and_time_and_creates_nothing(app, served_app, admin):
    ops = operator_session(served_app)
    page = ops.get(f"{served_app.url}/doctor", timeout=10).text
    before = counts(app)
    answer = html.unescape(ops.post(f"{served_app.url}/doctor/test-callback", timeout=20,
                                    data={"csrf_token": csrf_from(page),
                                          "url": "http://169.254.169.254/"}).text)  # any given URL is ignored
    found = re.search(r"Test POST to (\S+): HTTP 200 in (\d+) ms\. Our callback answered: "
                      r"'OK: test POST received; nothing stored'", answer)
    assert found and found.group(1) == f"{served_app.url}/magento/callback", answer[:2000]
    assert counts(app) == before == (0, 0, 0)
    with app.app_context():
        audit = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "doctor.test_post"))
        assert audit.detail.startswith(f"{served_app.url}/magento/callback: HTTP 200 in ")


def test_the_test_post_is_for_admins_with_a_csrf_token_and_rate_limited(app, served_app, user, admin):
    member = operator_session(served_app, "owner@example.com")
    page = member.get(f"{served_app.url}/", timeout=10).text
    assert member.post(f"{served_app.url}/doctor/test-callback", timeout=10,
                       data={"csrf_token": csrf_from(page)}).status_code == 403
    ops = operator_session(served_app)
    assert ops.post(f"{served_app.url}/doctor/test-callback", timeout=10).status_code == 400  # no CSRF token
    page = ops.get(f"{served_app.url}/doctor", timeout=10).text
    codes = [ops.post(f"{served_app.url}/doctor/test-callback", data={"csrf_token": csrf_from(page)},
                      allow_redirects=False, timeout=20).status_code for _ in range(7)]
    assert codes == [302] * 6 + [429]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "doctor.test_post")) == 6


class Redirector:
    def __call__(self, environ, start_response):
        start_response("301 Moved Permanently", [("Location", "https://elsewhere.example/magento/callback")])
        return [b""]


class Silent:
    def __init__(self):
        self.release = threading.Event()

    def __call__(self, environ, start_response):
        self.release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]


def test_the_test_post_reports_a_redirect_and_a_callback_url_that_does_not_answer(app_config, admin, monkeypatch):
    from integration import doctor

    monkeypatch.setattr(doctor, "PROBE_DEADLINE", 1.0)
    for wsgi, expected in ((Redirector(), "answered with a redirect; Magento does not follow it"),
                           (Silent(), "No answer within 1 s: Magento would give up")):
        target = Served(wsgi)
        app = create_app({**app_config, "PUBLIC_URL": target.url})
        served = Served(app)
        try:
            ops = operator_session(served)
            page = ops.get(f"{served.url}/doctor", timeout=10).text
            started = time.monotonic()
            answer = html.unescape(ops.post(f"{served.url}/doctor/test-callback", timeout=20,
                                            data={"csrf_token": csrf_from(page)}).text)
            assert expected in answer and f"Test POST to {target.url}/magento/callback" in answer
            assert time.monotonic() - started < 4  # held to its deadline
        finally:
            if isinstance(wsgi, Silent):
                wsgi.release.set()
            served.stop()
            target.stop()


# --- the sandbox mirrors Magento's rule -------------------------------------------------------

def test_the_sandbox_expires_its_consumer_as_magento_does(sandbox):
    local = StorePolicy(("127.0.0.1",))
    for age, refused in ((298, False), (300, True)):
        integration = sandbox.state.add_integration(f"Age {age}", "x", "y")
        integration.consumer_updated_at = time.time()
        new_verifier(integration)
        requests.post(f"{sandbox.url}/sandbox/integrations/{integration.id}/age", json={"seconds": age}, timeout=5)
        exchange = TokenExchange(safe_session(local))
        consumer = Consumer(integration.consumer_key, integration.consumer_secret)
        if refused:
            with pytest.raises(Exception, match="Consumer key has expired"):
                exchange.request_token(sandbox.url + "/", consumer)
        else:
            exchange.request_token(sandbox.url + "/", consumer)
    bad = requests.post(f"{sandbox.url}/sandbox/integrations/1/age", json={"seconds": "soon"}, timeout=5)
    assert bad.status_code == 400


def test_members_open_the_doctor_of_their_own_stores_only(app, linked, sandbox, user, admin):
    link, _ = linked
    other = activate(app.test_client(), sandbox, name="Nobody's")
    owner = operator(app, "owner@example.com")
    assert owner.get(f"/stores/{link}/doctor").status_code == 200
    assert owner.get(f"/stores/{link_id(app, other)}/doctor").status_code == 404
    assert owner.get("/doctor").status_code == 403  # the overview is for admins
    assert operator(app).get(f"/stores/{link_id(app, other)}/doctor").status_code == 200
