"""``integration.activation``'s guards through its library API and the callback endpoint: what a callback
must carry, and how many expired links one callback clears."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, insert, select

from integration import activation as activations
from integration.extensions import db
from integration.models import StoreLink, utcnow

FIELDS = {"oauth_consumer_key": "k" * 32, "oauth_consumer_secret": "s" * 32,
          "store_base_url": "http://127.0.0.1:8080/", "oauth_verifier": "v" * 32}


@pytest.mark.parametrize("name", activations.CALLBACK_FIELDS)
@pytest.mark.parametrize("value", [None, ""])
def test_a_callback_without_a_field_names_it_whatever_form_it_comes_in(app, name, value):
    """A plain mapping (a JSON body, a CLI) as well as a werkzeug form: a missing or empty field is named."""
    with app.app_context():
        given = {**FIELDS, name: value}
        with pytest.raises(activations.CallbackRejected, match=f"^{name} is missing$"):
            activations.parse_callback(given)
        del given[name]
        with pytest.raises(activations.CallbackRejected, match=f"^{name} is missing$"):
            activations.parse_callback(given)
        assert activations.parse_callback(FIELDS).store_base_url == "http://127.0.0.1:8080/"


def test_one_callback_clears_at_most_purge_batch_expired_links(app, client):
    """Enough to outpace a flood, few enough to keep the callback fast: exactly PURGE_BATCH, oldest first."""
    assert activations.PURGE_BATCH == 100
    old = utcnow() - dt.timedelta(days=30)
    with app.app_context():
        db.session.execute(insert(StoreLink), [
            {"consumer_key": f"x{n:031d}", "consumer_secret": "s" * 32, "base_url": "http://127.0.0.1:8080/",
             "store_host": "127.0.0.1", "status": StoreLink.PENDING, "created_at": old,
             "updated_at": old + dt.timedelta(seconds=n)} for n in range(activations.PURGE_BATCH + 1)])
        db.session.commit()
    assert client.post("/magento/callback", data=FIELDS).status_code == 200
    with app.app_context():
        left = db.session.scalars(select(StoreLink.consumer_key).order_by(StoreLink.consumer_key)).all()
    assert left == ["k" * 32, f"x{activations.PURGE_BATCH:031d}"]  # the youngest expired one waits


@pytest.mark.parametrize("name", activations.CALLBACK_FIELDS)
def test_a_field_given_twice_is_refused_and_named(app, name):
    from werkzeug.datastructures import MultiDict

    with app.app_context():
        # an empty first value is missing, whatever follows
        for values, reason in (([FIELDS[name], FIELDS[name]], "is given more than once"),
                               (["", FIELDS[name]], "is missing")):
            form = MultiDict([(k, v) for k, v in FIELDS.items() if k != name] + [(name, v) for v in values])
            with pytest.raises(activations.CallbackRejected, match=f"^{name} {reason}$"):
                activations.parse_callback(form)


def test_a_callback_that_loses_the_insert_to_a_concurrent_one_is_retried(app, client):
    """Two callbacks for the same new key at once: one inserts the link, the other's insert hits the unique
    key. The loser tries again (and finds the link), it does not answer 500. The race is made certain here:
    just before our first flush, the same key is inserted in our transaction, as the winner's would be."""
    from sqlalchemy import event

    raced = []

    def winner_inserts_first(session, flush_context, instances):
        if not raced:
            raced.append(True)
            session.connection().execute(insert(StoreLink).values(
                consumer_key=FIELDS["oauth_consumer_key"], consumer_secret="s" * 32, base_url="http://x/",
                store_host="x", status=StoreLink.PENDING))

    with app.app_context():
        event.listen(db.session, "before_flush", winner_inserts_first)
        try:
            response = client.post("/magento/callback", data=FIELDS)
        finally:
            event.remove(db.session, "before_flush", winner_inserts_first)
    assert raced and response.status_code == 200
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(StoreLink)) == 1


