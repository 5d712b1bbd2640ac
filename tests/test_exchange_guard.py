"""The database guard that makes one activation's token exchange run exactly once, tested
directly (not by hoping two threads collide): who wins a claim, when a claim may be taken
over, and what a second submit does while another worker is exchanging."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from sqlalchemy import update

from integration import activation as activations
from integration.extensions import db
from integration.models import Activation, StoreLink, User, utcnow

from .test_identity import activate, login, submit


@pytest.fixture
def received(app, client, sandbox):
    """An activation as the callback leaves it: ``received``; returns (id, sandbox integration)."""
    integration = activate(client, sandbox)
    with app.app_context():
        return StoreLink.by_consumer_key(integration.consumer_key).activations[0].id, integration


def claim(app, activation_id: int) -> bool:
    with app.app_context():
        return activations.claim(db.session.get(Activation, activation_id))


def set_claim(app, activation_id: int, *, state: str = Activation.EXCHANGING, age: float = 0.0) -> None:
    with app.app_context():
        db.session.execute(update(Activation).where(Activation.id == activation_id).values(
            state=state, claimed_at=utcnow() - dt.timedelta(seconds=age)))
        db.session.commit()


def test_the_first_claim_wins_and_the_second_loses(app, received):
    activation_id, _ = received
    assert claim(app, activation_id) is True
    assert claim(app, activation_id) is False
    with app.app_context():
        assert db.session.get(Activation, activation_id).state == Activation.EXCHANGING


def test_a_failed_exchange_can_be_claimed_again(app, received):
    activation_id, _ = received
    set_claim(app, activation_id, state=Activation.FAILED, age=5)
    assert claim(app, activation_id) is True


@pytest.mark.parametrize("state", [Activation.LINKED, Activation.SUPERSEDED])
def test_a_finished_or_replaced_activation_cannot_be_claimed(app, received, state):
    activation_id, _ = received
    set_claim(app, activation_id, state=state, age=3600)
    assert claim(app, activation_id) is False


def test_an_exchange_still_running_cannot_be_claimed_a_stale_one_can(app, received):
    activation_id, _ = received
    stale = activations.STALE_CLAIM.total_seconds()
    set_claim(app, activation_id, age=stale - 5)  # claimed recently: its worker is still at it
    assert claim(app, activation_id) is False
    set_claim(app, activation_id, age=stale + 5)  # its worker died: take it over
    assert claim(app, activation_id) is True
    assert claim(app, activation_id) is False  # and the takeover is itself a fresh claim


def finish_elsewhere(app, activation_id: int, *, after: float, ok: bool) -> threading.Thread:
    """Another worker, already exchanging this activation, records its outcome ``after`` seconds."""

    def run():
        time.sleep(after)
        with app.app_context():
            a = db.session.get(Activation, activation_id)
            link = a.store_link
            if ok:
                a.state, a.finished_at = Activation.LINKED, utcnow()
                link.status, link.owner = StoreLink.LINKED, User.by_email("owner@example.com")
                link.access_token, link.access_token_secret = "t" * 32, "u" * 32
            else:
                a.state, a.error = Activation.FAILED, "Magento refused the token exchange: Consumer key has expired"
                link.status = StoreLink.FAILED
            db.session.commit()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_submit_while_another_worker_exchanges_waits_for_its_success(app, client, received, sandbox, user):
    activation_id, integration = received
    login(client)
    set_claim(app, activation_id)
    other = finish_elsewhere(app, activation_id, after=0.6, ok=True)
    started = time.monotonic()
    response = submit(client, integration, "")
    other.join()
    assert response.status_code == 200 and "Store linked" in response.get_data(as_text=True)
    assert time.monotonic() - started >= 0.5  # it waited for the other worker
    assert sandbox.state.counters.request_token_calls == 0  # and did not exchange a second time


def test_a_submit_while_another_worker_exchanges_reports_its_failure(app, client, received, sandbox, user):
    activation_id, integration = received
    login(client)
    set_claim(app, activation_id)
    other = finish_elsewhere(app, activation_id, after=0.6, ok=False)
    response = submit(client, integration, "")
    other.join()
    assert response.status_code == 502 and "Consumer key has expired" in response.get_data(as_text=True)
    assert sandbox.state.counters.request_token_calls == 0


def test_a_store_linked_by_another_account_while_the_password_was_checked_is_refused(
        app, client, received, sandbox, user, admin, monkeypatch):
    """The pop-up's submit read the store and its activation, then waited for the password hash;
    meanwhile another account's pop-up linked the store. What the submit decides on is the store as
    it is now, not as it was read."""
    from integration import password_hashing
    from .conftest import PASSWORD

    activation_id, integration = received
    checked = password_hashing.verify_password

    def checked_while_the_other_pop_up_links(*args, **kwargs):
        result = checked(*args, **kwargs)
        with app.app_context():
            a = db.session.get(Activation, activation_id)
            a.state, a.finished_at = Activation.LINKED, utcnow()
            a.store_link.status, a.store_link.owner_id = StoreLink.LINKED, admin
            a.store_link.access_token, a.store_link.access_token_secret = "t" * 32, "u" * 32
            db.session.commit()
        return result

    monkeypatch.setattr(password_hashing, "verify_password", checked_while_the_other_pop_up_links)
    response = submit(client, integration, "", email="owner@example.com", password=PASSWORD)
    assert response.status_code == 403 and "linked to another account" in response.get_data(as_text=True)
    assert sandbox.state.counters.request_token_calls == 0
    with app.app_context():
        assert db.session.get(StoreLink, db.session.get(Activation, activation_id).store_link_id).owner_id == admin


def test_a_callback_repeated_while_the_password_was_checked_gives_the_link_a_new_window(
        app, client, received, sandbox, user, monkeypatch):
    """Magento's window had passed when the submit read the activation, but the admin clicked
    Activate again (the same verifier: the callback's repeat starts a new window) while the
    password was being checked: the submit links the store rather than calling it expired."""
    from integration import password_hashing
    from .conftest import PASSWORD, csrf_from
    from .test_identity import identity_url

    activation_id, integration = received
    page = client.get(identity_url(integration, "")).get_data(as_text=True)
    with app.app_context():  # the pop-up stayed open past Magento's window
        db.session.execute(update(Activation).where(Activation.id == activation_id).values(
            received_at=utcnow() - dt.timedelta(hours=1)))
        db.session.commit()
    checked = password_hashing.verify_password

    def checked_while_the_callback_repeats(*args, **kwargs):
        result = checked(*args, **kwargs)
        with app.app_context():
            db.session.execute(update(Activation).where(Activation.id == activation_id).values(
                received_at=utcnow()))
            db.session.commit()
        return result

    monkeypatch.setattr(password_hashing, "verify_password", checked_while_the_callback_repeats)
    response = client.post("/magento/identity", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "owner@example.com", "password": PASSWORD})
    assert response.status_code == 200 and "Store linked" in response.get_data(as_text=True)
    assert sandbox.state.counters.request_token_calls == 1
