"""``GET /api/v1/events``: the webhook events in order after a cursor, scoped like the stores."""

from __future__ import annotations

from .apikit import account, bearer, make_key
from .test_webhooks import a_link, record_event
from integration import events

EVENTS_READ = ("events:read",)


def feed(client, key, **params):
    return client.get("/api/v1/events", query_string=params, headers=bearer(key))


def test_the_feed_pages_through_events_in_order_with_the_webhook_bodies(app, client, user):
    link = a_link(app, owner_id=user)
    ids = [record_event(app, link, events.STORE_CHECK_FAILED) for _ in range(5)]
    key = make_key(app, scopes=EVENTS_READ)

    first = feed(client, key, limit=2)
    assert first.status_code == 200 and [e["id"] for e in first.json["data"]] == ids[:2]
    assert first.json["next_after"] == ids[1]
    rest = feed(client, key, after=first.json["next_after"])
    assert [e["id"] for e in rest.json["data"]] == ids[2:]
    event = rest.json["data"][0]
    assert event["type"] == "store.check_failed" and event["store"]["id"] == link
    assert set(event["store"]) == {"id", "base_url", "status", "signature_profile", "magento_version"}

    caught_up = feed(client, key, after=ids[-1])  # nothing new: poll again with the same cursor
    assert caught_up.json == {"data": [], "next_after": ids[-1]}
    newer = record_event(app, link, events.STORE_UNLINKED)
    assert [e["id"] for e in feed(client, key, after=caught_up.json["next_after"]).json["data"]] == [newer]


def test_a_member_key_sees_only_its_stores_events(app, client, user, admin):
    mine, theirs = a_link(app, owner_id=user), a_link(app, owner_id=admin)
    ids = [record_event(app, link) for link in (mine, theirs, mine)]
    member = make_key(app, "member", scopes=EVENTS_READ, owner="owner@example.com")
    boss = make_key(app, "boss", scopes=EVENTS_READ, owner="admin@example.com")
    service = make_key(app, "service", scopes=EVENTS_READ)
    assert [e["id"] for e in feed(client, member).json["data"]] == [ids[0], ids[2]]
    assert [e["id"] for e in feed(client, member, after=ids[0]).json["data"]] == [ids[2]]
    for key in (boss, service):
        assert [e["id"] for e in feed(client, key).json["data"]] == ids


def test_an_unknown_cursor_and_bad_parameters_are_json_400s(app, client, user):
    record_event(app, a_link(app, owner_id=user))
    key = make_key(app, scopes=EVENTS_READ)
    unknown = feed(client, key, after="evt_000000000000000000000000")
    assert unknown.status_code == 400 and unknown.json["error"]["code"] == "unknown_event"
    assert "evt_000000000000000000000000" in unknown.json["error"]["message"]
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"after": "e" * 41}):
        bad = feed(client, key, **params)
        assert bad.status_code == 400 and bad.json["error"]["code"] == "invalid_request", params


def test_the_feed_needs_the_events_read_scope(app, client, user):
    account(app, "other@example.com")
    stores_only = make_key(app, scopes=("stores:read", "stores:call"))
    refused = feed(client, stores_only)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "insufficient_scope"
    assert 'scope="events:read"' in refused.headers["WWW-Authenticate"]
    assert client.get("/api/v1/events").status_code == 401
