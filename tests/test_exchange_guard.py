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
