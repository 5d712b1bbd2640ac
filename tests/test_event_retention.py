"""Events (with their webhook deliveries and attempts) are kept for ``INTEGRATION_EVENT_RETENTION_DAYS``,
then purged by a periodic job; a delivery still being retried keeps its event."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from integration import events
from integration.extensions import db
from integration.models import utcnow
from integration.webhooks.models import DeliveryAttempt, WebhookDelivery

from .apikit import bearer, make_key
from .test_webhooks import FAST, a_link, add_endpoint, deliveries, dispatch_now, record_event, wait_until


@pytest.fixture
def app_config(app_config):
    return {**app_config, **FAST, "EVENT_RETENTION_DAYS": 30, "EVENT_RETENTION_SWEEP_INTERVAL": 0.2}


def _age(app, public_id, days):
    with app.app_context():
        db.session.execute(update(events.Event).where(events.Event.public_id == public_id)
                           .values(created_at=utcnow() - dt.timedelta(days=days)))
        db.session.commit()


@pytest.fixture
def feed(app, client):
    key = make_key(app, scopes=("events:read",))
    return lambda: _feed(client, key)


def _feed(client, key):
    answer = client.get("/api/v1/events", headers=bearer(key))
    assert answer.status_code == 200
    return [e["id"] for e in answer.json["data"]]


def _count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_events_past_the_retention_go_with_their_deliveries_and_attempts(app, client, feed, receiver, runner):
    add_endpoint(app, receiver.url)
    link = a_link(app)
    old, recent, just_inside = (record_event(app, link) for _ in range(3))
    assert wait_until(lambda: [d.state for d in deliveries(app)] == ["delivered"] * 3)  # by the runner
    assert _count(app, DeliveryAttempt) == 3
    _age(app, old, 31)
    _age(app, just_inside, 29)

    assert wait_until(lambda: old not in feed())  # the runner's periodic purge
    assert feed() == [recent, just_inside]
    assert _count(app, WebhookDelivery) == 2 and _count(app, DeliveryAttempt) == 2

    # A consumer whose cursor was purged is told why, and how to go on.
    key = make_key(app, "lagging", scopes=("events:read",))
    gone = client.get("/api/v1/events", query_string={"after": old}, headers=bearer(key))
    assert gone.status_code == 400 and gone.json["error"]["code"] == "unknown_event"
    assert "kept for 30 days" in gone.json["error"]["message"]


def test_an_old_event_whose_delivery_is_still_retried_is_kept_until_it_ends(app, client, feed, receiver):
    add_endpoint(app, receiver.url)
    event_id = record_event(app, a_link(app))
    receiver.mode = "500"
    dispatch_now(app)
    [pending] = deliveries(app)
    assert pending.state == "pending"
    _age(app, event_id, 45)  # e.g. a retry window configured longer than the retention

    with app.app_context():
        assert events.purge_expired() == 0
    assert feed() == [event_id] and _count(app, DeliveryAttempt) == 1

    with app.app_context():  # its retry window closes: given up, so it can go
        db.session.execute(update(WebhookDelivery).values(expires_at=utcnow() - dt.timedelta(seconds=1),
                                                          next_attempt_at=utcnow()))
        db.session.commit()
    dispatch_now(app)
    assert [d.state for d in deliveries(app)] == ["failed"]
    with app.app_context():
        assert events.purge_expired() == 1
    assert feed() == [] and _count(app, WebhookDelivery) == 0 and _count(app, DeliveryAttempt) == 0


def test_the_purge_works_in_batches_and_zero_days_keeps_everything(app, feed):
    link = a_link(app)
    ids = [record_event(app, link) for _ in range(7)]
    for public_id in ids:
        _age(app, public_id, 400)
    app.config["EVENT_RETENTION_DAYS"] = 0
    with app.app_context():
        assert events.purge_expired(batch=3) == 0
    assert feed() == ids

    app.config["EVENT_RETENTION_DAYS"] = 30
    with app.app_context():
        assert events.purge_expired(batch=3) == 7  # batches of 3, 3 and 1, each its own transaction
    assert feed() == []