def test_a_callback_whose_insert_fails_twice_gives_the_database_error(app):
    """One retry only: if the key collides again, the caller gets the database's own error."""
    from sqlalchemy import event
    from sqlalchemy.exc import IntegrityError

    def always_collide(session, flush_context, instances):
        session.connection().execute(insert(StoreLink).values(
            consumer_key=FIELDS["oauth_consumer_key"], consumer_secret="s" * 32, base_url="http://x/",
            store_host="x", status=StoreLink.PENDING))

    with app.test_request_context():
        callback = activations.parse_callback(FIELDS)
        event.listen(db.session, "before_flush", always_collide)
        try:
            with pytest.raises(IntegrityError):
                activations.record_callback(callback, "203.0.113.5")
        finally:
            event.remove(db.session, "before_flush", always_collide)
            db.session.rollback()


def test_claiming_one_activation_leaves_every_other_one_alone(app, client, sandbox):
    """Two stores' callbacks are both waiting for their admins: claiming the first takes only that one."""
    from integration.models import Activation

    from .test_identity import activate

    first, second = activate(client, sandbox, "First"), activate(client, sandbox, "Second")
    with app.app_context():
        ids = [StoreLink.by_consumer_key(i.consumer_key).activations[0].id for i in (first, second)]
        assert activations.claim(db.session.get(Activation, ids[0])) is True
        assert db.session.get(Activation, ids[1]).state == Activation.RECEIVED
        assert activations.claim(db.session.get(Activation, ids[1])) is True
        assert activations.claim(db.session.get(Activation, ids[0])) is False


def test_a_reauthorize_replaces_the_waiting_activation_and_moves_the_store(app, client):
    """Magento posts again (a new verifier, the store now at another address): the activation that was still
    waiting can no longer be used, and the link follows the store to its new host."""
    from integration.models import Activation

    assert client.post("/magento/callback", data=FIELDS).status_code == 200
    moved = {**FIELDS, "oauth_verifier": "w" * 32, "store_base_url": "http://localhost:8080/shop/"}
    assert client.post("/magento/callback", data=moved).status_code == 200
    with app.app_context():
        link = StoreLink.by_consumer_key(FIELDS["oauth_consumer_key"])
        assert [(a.kind, a.state) for a in sorted(link.activations, key=lambda a: a.id)] == \
            [("activate", Activation.SUPERSEDED), ("reauthorize", Activation.RECEIVED)]
        assert (link.base_url, link.store_host) == ("http://localhost:8080/shop/", "localhost")


def test_callbacks_are_audited_with_where_they_came_from_and_what_they_did(app, client):
    from integration.models import AuditEvent

    for addr in ("203.0.113.7", "203.0.113.8"):  # the same verifier twice: Magento retrying its POST
        assert client.post("/magento/callback", data=FIELDS, environ_base={"REMOTE_ADDR": addr}).status_code == 200
    with app.app_context():
        rows = db.session.execute(select(AuditEvent.action, AuditEvent.remote_addr, AuditEvent.detail)
                                  .where(AuditEvent.action.like("callback.%")).order_by(AuditEvent.id)).all()
    assert [tuple(r) for r in rows] == [
        ("callback.received", "203.0.113.7", "activate from http://127.0.0.1:8080/"),
        ("callback.repeated", "203.0.113.8", "activation received"),
    ]


