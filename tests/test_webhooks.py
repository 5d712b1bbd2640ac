"""Lifecycle webhooks over real HTTP to a real receiver: signed, retried, replayed, never lost.

The app runs its deliveries either on the embedded runner (started explicitly here; tests
do not start it by themselves) or synchronously with ``dispatch.run()``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time

import pytest
from sqlalchemy import func, select, text

from integration import create_app, events, jobs
from integration.extensions import db
from integration.models import StoreLink, User
from integration.webhook_signature import (HEADER, MalformedHeader, NoMatchingSignature, SignatureError,
                                           TimestampOutsideTolerance, sign, verify_signature)
from integration.webhooks import dispatch, service
from integration.webhooks.models import DeliveryAttempt, WebhookDelivery

from .conftest import PASSWORD, csrf_from
from .test_ops import _value as metric_value

FAST = {"ALLOWED_WEBHOOK_HOSTS": ("127.0.0.1",), "WEBHOOK_RETRY_BASE": 0.2, "WEBHOOK_RETRY_CAP": 0.4,
        "WEBHOOK_DEADLINE": 1.0, "WEBHOOK_SWEEP_INTERVAL": 0.2}


@pytest.fixture
def app_config(app_config):
    return {**app_config, **FAST}


def add_endpoint(app, url, *types):
    with app.app_context():
        endpoint, secret = service.add(url, types)
        return endpoint.id, secret


def dispatch_now(app) -> int:
    return jobs.call_in_app(app, dispatch.run)


def deliveries(app):
    with app.app_context():
        rows = db.session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        db.session.expunge_all()
        return rows


def attempts(app, delivery_id):
    with app.app_context():
        return [(a.status, a.error) for a in db.session.scalars(
            select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id).order_by(DeliveryAttempt.id))]


def record_event(app, link_id, type_=events.STORE_UNLINKED):
    with app.app_context():
        event = events.record(db.session, type_, db.session.get(StoreLink, link_id))
        db.session.commit()
        return event.public_id


def a_link(app, owner_id=None, base_url="https://shop.example.com/") -> int:
    with app.app_context():
        link = StoreLink(consumer_key=f"k{time.monotonic_ns()}"[:32], consumer_secret="s" * 32, base_url=base_url,
                         store_host="shop.example.com", status="linked", owner_id=owner_id)
        db.session.add(link)
        db.session.commit()
        return link.id


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def login(client, email="admin@example.com"):
    page = client.get("/auth/login").get_data(as_text=True)
    client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})


# --- the signature helper ---------------------------------------------------------------

def test_the_shipped_helper_verifies_and_refuses_what_it_should():
    body = b'{"id":"evt_1","type":"store.linked"}'
    header = sign(["whsec_a"], body, timestamp=1_700_000_000)
    assert verify_signature("whsec_a", header, body, now=1_700_000_100) == 1_700_000_000
    with pytest.raises(NoMatchingSignature):
        verify_signature("whsec_b", header, body, now=1_700_000_100)
    with pytest.raises(NoMatchingSignature):
        verify_signature("whsec_a", header, body + b" ", now=1_700_000_100)
    # The replay window: an old delivery sent again is refused, in either direction of skew.
    with pytest.raises(TimestampOutsideTolerance):
        verify_signature("whsec_a", header, body, now=1_700_000_301)
    with pytest.raises(TimestampOutsideTolerance):
        verify_signature("whsec_a", header, body, now=1_699_999_000, tolerance=300)
    assert verify_signature("whsec_a", header, body, now=1_700_000_299)
    # A signature for another timestamp does not verify with this one.
    forged = header.replace("t=1700000000", "t=1700000200")
    with pytest.raises(NoMatchingSignature):
        verify_signature("whsec_a", forged, body, now=1_700_000_200)
    for bad in (None, "", "v1=abc", "t=1700000000", "t=soon,v1=abc", "t=1," + "v1=a," * 2000):
        with pytest.raises(MalformedHeader):
            verify_signature("whsec_a", bad, body, now=1_700_000_000)
    assert issubclass(TimestampOutsideTolerance, SignatureError)


def test_the_helper_imports_nothing_from_the_app():
    import subprocess
    import sys

    code = "import sys, integration.webhook_signature; print(sorted(m for m in sys.modules if m.startswith(('flask', 'sqlalchemy', 'integration.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['integration.webhook_signature']"


# --- the whole path ---------------------------------------------------------------------

def test_linking_a_store_sends_store_linked_verified_with_the_helper(app, sandbox, receiver, runner, user):
    _, secret = add_endpoint(app, receiver.url + "/hooks/magento")
    client = app.test_client()
    integration = sandbox.state.add_integration("Linked", "x", "y")
    from integration.sandbox.oauth_provider import new_verifier

    verifier = new_verifier(integration).verifier
    client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": verifier})
    page = client.get(f"/magento/identity?oauth_consumer_key={integration.consumer_key}").get_data(as_text=True)
    assert client.post("/magento/identity", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "owner@example.com", "password": PASSWORD}).status_code == 200
    assert receiver.wait_for(1), "no delivery"
    got = receiver.received[0]
    assert got.path == "/hooks/magento" and got.headers["Content-Type"] == "application/json"
    verify_signature(secret, got.headers[HEADER], got.body)
    event = got.event
    assert event["type"] == "store.linked" and event["id"].startswith("evt_")
    assert got.headers["Companion-Event-Id"] == event["id"]
    assert event["store"]["base_url"] == sandbox.url + "/" and event["store"]["status"] == "linked"
    assert event["store"]["signature_profile"] is None and set(event["store"]) == {
        "id", "base_url", "status", "signature_profile", "magento_version"}
    token = integration.token
    for secret_value in (integration.consumer_secret, verifier, token.token, token.secret):
        assert secret_value not in got.body.decode()
    assert wait_until(lambda: deliveries(app)[0].state == "delivered")


def test_each_lifecycle_event_is_recorded_with_its_change(app, linked, sandbox, receiver):
    link_id, integration = linked
    add_endpoint(app, receiver.url)  # after the link: only later events reach it
    runner = app.test_cli_runner()
    sandbox_down = sandbox.state.integrations.pop(integration.id)
    assert runner.invoke(args=["stores", "check", str(link_id)]).exit_code == 1          # 401: revoked
    sandbox.state.integrations[integration.id] = sandbox_down
    assert runner.invoke(args=["stores", "unlink", str(link_id), "--yes"]).exit_code == 0
    with app.app_context():
        types = db.session.scalars(select(events.Event.type).order_by(events.Event.id)).all()
    assert types == ["store.linked", "store.revoked", "store.unlinked"]
    dispatch_now(app)
    got = {r.event["type"]: r.event for r in receiver.received}  # sent in parallel: in any order
    assert sorted(got) == ["store.revoked", "store.unlinked"] and receiver.count == 2
    assert "does not exist" in got["store.revoked"]["reason"] and got["store.unlinked"]["store"]["status"] == "unlinked"


def test_a_failing_store_sends_check_failed_once_not_per_call(app, linked, sandbox, receiver):
    link_id, _ = linked
    add_endpoint(app, receiver.url, "store.check_failed")
    runner = app.test_cli_runner()
    sandbox.stop()  # the store goes away
    for _ in range(3):
        assert runner.invoke(args=["stores", "check", str(link_id)]).exit_code == 1
    dispatch_now(app)
    assert [r.event["type"] for r in receiver.received] == ["store.check_failed"]
    assert "could not connect" in receiver.received[0].event["reason"]


def test_an_event_is_part_of_its_transaction(app, receiver):
    add_endpoint(app, receiver.url)
    link_id = a_link(app)
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        link.status = "revoked"
        events.record(db.session, events.STORE_REVOKED, link)
        db.session.rollback()  # the change did not happen: neither did its event
        assert db.session.scalar(select(func.count()).select_from(events.Event)) == 0
        assert db.session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        with pytest.raises(events.UnknownEventType):
            events.record(db.session, "store.exploded", link)


# --- retries ----------------------------------------------------------------------------

def test_a_500_is_retried_until_the_receiver_takes_it(app, receiver):
    add_endpoint(app, receiver.url)
    event_id = record_event(app, a_link(app))
    receiver.mode = "500"
    dispatch_now(app)
    [d] = deliveries(app)
    assert d.state == "pending" and d.attempts == 1 and d.last_status == 500 and d.next_attempt_at is not None
    receiver.mode = "ok"
    time.sleep(0.45)  # past the back-off (capped at 0.4 s here)
    dispatch_now(app)
    [d] = deliveries(app)
    assert d.state == "delivered" and d.attempts == 2
    assert attempts(app, d.id) == [(500, "answered HTTP 500"), (204, None)]
    assert [r.event["id"] for r in receiver.received] == [event_id, event_id]


def test_a_receiver_that_does_not_answer_in_time_is_cut_off_and_retried(app, receiver):
    add_endpoint(app, receiver.url)
    record_event(app, a_link(app))
    receiver.mode, receiver.delay = "sleep", 6.0
    started = time.monotonic()
    dispatch_now(app)
    assert time.monotonic() - started < 4.5  # cut at 1 s, not after the receiver's 6 s (slack for a loaded CI)
    [d] = deliveries(app)
    assert d.state == "pending" and d.last_status is None and "within 1 s" in d.last_error


def test_the_deadline_is_total_not_per_read(app, receiver):
    """A receiver sending a byte every 0.3 s never trips a 1 s read timeout; the total deadline cuts it."""
    add_endpoint(app, receiver.url)
    record_event(app, a_link(app))
    receiver.mode, receiver.delay = "drip", 0.3
    started = time.monotonic()
    dispatch_now(app)
    assert time.monotonic() - started < 6.0  # cut at 1 s, not after the drip's 30 s
    [d] = deliveries(app)
    assert d.state == "pending" and "within 1 s" in d.last_error


def test_receiver_hosts_are_looked_up_with_the_configured_dns_servers(app_config):
    # INTEGRATION_DNS_SERVERS is set where the system's resolver is not the one to trust (or
    # cannot see public names): a receiver is checked against the same answers as a store.
    from .servers import FakeDNS

    dns = FakeDNS(records={"erp.example": ["93.184.216.34"]})
    try:
        app = create_app({**app_config, "DNS_SERVERS": (dns.address,)})
        with app.app_context():
            assert service.check_url("https://erp.example/hooks") == "https://erp.example/hooks"
        assert "erp.example" in dns.queries
    finally:
        dns.stop()


def test_a_redirect_is_a_failure_and_is_not_followed(app, receiver):
    add_endpoint(app, receiver.url + "/hook")
    record_event(app, a_link(app))
    receiver.mode = "redirect"
    dispatch_now(app)
    [d] = deliveries(app)
    assert d.state == "pending" and d.last_status == 302 and "not followed" in d.last_error
    assert [r.path for r in receiver.received] == ["/hook"]  # never /elsewhere
    receiver.mode = "ok"
    time.sleep(0.45)
    dispatch_now(app)
    assert deliveries(app)[0].state == "delivered" and [r.path for r in receiver.received] == ["/hook", "/hook"]


def test_what_a_receiver_answers_is_stored_without_control_characters(app, receiver):
    # The delivery log (page and `webhooks deliveries`) shows the receiver's Location: an escape
    # sequence in it must not reach an operator's terminal, or the database.
    add_endpoint(app, receiver.url + "/hook")
    record_event(app, a_link(app))
    # "\u00c2\u0085" goes out as the bytes C2 85: UTF-8 for the C1 control U+0085.
    receiver.mode, receiver.location = "redirect", "\x1b[2J\x1b]0;owned\x07https://elsewhere.example/\u00c2\u0085"
    dispatch_now(app)
    [d] = deliveries(app)
    [(_, attempt_error)] = attempts(app, d.id)
    for stored in (d.last_error, attempt_error):
        assert "not followed" in stored and "elsewhere.example" in stored
        assert not any(c in stored for c in "\x1b\x07\x85"), stored


def test_a_receiver_whose_redirect_cannot_be_read_fails_only_its_own_delivery(app, receiver):
    from .receiver import Receiver

    healthy = Receiver()
    try:
        add_endpoint(app, receiver.url + "/hook")
        add_endpoint(app, healthy.url + "/hook")
        record_event(app, a_link(app))
        receiver.mode, receiver.location = "redirect", "/caf\u00e9"  # the byte E9: Latin-1, not UTF-8
        dispatch_now(app)  # one batch: both deliveries
        bad, good = deliveries(app)
        assert good.state == "delivered" and healthy.count == 1
        assert bad.state == "pending" and bad.last_error
    finally:
        healthy.stop()


def test_after_the_retry_window_a_delivery_is_given_up(app, receiver):
    add_endpoint(app, receiver.url)
    record_event(app, a_link(app))
    receiver.mode = "500"
    with app.app_context():
        db.session.execute(text("UPDATE webhook_deliveries SET expires_at = :t"),
                           {"t": dt.datetime(2000, 1, 1)})
        db.session.commit()
    dispatch_now(app)
    assert deliveries(app)[0].state == "failed"
    time.sleep(0.45)
    assert dispatch_now(app) == 0 and receiver.count == 1


def test_metrics_count_deliveries_by_outcome_and_show_the_outbox_depth(app, receiver):
    def scrape():
        answer = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert answer.status_code == 200
        text_ = answer.get_data(as_text=True)
        return {name: metric_value(text_, "companion_webhook_deliveries_total", outcome=name)
                for name in ("delivered", "retrying", "given_up")}, metric_value(text_, "companion_outbox_depth")

    before, depth = scrape()
    assert depth == 0
    add_endpoint(app, receiver.url)
    link = a_link(app)
    record_event(app, link)
    receiver.mode = "500"
    assert scrape()[1] == 1
    dispatch_now(app)
    counts, depth = scrape()
    assert depth == 1 and counts["retrying"] - before["retrying"] == 1 and counts["delivered"] == before["delivered"]
    receiver.mode = "ok"
    record_event(app, link)
    time.sleep(0.45)  # past the back-off
    dispatch_now(app)
    counts, depth = scrape()
    assert depth == 0 and counts["delivered"] - before["delivered"] == 2 and counts["retrying"] - before["retrying"] == 1
    record_event(app, link)
    receiver.mode = "500"
    with app.app_context():
        db.session.execute(text("UPDATE webhook_deliveries SET expires_at = :t WHERE state = 'pending'"),
                           {"t": dt.datetime(2000, 1, 1)})
        db.session.commit()
    dispatch_now(app)
    counts, depth = scrape()
    assert depth == 0 and counts["given_up"] - before["given_up"] == 1

def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    delays = [dispatch.backoff(n, base=10, cap=3600) for n in range(1, 12)]
    assert 5 <= delays[0] <= 10 and 10 <= delays[1] <= 20 and 40 <= delays[3] <= 80
    assert all(1800 <= d <= 3600 for d in delays[9:])
    assert len({round(dispatch.backoff(3, base=10, cap=3600), 6) for _ in range(20)}) > 1  # jittered
    # Retries within the default 24 h: enough attempts, none after the window.
    total, n = 0.0, 0
    while total < 24 * 3600:
        n += 1
        total += min(3600, 10 * 2 ** (n - 1))
    assert 25 <= n <= 35


# --- rotation ---------------------------------------------------------------------------

def test_rotation_signs_with_both_secrets_for_the_grace_period(app, receiver):
    endpoint_id, old = add_endpoint(app, receiver.url)
    link_id = a_link(app)
    with app.app_context():
        _, new = service.rotate_secret(endpoint_id, dt.timedelta(hours=1))
    record_event(app, link_id)
    dispatch_now(app)
    got = receiver.received[-1]
    assert got.headers[HEADER].count("v1=") == 2
    verify_signature(new, got.headers[HEADER], got.body)
    verify_signature(old, got.headers[HEADER], got.body)
    with app.app_context():  # the grace period ends
        service.get(endpoint_id).previous_secret_until = dt.datetime(2000, 1, 1)
        db.session.commit()
    record_event(app, link_id)
    dispatch_now(app)
    got = receiver.received[-1]
    assert got.headers[HEADER].count("v1=") == 1
    verify_signature(new, got.headers[HEADER], got.body)
    with pytest.raises(NoMatchingSignature):
        verify_signature(old, got.headers[HEADER], got.body)


# --- surviving a restart, several dispatchers --------------------------------------------

def test_an_event_committed_before_a_crash_is_delivered_after_the_restart(app_config, app, receiver):
    _, secret = add_endpoint(app, receiver.url)
    event_id = record_event(app, a_link(app))  # committed with its outbox row; nothing ran it
    assert receiver.count == 0
    with app.app_context():
        db.engine.dispose()
    restarted = create_app(app_config)  # a new process's app: nothing in memory from before
    jobs.start(restarted)
    try:
        assert receiver.wait_for(1), "not delivered after the restart"
    finally:
        jobs.stop(restarted)
    assert receiver.received[0].event["id"] == event_id
    verify_signature(secret, receiver.received[0].headers[HEADER], receiver.received[0].body)


def test_a_dispatcher_that_died_mid_delivery_leaves_it_to_the_next(app, receiver):
    add_endpoint(app, receiver.url)
    record_event(app, a_link(app))
    with app.app_context():
        [claimed] = dispatch.claim(10)  # ... and the process dies here
        assert dispatch.claim(10) == []  # leased: nobody else takes it meanwhile
        db.session.execute(text("UPDATE webhook_deliveries SET next_attempt_at = :t"), {"t": dt.datetime(2000, 1, 1)})
        db.session.commit()  # the lease ran out
    assert dispatch_now(app) == 1 and deliveries(app)[0].state == "delivered"
    with app.app_context():  # the dead dispatcher's late outcome is not recorded over the new one
        dispatch.record_outcomes([claimed], [dispatch.sender.Answer(500, "answered HTTP 500", 1)])
    assert deliveries(app)[0].state == "delivered" and len(attempts(app, deliveries(app)[0].id)) == 1


def test_two_dispatchers_share_a_backlog_without_sending_anything_twice(app, receiver):
    add_endpoint(app, receiver.url)
    link_id = a_link(app)
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        for _ in range(150):
            events.record(db.session, events.STORE_CHECK_FAILED, link)
        db.session.commit()
    receiver.mode, receiver.delay = "sleep", 0.01  # slow enough for the claims to overlap
    threads = [threading.Thread(target=dispatch_now, args=(app,)) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert receiver.count == 150 and len(receiver.ids) == 150
    assert {d.state for d in deliveries(app)} == {"delivered"}


def test_concurrent_claims_never_take_the_same_delivery(app, receiver):
    add_endpoint(app, receiver.url)
    link_id = a_link(app)
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        for _ in range(200):
            events.record(db.session, events.STORE_CHECK_FAILED, link)
        db.session.commit()
    barrier, claimed = threading.Barrier(4), []

    def claimer():
        with app.app_context():
            barrier.wait()
            claimed.append([c.delivery_id for c in dispatch.claim(40)])
            db.session.remove()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    ids = [i for batch in claimed for i in batch]
    assert len(ids) == 160 and len(set(ids)) == 160


# --- outbound safety ---------------------------------------------------------------------

def test_private_addresses_only_where_allow_listed(app, app_config, receiver):
    strict = create_app({**app_config, "ALLOWED_WEBHOOK_HOSTS": ()})
    with strict.app_context():
        for url in (receiver.url, "http://10.0.0.8/x", "http://[::1]/x"):
            with pytest.raises(service.EndpointRefused, match="not a public address"):
                service.add(url)
        with pytest.raises(service.EndpointRefused):  # looked up in DNS, not /etc/hosts: refused either way
            service.add("http://localhost/x")
        for url in ("ftp://example.com/", "https://user:pw@example.com/", "example.com/hook", "https://exa mple.com/"):
            with pytest.raises(service.EndpointRefused):
                service.add(url)
        db.engine.dispose()
    allowed = create_app({**app_config, "ALLOWED_WEBHOOK_HOSTS": ("127.0.0.1",)})
    with allowed.app_context():
        endpoint, _ = service.add(f"http://127.0.0.1:{receiver.port}/hook")
        db.engine.dispose()
    link_id = a_link(allowed)
    record_event(allowed, link_id)
    # Allowed when added, no longer allowed now: the connected socket's address is refused.
    assert dispatch_now(strict) >= 1 and receiver.count == 0
    assert "not a public address" in deliveries(strict)[0].last_error
    with strict.app_context():
        db.session.execute(text("UPDATE webhook_deliveries SET next_attempt_at = :t"), {"t": dt.datetime(2000, 1, 1)})
        db.session.commit()
    dispatch_now(allowed)
    assert receiver.count == 1
    for a in (strict, allowed):
        with a.app_context():
            db.engine.dispose()


# --- dashboard, CLI, secrets -------------------------------------------------------------

def test_dashboard_add_log_replay_rotate_delete(app, client, admin, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    login(client)
    page = client.get("/webhooks/").get_data(as_text=True)
    made = client.post("/webhooks/", data={"csrf_token": csrf_from(page), "url": receiver.url + "/in",
                                           "types": ["store.unlinked", "store.revoked"]})
    assert made.status_code == 201
    shown = made.get_data(as_text=True)
    secret = shown.split('id="new-secret">', 1)[1].split("<", 1)[0]
    assert secret.startswith("whsec_") and "not shown again" in shown
    event_id = record_event(app, a_link(app))
    dispatch_now(app)
    verify_signature(secret, receiver.received[0].headers[HEADER], receiver.received[0].body)
    [d] = deliveries(app)
    log_page = client.get(f"/webhooks/{d.endpoint_id}").get_data(as_text=True)
    assert event_id in log_page and "delivered" in log_page and "HTTP 204" in log_page and "Replay" in log_page
    replayed = client.post(f"/webhooks/{d.endpoint_id}/deliveries/{d.id}/replay",
                           data={"csrf_token": csrf_from(log_page)})
    assert replayed.status_code == 302
    dispatch_now(app)
    first, again = receiver.received
    assert again.event["id"] == first.event["id"] == event_id and again.body == first.body
    verify_signature(secret, again.headers[HEADER], again.body)
    assert deliveries(app)[0].attempts == 2
    rotated = client.post(f"/webhooks/{d.endpoint_id}/rotate", data={"csrf_token": csrf_from(log_page)})
    new_secret = rotated.get_data(as_text=True).split('id="new-secret">', 1)[1].split("<", 1)[0]
    assert new_secret != secret
    # After the pages that showed them once, the secrets are nowhere: pages, CLI, logs, database.
    later = [client.get(p).get_data(as_text=True) for p in ("/webhooks/", f"/webhooks/{d.endpoint_id}", "/audit")]
    cli = [app.test_cli_runner().invoke(args=["webhooks", *a]).output
           for a in (["list"], ["deliveries", str(d.endpoint_id)])]
    with app.app_context():
        raw = json.dumps([list(r) for r in db.session.execute(text("SELECT * FROM webhook_endpoints")).all()],
                         default=str)
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for s in (secret, new_secret):
        for name, text_ in (("page", "\n".join(later)), ("cli", "\n".join(cli)), ("log", logs), ("database", raw)):
            assert s not in text_, f"secret in the {name}"
    assert client.post(f"/webhooks/{d.endpoint_id}/delete", data={"csrf_token": csrf_from(log_page)}).status_code == 302
    assert receiver.url not in client.get("/webhooks/").get_data(as_text=True)
    assert deliveries(app) == []


def test_dashboard_refuses_bad_endpoints_and_members(app, client, admin, user):
    login(client)
    page = client.get("/webhooks/").get_data(as_text=True)
    bad = client.post("/webhooks/", data={"csrf_token": csrf_from(page), "url": "http://10.1.2.3/hook"})
    assert bad.status_code == 400 and "not a public address" in bad.get_data(as_text=True)
    odd = client.post("/webhooks/", data={"csrf_token": csrf_from(page), "url": "https://example.com/",
                                          "types": ["store.exploded"]})
    assert odd.status_code == 400
    member = app.test_client()
    login(member, "owner@example.com")
    assert member.get("/webhooks/").status_code == 403
    assert client.get("/webhooks/999").status_code == 404


def test_cli_add_list_rotate_remove(app, receiver):
    cli = app.test_cli_runner()
    added = cli.invoke(args=["webhooks", "add", receiver.url, "--event", "store.linked", "--event", "store.revoked"])
    assert added.exit_code == 0, added.output
    secret = added.output.split("shown only now): ", 1)[1].split()[0]
    endpoint_id = added.output.split("added endpoint ", 1)[1].split(":")[0]
    listed = cli.invoke(args=["webhooks", "list"]).output
    assert receiver.url in listed and "store.linked store.revoked" in listed and secret not in listed
    rotated = cli.invoke(args=["webhooks", "rotate-secret", endpoint_id, "--grace-hours", "2"])
    assert rotated.exit_code == 0 and "also signs until" in rotated.output
    assert "rotating secret" in cli.invoke(args=["webhooks", "list"]).output
    assert cli.invoke(args=["webhooks", "add", "http://10.0.0.1/"]).exit_code == 1
    assert cli.invoke(args=["webhooks", "add", receiver.url, "--event", "nope"]).exit_code == 2
    assert cli.invoke(args=["webhooks", "remove", endpoint_id]).exit_code == 0
    assert f"no webhook endpoint {endpoint_id}" in cli.invoke(args=["webhooks", "remove", endpoint_id]).output


# --- the events feed ---------------------------------------------------------------------

def test_events_feed_in_order_after_a_cursor_and_only_own_stores_for_members(app, user, admin):
    with app.app_context():
        owner, boss = db.session.get(User, user), db.session.get(User, admin)
    mine, theirs = a_link(app, owner_id=user), a_link(app, owner_id=admin)
    ids = [record_event(app, link, events.STORE_CHECK_FAILED) for link in (mine, theirs, mine, theirs, mine)]
    with app.app_context():
        owner, boss = db.session.get(User, user), db.session.get(User, admin)
        assert [e.public_id for e in events.events_after(None, user=boss, limit=100)] == ids
        assert [e.public_id for e in events.events_after(ids[1], user=boss, limit=2)] == ids[2:4]
        assert [e.public_id for e in events.events_after(None, user=owner, limit=100)] == [ids[0], ids[2], ids[4]]
        assert [e.public_id for e in events.events_after(ids[2], user=owner, limit=100)] == [ids[4]]
        assert events.events_after(ids[4], user=boss, limit=10) == []
        assert json.loads(events.events_after(None, user=owner, limit=1)[0].payload)["id"] == ids[0]
        with pytest.raises(events.NoSuchEvent):
            events.events_after("evt_nope", user=boss, limit=10)
