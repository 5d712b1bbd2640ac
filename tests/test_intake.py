"""Magento's own events pushed to us: an aligent-style store subscribes on link and stops on
unlink; a pushed change reaches the webhook receiver once (duplicates, out-of-order pushes and
the next poll add nothing); forged, replayed, unsigned and oversized requests are refused and
emit nothing; the Adobe and shared-secret verifiers over real HTTP."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
from collections import Counter

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from integration import events, jobs
from integration.extensions import db
from integration.intake import verify
from integration.intake.models import IntakeMessage, IntakeSource
from integration.models import AuditEvent
from integration.sandbox.async_events import php_json, signature
from integration.webhooks import service as webhooks

from .conftest import PASSWORD
from .receiver import Receiver
from .servers import Served, csrf_from


@pytest.fixture
def app_config(app_config):
    # The feeds' periodic tick would poll on its own: these tests poll when they mean to.
    return {**app_config, "ALLOWED_WEBHOOK_HOSTS": ("127.0.0.1",), "SYNC_TICK": 3600.0,
            "INTAKE_RATE_LIMIT": "100000 per minute"}


@pytest.fixture
def aligent(sandbox):
    """The sandbox acts as a store with aligent/magento-async-events (before it is linked)."""
    sandbox.state.async_events_module = True


@pytest.fixture
def live(app, sandbox):
    """Our app on a real port with its job runner."""
    served = Served(app)
    app.config["PUBLIC_URL"] = served.url
    jobs.start(app)
    yield served
    jobs.stop(app)
    served.stop()


@pytest.fixture
def store(app, aligent, live, linked, sandbox):
    """A linked store whose subscriptions the link's background job has made."""
    link_id, _ = linked

    def made() -> bool:
        with app.app_context():
            source = db.session.scalar(select(IntakeSource))
            return source is not None and len(source.subscription_list) == 6

    assert wait_until(made), "no subscriptions after linking"
    assert len(sandbox.state.async_events.active()) == 6
    return link_id


@pytest.fixture
def receiver(app):
    r = Receiver()
    with app.app_context():
        webhooks.add(r.url, ["product.created", "product.updated", "order.created", "order.updated"])
    yield r
    r.stop()