def test_only_the_owner_or_an_admin_may_link_a_store_someone_owns(app, client, sandbox, user, admin):
    from integration.models import Activation, User

    from .test_identity import activate

    integration = activate(client, sandbox)
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        other = User(email="other@example.com", role="member")
        other.set_password("another password")
        db.session.add(other)
        link.owner_id = user
        db.session.commit()
        activation = db.session.get(Activation, link.activations[0].id)
        with pytest.raises(activations.LinkRefused) as refused:
            activations.link_store(activation, other, "203.0.113.9")
        assert refused.value.status == 403 and str(refused.value) == refused.value.message
        assert "Log in with the account that linked it" in str(refused.value)
        from prometheus_client import REGISTRY

        def succeeded():  # what /metrics reports
            return REGISTRY.get_sample_value("companion_token_exchanges_total", {"outcome": "succeeded"}) or 0

        before = succeeded()
        linked = activations.link_store(activation, db.session.get(User, admin), "203.0.113.9")
        assert succeeded() == before + 1
        assert linked.status == StoreLink.LINKED and linked.owner_id == user  # the owner stays
        done = db.session.get(Activation, activation.id)
        assert done.state == Activation.LINKED and done.finished_at is not None and done.user_id == admin
        from integration.models import AuditEvent
        assert db.session.execute(select(AuditEvent.store_link_id, AuditEvent.user_id)
                                  .where(AuditEvent.action == "exchange.succeeded")).all() == [(linked.id, admin)]


def test_what_a_refused_link_tells_the_admin(app, client, sandbox, user):
    """The pop-up shows a title, the store's own reason, and separately what to do about it."""
    import time

    from integration import stores
    from integration.models import Activation, User

    from .test_identity import activate

    integration = activate(client, sandbox)
    integration.consumer_updated_at = time.time() - 1000  # Magento: the consumer expired
    with app.app_context():
        owner = db.session.get(User, user)
        activation = StoreLink.by_consumer_key(integration.consumer_key).activations[0]
        with pytest.raises(activations.LinkRefused) as refused:
            activations.link_store(activation, owner, None)
        assert refused.value.title == "Magento's activation window had passed" and refused.value.status == 502
        assert "Consumer key has expired" in refused.value.message
        assert refused.value.hint and refused.value.hint not in refused.value.message
        failed = db.session.get(Activation, activation.id)
        assert failed.state == Activation.FAILED and failed.user_id == user  # who tried, for the store's history
        from integration.models import AuditEvent
        audited = db.session.execute(select(AuditEvent.user_id, AuditEvent.detail)
                                     .where(AuditEvent.action == "exchange.failed")).all()
        assert [(u, "expired" in d) for u, d in audited] == [(user, True)]

    integration.consumer_updated_at = time.time()
    activate_again = client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": activation_verifier(integration)})
    assert activate_again.status_code == 200
    with app.app_context():
        owner = db.session.get(User, user)
        link = StoreLink.by_consumer_key(integration.consumer_key)
        activation = db.session.get(Activation, activations.current_activation(link).id)
        assert activations.link_store(activation, owner, None).status == StoreLink.LINKED
        stores.unlink(link)
        activation = db.session.get(Activation, activation.id)
        with pytest.raises(activations.LinkRefused) as used:
            activations.link_store(activation, owner, None)
        assert (used.value.title, used.value.message, used.value.status) == (
            "This activation was already used", "The store was unlinked after this activation completed.", 409)
        assert "Reauthorize" in used.value.hint


def activation_verifier(integration) -> str:
    from integration.sandbox.oauth_provider import new_verifier

    integration.token = None
    return new_verifier(integration).verifier


def test_a_link_waits_for_another_workers_exchange_only_so_long(app, client, sandbox, user, monkeypatch):
    """Another worker claimed the exchange a moment ago and is still at it when the wait is over: 409, try
    again; an activation that can no longer run (replaced by a newer callback) is refused as failed."""
    from sqlalchemy import update

    from integration.models import Activation, User

    from .test_identity import activate

    monkeypatch.setattr(activations.wait_for, "__defaults__", (0.3, 0.05))
    integration = activate(client, sandbox)
    with app.app_context():
        owner = db.session.get(User, user)
        activation_id = StoreLink.by_consumer_key(integration.consumer_key).activations[0].id
        for state, expected in ((Activation.EXCHANGING, ("Still linking", 409)),
                                (Activation.SUPERSEDED, ("The store refused the link", 502))):
            db.session.execute(update(Activation).where(Activation.id == activation_id)
                               .values(state=state, claimed_at=utcnow()))
            db.session.commit()
            with pytest.raises(activations.LinkRefused) as refused:
                activations.link_store(db.session.get(Activation, activation_id), owner, None)
            assert (refused.value.title, refused.value.status) == expected
        assert refused.value.message == "The token exchange failed."
    assert sandbox.state.counters.request_token_calls == 0


def test_a_link_stops_waiting_as_soon_as_the_other_worker_is_done(app, client, sandbox, user, monkeypatch):
    import time

    from sqlalchemy import update

    from integration.models import Activation, User

    from .test_exchange_guard import finish_elsewhere
    from .test_identity import activate

    monkeypatch.setattr(activations.wait_for, "__defaults__", (30.0, 0.05))
    integration = activate(client, sandbox)
    with app.app_context():
        owner = db.session.get(User, user)
        activation_id = StoreLink.by_consumer_key(integration.consumer_key).activations[0].id
        db.session.execute(update(Activation).where(Activation.id == activation_id)
                           .values(state=Activation.EXCHANGING, claimed_at=utcnow()))
        db.session.commit()
    other = finish_elsewhere(app, activation_id, after=0.3, ok=True)
    started = time.monotonic()
    with app.app_context():
        link = activations.link_store(db.session.get(Activation, activation_id), db.session.merge(owner), None)
        assert link.status == StoreLink.LINKED
    other.join()
    assert time.monotonic() - started < 15  # not the whole 30 s


def test_a_callback_for_a_store_linked_by_hand_starts_a_reauthorize(app, client, sandbox, user):
    """A store added on the dashboard with its tokens has no activation yet: when Magento later posts a
    callback for the same integration (Reauthorize), it is taken as one, not a crash."""
    from integration.sandbox.oauth_provider import new_verifier
    from integration.sandbox.state import Token, random_string

    from .test_dashboard import login, post

    integration = sandbox.state.add_integration("Manual", "", "")
    integration.token = Token("access", random_string(), random_string(), "")
    integration.status = "Active"
    login(client)
    assert post(client, "/stores/new", "/stores/new", base_url=sandbox.url, consumer_key=integration.consumer_key,
                consumer_secret=integration.consumer_secret, access_token=integration.token.token,
                access_token_secret=integration.token.secret).status_code == 302
    integration.token = None
    response = client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": new_verifier(integration).verifier})
    assert response.status_code == 200
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.status == StoreLink.PENDING and [a.kind for a in link.activations] == ["reauthorize"]


def test_the_stores_page_lists_its_callbacks(app, client, sandbox, user):
    """Each callback shows on its store's page, with where it came from."""
    import re

    from .test_identity import activate, login, submit

    login(client)
    integration = activate(client, sandbox)
    assert submit(client, integration, "").status_code == 200
    with app.app_context():
        link_id = StoreLink.by_consumer_key(integration.consumer_key).id
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert re.search(r"<td>callback\.received</td><td>[^<]*</td>\s*<td>127\.0\.0\.1</td>\s*"
                     rf"<td>activate from {re.escape(sandbox.url)}/</td>", page)