def wait_until(predicate, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def record_events(app) -> Counter:
    with app.app_context():
        return Counter(t for t in db.session.scalars(select(events.Event.type)) if t in events.RECORD_TYPES)


def baseline(app, link_id):
    """The first poll: every product becomes product.created (the receiver's first 60)."""
    result = app.test_cli_runner().invoke(args=["sync", str(link_id), "products"])
    assert result.exit_code == 0, result.output


def poll(app, link_id):
    assert app.test_cli_runner().invoke(args=["sync", str(link_id), "products"]).exit_code == 0


def updates(receiver) -> list[dict]:
    return [r.event for r in receiver.received if r.event["type"] == "product.updated"]


def messages(app, **where) -> list[IntakeMessage]:
    with app.app_context():
        query = select(IntakeMessage).order_by(IntakeMessage.id)
        for name, value in where.items():
            query = query.where(getattr(IntakeMessage, name) == value)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        return rows


def aligent_source(app, link_id) -> tuple[str, str]:
    """(verification token, the recipient URL the store was given) of the aligent source."""
    with app.app_context():
        source = db.session.scalar(select(IntakeSource).where(IntakeSource.store_link_id == link_id,
                                                              IntakeSource.source == "aligent"))
        return source.secret, source.subscription_list


def login(url: str, email: str = "admin@example.com") -> requests.Session:
    s = requests.Session()
    page = s.get(f"{url}/auth/login", timeout=10).text
    answer = s.post(f"{url}/auth/login", data={"csrf_token": csrf_from(page), "email": email,
                                               "password": PASSWORD}, timeout=10)
    assert answer.status_code == 200 and "/auth/login" not in answer.url
    return s


def form_post(s: requests.Session, page_url: str, url: str, **data) -> requests.Response:
    page = s.get(page_url, timeout=10).text
    return s.post(url, data={"csrf_token": csrf_from(page), **data}, timeout=10)


# --- the verifiers, against bodies signed the way each module signs ---------------------------

def test_aligent_signature_is_checked_on_the_exact_bytes_the_module_posts():
    body = php_json({"data": {"id": 7, "sku": "SB/7", "name": "Café"}})
    assert b"SB\\/7" in body and b"Caf\\u00e9" in body  # json_encode's escapes, as the store sends them
    token = "fD03@NpYbXYg"
    verify.verify_aligent(body, {"x-magento-signature": signature(body, token)}, token)
    verify.verify_aligent(body, {"x-magento-signature": signature(body, token).upper()}, token)
    for headers, why in [({"x-magento-signature": signature(body + b" ", token)}, "does not match"),
                         ({"x-magento-signature": signature(body, token + "x")}, "does not match"),
                         ({}, "no x-magento-signature"),
                         ({"x-magento-signature": "é" * 64}, "not a signature"),
                         ({"x-magento-signature": "a" * 4000}, "not a signature")]:
        with pytest.raises(verify.Refused, match=why):
            verify.verify_aligent(body, headers, token)


def rsa_pair(bits=2048):
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, pem


def adobe_signed(key, body: bytes) -> str:
    """As Adobe's documented scheme: RSA-SHA256 over the base64 of the body, sent as base64."""
    return base64.b64encode(key.sign(base64.b64encode(body), padding.PKCS1v15(), hashes.SHA256())).decode()


def test_adobe_signature_accepts_the_signed_body_and_refuses_a_modified_one():
    key, pem = rsa_pair()
    body = json.dumps({"eventName": "observer.catalog_product_save_after",
                       "data": {"product": {"entity_id": 3}}}).encode()
    verify.verify_adobe(body, {"x-adobe-commerce-webhook-signature": adobe_signed(key, body)}, pem)
    other, _ = rsa_pair()
    bad = [({"x-adobe-commerce-webhook-signature": adobe_signed(key, body.replace(b"3", b"4"))}, "does not match"),
           ({"x-adobe-commerce-webhook-signature": adobe_signed(other, body)}, "does not match"),
           # Signing the body itself rather than its base64 is not Adobe's scheme.
           ({"x-adobe-commerce-webhook-signature": base64.b64encode(
               key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()}, "does not match"),
           ({"x-adobe-commerce-webhook-signature": "not base64!"}, "not base64"),
           ({}, "no x-adobe-commerce-webhook-signature")]
    for headers, why in bad:
        with pytest.raises(verify.Refused, match=why):
            verify.verify_adobe(body, headers, pem)


def test_signature_headers_are_bounded():
    body, token = b'{"data":{}}', "t" * 32
    at_limit = "0" * 2048  # the documented limit, as a number: a test must not follow the constant
    with pytest.raises(verify.Refused, match="does not match"):  # read and compared
        verify.verify_aligent(body, {"x-magento-signature": at_limit}, token)
    with pytest.raises(verify.Refused, match="not a signature"):  # not even read
        verify.verify_aligent(body, {"x-magento-signature": at_limit + "0"}, token)


def test_a_pasted_key_must_be_a_strong_rsa_public_key():
    _, weak = rsa_pair(1024)
    _, almost = rsa_pair(2047)
    junk = "x" * 16 * 1024
    for pem, why in [("", "paste"), (None, "paste"), (junk + "x", "paste"), (junk, "not a PEM"),
                     ("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "not a PEM"),
                     (weak, "too weak"), (almost, "2047 bits is too weak")]:
        with pytest.raises(verify.BadKey, match=why):
            verify.load_public_key(pem)
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(verify.BadKey, match="another kind of key"):
        verify.load_public_key(ec_pem)


def test_what_is_shown_instead_of_keys_and_secrets():
    key, pem = rsa_pair()
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert verify.key_fingerprint(pem) == hashlib.sha256(der).hexdigest() != verify.key_fingerprint(rsa_pair()[1])
    shown = verify.secret_fingerprint("k" * 32)
    assert len(shown) == 64 and shown == verify.secret_fingerprint("k" * 32) != verify.secret_fingerprint("k" * 33)
    assert shown != hashlib.sha256(b"k" * 32).hexdigest()  # not the plain hash a lookup table would reverse


def test_a_signature_header_with_characters_outside_base64_is_refused_as_such():
    key, pem = rsa_pair()
    with pytest.raises(verify.Refused, match="not base64"):
        verify.verify_adobe(b"{}", {"x-adobe-commerce-webhook-signature": "AAAA*"}, pem)
    with pytest.raises(verify.Refused, match="cannot be used"):  # a stored key that no longer loads
        verify.verify_adobe(b"{}", {"x-adobe-commerce-webhook-signature": adobe_signed(key, b"{}")}, "garbage")


def test_shared_secret_is_compared_whole():
    secret = "s" * 32
    verify.verify_secret({"X-Webhook-Secret": secret}, "X-Webhook-Secret", secret)
    for given in ("s" * 31, "s" * 33, "S" * 32):
        with pytest.raises(verify.Refused, match="does not hold"):
            verify.verify_secret({"X-Webhook-Secret": given}, "X-Webhook-Secret", secret)


# --- subscribe on link, unsubscribe on unlink -------------------------------------------------

def test_linking_subscribes_to_the_async_events_module_and_unlinking_turns_it_off(app, admin, store, sandbox, live):
    subs = sandbox.state.async_events.subscriptions
    assert sorted(s["event_name"] for s in subs.values()) == sorted(
        ["catalog.product.created", "catalog.product.updated", "sales.order.created", "sales.order.updated",
         "customer.created", "customer.updated"])
    token, made = aligent_source(app, store)
    for sub in subs.values():
        assert sub["recipient_url"].startswith(f"{live.url}/magento/events/{store}/aligent/")
        assert sub["recipient_url"].endswith("?event=" + sub["event_name"])
        assert sub["verification_token"] == token and len(token) >= 32 and sub["metadata"] == "http"
    assert sorted(m["id"] for m in made) == sorted(subs)
    with app.app_context():  # the path token is kept hashed only, the verification token encrypted
        row = db.session.execute(text("SELECT path_token_hash, secret FROM intake_sources")).one()
        path_token = next(iter(subs.values()))["recipient_url"].split("/aligent/")[1].split("?")[0]
        assert row[0] == hashlib.sha256(path_token.encode()).hexdigest() and token not in row[1]

    s = login(live.url)
    page = f"{live.url}/stores/{store}"
    assert form_post(s, page, f"{page}/unlink").status_code == 200
    assert [sub["status"] for sub in subs.values()] == [False] * 6
    with app.app_context():
        actions = [a.action for a in db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert "intake.unsubscribed" in actions and actions.index("intake.unsubscribed") < actions.index("store.unlinked")
    # The unlinked store's pushes are refused.
    body = php_json({"data": {"id": 1}})
    answer = requests.post(next(iter(subs.values()))["recipient_url"], data=body, timeout=5,
                           headers={"x-magento-signature": signature(body, token)})
    assert answer.status_code == 410


def test_linking_asks_the_store_for_its_capabilities_once(app, store, sandbox):
    """The subscribing follows the link's probe and uses its answer: one probe."""
    def probes() -> int:
        with app.app_context():
            return len(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "store.probed",
                                                                   AuditEvent.store_link_id == store)).all())

    assert probes() == 1
    assert not wait_until(lambda: probes() > 1, timeout=3)  # no second probe still on its way
    assert sandbox.state.counters.schema_calls == 2  # the REST schema and the async one, once each


def test_a_store_without_the_module_gets_no_subscription(app, live, linked, sandbox):
    link_id, _ = linked
    with app.app_context():
        assert wait_until(lambda: db.session.scalar(select(AuditEvent).where(AuditEvent.action == "store.probed")))
        db.session.rollback()
        assert db.session.scalar(select(IntakeSource)) is None
    assert sandbox.state.async_events.subscriptions == {}


# --- pushed, merged with the feed ----------------------------------------------------------------

def test_a_pushed_change_reaches_the_receiver_once_despite_duplicates_and_the_next_poll(app, store, sandbox,
                                                                                         receiver):
    baseline(app, store)
    assert wait_until(lambda: len(receiver.received) == 60)
    sandbox.state.async_events.duplicates = True
    started = time.monotonic()
    requests.put(f"{sandbox.url}/sandbox/products/SB-00007", json={"price": 777.5}, timeout=5).raise_for_status()
    assert wait_until(lambda: updates(receiver), timeout=5)
    latency = next(r.at for r in receiver.received if r.event["type"] == "product.updated") - started
    assert latency < 2.0
    assert wait_until(lambda: len(sandbox.state.async_events.deliveries) == 2)
    assert [d[2] for d in sandbox.state.async_events.deliveries] == [200, 401]  # the second: a replay
    poll(app, store)  # the poll sees the same change: nothing new
    time.sleep(0.5)
    got = updates(receiver)
    assert [(e["record_id"], e["record"]["price"]) for e in got] == [("7", 777.5)]
    assert record_events(app)["product.updated"] == 1
    assert [m.state for m in messages(app, source="aligent")] == ["emitted", "refused"]


def test_out_of_order_pushes_never_send_an_older_state(app, store, sandbox, receiver):
    baseline(app, store)
    sandbox.state.async_events.out_of_order = True
    for price in (10.0, 20.0):
        requests.put(f"{sandbox.url}/sandbox/products/SB-00003", json={"price": price}, timeout=5).raise_for_status()
    assert wait_until(lambda: len(sandbox.state.async_events.deliveries) == 2)
    first, second = (json.loads(d[3])["data"]["price"] for d in sandbox.state.async_events.deliveries)
    assert (first, second) == (20.0, 10.0)  # the store delivered them the wrong way round
    assert wait_until(lambda: all(m.state in ("emitted", "duplicate") for m in messages(app, source="aligent")))
    time.sleep(0.3)
    assert [e["record"]["price"] for e in updates(receiver)] == [20.0]
    assert sorted(m.state for m in messages(app, source="aligent")) == ["duplicate", "emitted"]


def test_a_push_before_any_poll_is_the_one_event_and_the_poll_then_adds_nothing(app, store, sandbox, receiver):
    poll(app, store)  # products known...
    requests.post(f"{sandbox.url}/sandbox/orders", json={"sku": "SB-00002"}, timeout=5).raise_for_status()
    assert wait_until(lambda: [r for r in receiver.received if r.event["type"] == "order.created"])
    assert app.test_cli_runner().invoke(args=["sync", str(store), "orders"]).exit_code == 0
    time.sleep(0.3)
    created = [r.event for r in receiver.received if r.event["type"] == "order.created"]
    # The poll's first pass emits the 6 older orders; the pushed one is not sent again.
    assert Counter(e["record_id"] for e in created) == Counter({str(i): 1 for i in range(1, 8)})


# --- refused: forged, replayed, unsigned, oversized ----------------------------------------------

def test_bad_signatures_replays_and_oversized_bodies_are_refused_and_emit_nothing(app, store, sandbox, receiver):
    baseline(app, store)
    assert wait_until(lambda: len(receiver.received) == 60)
    token, made = aligent_source(app, store)
    url = sandbox.state.async_events.subscriptions[made[0]["id"]]["recipient_url"]
    with sandbox.state.lock:
        product = dict(sandbox.state.products["SB-00005"])
    body = php_json({"data": {**product, "price": 1.0}})
    before = record_events(app)

    def post(data, headers=None, to=url):
        return requests.post(to, data=data, headers=headers or {}, timeout=5)

    forged = post(body, {"x-magento-signature": signature(body, "guessed-token")})
    unsigned = post(body)
    wrong_path = post(body, {"x-magento-signature": signature(body, token)},
                      to=url.replace("/aligent/", "/aligent/x"))
    huge = b'{"data":"' + b"a" * (256 * 1024) + b'"}'
    oversized = post(huge, {"x-magento-signature": signature(huge, token)})
    chunked = requests.post(url, data=iter([huge[:1000], huge[1000:]]),
                            headers={"x-magento-signature": signature(huge, token)}, timeout=5)
    assert [forged.status_code, unsigned.status_code, wrong_path.status_code, oversized.status_code,
            chunked.status_code] == [401, 401, 401, 413, 413]
    assert "does not match" in forged.text and "no x-magento-signature" in unsigned.text

    # A genuine push, then the very same signed body again: a replay.
    assert post(body, {"x-magento-signature": signature(body, token)}).status_code == 200
    assert wait_until(lambda: messages(app, state="duplicate") or messages(app, state="emitted"))
    replayed = post(body, {"x-magento-signature": signature(body, token)})
    assert replayed.status_code == 401 and "replayed" in replayed.text
    time.sleep(0.3)
    # The genuine push is a trigger: SB-00005 did not change on the store, so nothing is emitted.
    assert record_events(app) == before
    assert len(receiver.received) == 60
    quarantined = messages(app, state="refused")
    assert len(quarantined) == 5  # the wrong path token is not the store: answered, not kept
    with app.app_context():
        source = db.session.scalar(select(IntakeSource))
        # refused: forged, unsigned, two oversized; duplicates: the replay, and the genuine push
        # of a state already sent.
        assert (source.verified, source.refused, source.duplicates) == (1, 4, 2)


def _recipient_url(app, store, sandbox) -> str:
    _, made = aligent_source(app, store)
    return sandbox.state.async_events.subscriptions[made[0]["id"]]["recipient_url"]


def test_the_quarantine_is_bounded(app, store, sandbox):
    app.config["INTAKE_QUARANTINE_MAX"] = 5
    url = _recipient_url(app, store, sandbox)
    for i in range(12):  # the store's own address, bodies signed with a wrong token
        body = json.dumps({"data": {"n": i}}).encode()
        refused = requests.post(url, data=body, headers={"x-magento-signature": signature(body, "wrong")}, timeout=5)
        assert refused.status_code == 401
    assert len(messages(app, state="refused")) == 5


def test_a_wrong_address_gets_one_answer_whether_or_not_the_store_exists_and_writes_nothing(app, store, sandbox):
    url = _recipient_url(app, store, sandbox)
    base = f"{app.config['PUBLIC_URL']}/magento/events"
    answers = [requests.post(target, data=b'{"data":{}}', timeout=5)
               for target in (f"{base}/{store}/aligent/nope", f"{base}/{store + 999}/aligent/nope",
                              f"{base}/{store + 999}/aligent/{url.rsplit('/', 1)[1]}")]
    assert {(a.status_code, a.text) for a in answers} == {(401, "refused: unknown store, source or path token\n")}
    assert messages(app) == []


# --- Adobe Commerce and shared-secret sources over HTTP, with the dashboard ---------------------------

@pytest.fixture
def plain_store(live, linked):
    """A linked store without the async-events module: nothing pushes but what a test sends."""
    return linked[0]


def test_adobe_webhooks_set_up_by_an_admin_verified_over_http(app, admin, plain_store, sandbox, live, receiver):
    store = plain_store
    baseline(app, store)
    key, pem = rsa_pair()
    s = login(live.url)
    page = f"{live.url}/stores/{store}"
    shown = form_post(s, page, f"{page}/intake/adobe", public_key=pem.replace("\n", "\r\n"))  # as browsers send it
    assert shown.status_code == 200
    url = shown.text.split('id="intake-url">')[1].split("<")[0]
    assert url.startswith(f"{live.url}/magento/events/{store}/adobe/")
    requests.put(f"{sandbox.url}/sandbox/products/SB-00009", json={"name": "Renamed"}, timeout=5).raise_for_status()
    body = json.dumps({"eventName": "observer.catalog_product_save_after",
                       "data": {"product": {"entity_id": "9", "name": "Renamed"}}}).encode()
    modified = body.replace(b"Renamed", b"Hacked!")
    refused = requests.post(url, data=modified, timeout=5,
                            headers={"x-adobe-commerce-webhook-signature": adobe_signed(key, body)})
    assert refused.status_code == 401
    accepted = requests.post(url, data=body, timeout=5,
                             headers={"x-adobe-commerce-webhook-signature": adobe_signed(key, body)})
    assert accepted.status_code == 200 and accepted.json() == {"op": "success"}
    assert wait_until(lambda: updates(receiver))
    assert [(e["record_id"], e["record"]["name"]) for e in updates(receiver)] == [("9", "Renamed")]
    # The store page shows the source, its counts and the quarantine; never the key.
    html = s.get(page, timeout=5).text
    assert 'data-source="adobe"' in html and "does not match the body" in html
    assert "BEGIN PUBLIC KEY" not in html and url.rsplit("/", 1)[1] not in html
    # Replaying the stored event re-processes it: the feed already sent this state.
    message = messages(app, state="emitted")[0]
    assert form_post(s, page, f"{page}/intake/messages/{message.id}/replay").status_code == 200
    assert wait_until(lambda: messages(app, id=message.id)[0].state == "duplicate")
    assert len(updates(receiver)) == 1


def test_members_cannot_set_up_sources(app, plain_store, live):
    store = plain_store
    s = login(live.url, "owner@example.com")
    page = f"{live.url}/stores/{store}"
    assert form_post(s, page, f"{page}/intake/secret", secret="x" * 30).status_code == 403


def test_shared_secret_source_the_weakest_option(app, admin, plain_store, sandbox, live, receiver):
    store = plain_store
    baseline(app, store)
    s = login(live.url)
    page = f"{live.url}/stores/{store}"
    assert "Weakest option" in s.get(page, timeout=5).text
    short = form_post(s, page, f"{page}/intake/secret", secret="too-short")
    assert "24 to 256" in short.text
    secret = "a-long-shared-secret-of-32-chars"
    shown = form_post(s, page, f"{page}/intake/secret", secret=secret, header_name="X-Shop-Secret")
    url = shown.text.split('id="intake-url">')[1].split("<")[0]
    with app.app_context():
        assert secret not in str(db.session.execute(text("SELECT secret FROM intake_sources")).all())
    requests.put(f"{sandbox.url}/sandbox/products/SB-00004", json={"price": 4.4}, timeout=5).raise_for_status()
    body = json.dumps({"event": "product.updated", "data": {"id": 4}}).encode()
    assert requests.post(url, data=body, headers={"X-Shop-Secret": secret[:-1] + "x"}, timeout=5).status_code == 401
    assert requests.post(url, data=body, headers={"X-Shop-Secret": secret}, timeout=5).status_code == 200
    assert wait_until(lambda: updates(receiver))
    assert [e["record"]["price"] for e in updates(receiver)] == [4.4]
    assert secret not in s.get(page, timeout=5).text


def test_the_same_change_pushed_by_two_sources_at_once_is_sent_once(app, store, sandbox, receiver):
    """aligent pushes it (twice, the module's duplicate) while the shared-secret source pushes it too."""
    from integration.intake import service
    from integration.models import StoreLink

    baseline(app, store)
    with app.app_context():
        _, token = service.enable(db.session.get(StoreLink, store), "secret", secret="k" * 32)
    url = f"{app.config['PUBLIC_URL']}/magento/events/{store}/secret/{token}?event=product.updated"
    for round_ in range(5):
        price = 100.0 + round_
        requests.put(f"{sandbox.url}/sandbox/products/SB-00011", json={"price": price}, timeout=5).raise_for_status()
        assert requests.post(url, data=json.dumps({"data": {"id": 11, "price": price}}), timeout=5,
                             headers={"X-Webhook-Secret": "k" * 32}).status_code == 200
        assert wait_until(lambda p=price: [e for e in updates(receiver) if e["record"]["price"] == p])
        assert wait_until(lambda: not messages(app, state="accepted") and not messages(app, state="received"))
    time.sleep(0.3)
    assert [e["record"]["price"] for e in updates(receiver)] == [100.0, 101.0, 102.0, 103.0, 104.0]


def test_the_intake_is_rate_limited_per_address(app, plain_store, live):
    app.config["INTAKE_RATE_LIMIT"] = "3 per minute"
    url = f"{live.url}/magento/events/{plain_store}/aligent/unknown"
    assert [requests.post(url, data=b"{}", timeout=5).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_old_messages_and_quarantine_are_pruned(app, plain_store, live):
    from integration.intake import service
    from integration.models import StoreLink, utcnow

    with app.app_context():
        _, token = service.enable(db.session.get(StoreLink, plain_store), "secret", secret="k" * 32)
    url = f"{live.url}/magento/events/{plain_store}/secret/{token}?event=product.updated"
    assert requests.post(url, data=b'{"data":{"id":1}}', headers={"X-Webhook-Secret": "k" * 32},
                         timeout=5).status_code == 200
    assert requests.post(url, data=b'{"data":{"id":2}}', timeout=5).status_code == 401
    assert wait_until(lambda: not messages(app, state="accepted") and not messages(app, state="received"))
    with app.app_context():  # the refused one is a day old, the accepted one two days
        for message in db.session.scalars(select(IntakeMessage)):
            age = 25 if message.state == "refused" else 48
            message.received_at = utcnow() - dt.timedelta(hours=age)
        db.session.commit()
    jobs.call_in_app(app, service.prune)
    assert [m.state for m in messages(app)] == ["emitted"]
    app.config["INTAKE_KEEP_HOURS"] = 47
    jobs.call_in_app(app, service.prune)
    assert messages(app) == []


def test_a_message_whose_processing_fails_is_handed_back_for_the_retry(app, linked, monkeypatch):
    from integration.intake import service
    from integration.models import StoreLink

    link_id, _ = linked
    with app.app_context():
        _, token = service.enable(db.session.get(StoreLink, link_id), "secret", secret="k" * 32)
    client = app.test_client()  # the job runner is not started: the work waits in its queue
    answer = client.post(f"/magento/events/{link_id}/secret/{token}?event=product.updated",
                         data=b'{"data":{"id":3}}', headers={"X-Webhook-Secret": "k" * 32})
    assert answer.status_code == 200
    message_id = messages(app)[0].id

    def database_gone(*_args):
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(service, "fetch", database_gone)
    with pytest.raises(OperationalError):
        jobs.call_in_app(app, service.process, (message_id,))
    assert messages(app)[0].state == "accepted"
    monkeypatch.undo()
    jobs.call_in_app(app, service.process, (message_id,))
    assert messages(app)[0].state == "emitted" and record_events(app)["product.created"] == 1


def test_a_body_that_breaks_processing_fails_once_rather_than_retrying_for_ever(app, linked):
    from integration.intake import service
    from integration.models import StoreLink

    link_id, _ = linked
    with app.app_context():
        _, token = service.enable(db.session.get(StoreLink, link_id), "secret", secret="k" * 32)
    client = app.test_client()
    deep = b'{"event":"product.updated","data":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert client.post(f"/magento/events/{link_id}/secret/{token}", data=deep,
                       headers={"X-Webhook-Secret": "k" * 32}).status_code == 200
    jobs.call_in_app(app, service.process, (messages(app)[0].id,))
    assert messages(app)[0].state == "skipped" and "nested" in messages(app)[0].reason


def test_a_message_whose_job_was_lost_is_queued_again_by_the_sweep(app, linked):
    from integration.intake import service
    from integration.models import StoreLink, utcnow

    link_id, _ = linked
    with app.app_context():
        _, token = service.enable(db.session.get(StoreLink, link_id), "secret", secret="k" * 32)
    client = app.test_client()
    assert client.post(f"/magento/events/{link_id}/secret/{token}?event=product.updated", data=b'{"data":{"id":4}}',
                       headers={"X-Webhook-Secret": "k" * 32}).status_code == 200
    jobs.stop(app)
    app.extensions["jobs"].engine = None  # the queued job is lost with its runner
    jobs.call_in_app(app, service.housekeeping)
    assert messages(app)[0].state == "accepted"  # not stale yet
    with app.app_context():
        message = db.session.scalar(select(IntakeMessage))
        message.received_at = utcnow() - dt.timedelta(minutes=2)
        db.session.commit()
    jobs.call_in_app(app, service.housekeeping)
    jobs.start(app)
    try:
        assert wait_until(lambda: messages(app)[0].state == "emitted")
    finally:
        jobs.stop(app)