def test_an_activation_past_the_window_shows_as_the_stores_last_error(app, client, sandbox, user, admin):
    import re

    from .conftest import PASSWORD, csrf_from
    from .test_doctor import age_activation, operator, popup_url
    from .test_identity import activate

    integration = activate(client, sandbox)
    form_page = client.get(popup_url(integration.consumer_key)).get_data(as_text=True)  # opened in time...
    age_activation(app, integration, 300)  # ...confirmed too late
    assert client.post("/magento/identity", data={
        "csrf_token": csrf_from(form_page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "owner@example.com", "password": PASSWORD}).status_code == 409
    with app.app_context():
        link_id = StoreLink.by_consumer_key(integration.consumer_key).id
    page = operator(app).get(f"/stores/{link_id}").get_data(as_text=True)
    last = re.search(r'<dt>Last error</dt><dd class="error-cell">([^<]*)</dd>', page)
    assert last and "not tried" in last.group(1)


def test_a_refusal_without_advice_shows_none(app, client, sandbox, user):
    """The pop-up's "What to do" appears only when there is something to do."""
    from integration.models import User

    from .conftest import PASSWORD, csrf_from
    from .test_identity import activate, submit

    integration = activate(client, sandbox)
    assert submit(client, integration, "", email="owner@example.com", password=PASSWORD).status_code == 200
    client.post("/auth/logout", data={"csrf_token": csrf_from(client.get("/").get_data(as_text=True))})
    with app.app_context():
        other = User(email="other@example.com")
        other.set_password(PASSWORD)
        db.session.add(other)
        db.session.commit()
    response = submit(client, integration, "", email="other@example.com", password=PASSWORD)
    page = response.get_data(as_text=True)
    assert response.status_code == 403 and "This store is linked to another account" in page
    assert "What to do" not in page


def test_a_refused_exchange_shows_on_the_stores_page_when_it_ended_and_who_tried(app, client, sandbox, user, admin):
    import re
    import time

    from .test_doctor import operator
    from .test_identity import activate, login, submit

    login(client)
    integration = activate(client, sandbox)
    integration.consumer_updated_at = time.time() - 1000  # the store answers "Consumer key has expired"
    assert submit(client, integration, "").status_code == 502
    with app.app_context():
        link_id = StoreLink.by_consumer_key(integration.consumer_key).id
    page = operator(app).get(f"/stores/{link_id}").get_data(as_text=True)
    row = re.search(r"<td>activate</td><td>[^<]*</td>\s*<td>failed</td><td>owner@example\.com</td>\s*"
                    r"<td>(.*?)</td><td class=\"error-cell\">([^<]*)</td>", page)
    assert row and "<time" in row.group(1) and "Consumer key has expired" in row.group(2)


def test_the_doctor_shows_both_token_steps_of_a_link_with_the_stores_answer(app, client, sandbox, user, admin):
    import re

    from .test_doctor import doctor_page, operator
    from .test_identity import activate, login, submit

    login(client)
    integration = activate(client, sandbox)
    assert submit(client, integration, "").status_code == 200
    with app.app_context():
        link_id = StoreLink.by_consumer_key(integration.consumer_key).id
    page = doctor_page(operator(app), link_id)
    steps = re.findall(r'data-step="(\w+)" data-outcome="ok">(.*?)</li>', page, re.S)
    tokens = [(step, body) for step, body in steps if step in ("request_token", "access_token")]
    assert [step for step, _ in tokens] == ["request_token", "access_token"]
    for _, body in tokens:
        assert "HTTP 200" in body and "signed with profile 2.4.8+" in body


def test_a_link_after_a_failed_try_shows_when_it_linked_and_no_error_left(app, client, sandbox, user, admin):
    import re

    from .test_doctor import operator
    from .test_identity import activate, login, submit

    login(client)
    integration = activate(client, sandbox)
    sandbox.state.failures.append(["/oauth/token/request", 503, 1])
    assert submit(client, integration, "").status_code == 502
    with app.app_context():
        link_id = StoreLink.by_consumer_key(integration.consumer_key).id
    ops = operator(app)
    assert "<dt>Last error</dt>" in ops.get(f"/stores/{link_id}").get_data(as_text=True)
    assert submit(client, integration, "").status_code == 200  # the same activation, retried
    page = ops.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "<dt>Last error</dt>" not in page
    for field in ("Linked at", "Last contact"):
        assert re.search(rf"<dt>{field}</dt><dd><time ", page), field
