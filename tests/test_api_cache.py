"""The service API's per-process caches of keys and store links: changes made in this process
apply at once, changes made by another process (another gunicorn worker, the CLI) within
INTEGRATION_API_CACHE_SECONDS, and a store reauthorized elsewhere is called with its new tokens
rather than marked revoked. "Another process" is a second app on the same database: its own
caches, its own sessions."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from integration import create_app, stores
from integration.apikeys import service as keys
from integration.extensions import db
from integration.models import AuditEvent, StoreLink
from integration.sandbox.state import Token, random_string

from .apikit import bearer, make_key

BOUND = 1.0  # seconds: INTEGRATION_API_CACHE_SECONDS of the worker under test


@pytest.fixture
def worker(app, app_config):
    """The worker that serves the API calls, caching for BOUND seconds (``app`` is the other one)."""
    return create_app({**app_config, "API_CACHE_SECONDS": BOUND})


def proxied(link_id: int) -> str:
    return f"/api/v1/stores/{link_id}/rest/default/V1/products"


def status_until(client, url: str, key: str, wanted: int, seconds: float) -> float:
    """Call until the answer is ``wanted``; how long it took (fails past ``seconds``)."""
    started = time.monotonic()
    while (status := client.get(url, headers=bearer(key)).status_code) != wanted:
        assert time.monotonic() - started < seconds, f"still {status} after {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def quiet(app_config):
    """A worker whose audit writer stays idle through the test: its last-use UPDATEs would empty caches too."""
    from integration.apikeys import usage

    quiet = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 60})
    yield quiet
    usage.flush(quiet)  # nothing of this test's left to land in the next one's tables


def test_a_key_revoked_by_another_process_is_refused_within_the_bound(app, worker, user):
    key = make_key(app)
    api = worker.test_client()
    assert api.get("/api/v1/stores", headers=bearer(key)).status_code == 200
    with app.app_context():
        keys.revoke(keys.by_name("svc"))
    status_until(api, "/api/v1/stores", key, 401, BOUND + 0.5)
    assert api.get("/api/v1/stores", headers=bearer(key)).json["error"]["code"] == "key_revoked"


def test_a_key_revoked_in_the_same_process_is_refused_at_once(app, user):
    key = make_key(app)  # the app caches for its default 5 s
    api = app.test_client()
    assert api.get("/api/v1/stores", headers=bearer(key)).status_code == 200
    with app.app_context():
        keys.revoke(keys.by_name("svc"))
    assert api.get("/api/v1/stores", headers=bearer(key)).status_code == 401


def test_an_account_disabled_in_the_same_process_stops_its_keys_at_once(app, linked):
    link_id, _ = linked
    key = make_key(app, owner="owner@example.com")
    api = app.test_client()
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200
    with app.app_context():
        owner = db.session.scalar(select(StoreLink).where(StoreLink.id == link_id)).owner
        owner.active = False
        db.session.commit()
    refused = api.get(proxied(link_id), headers=bearer(key))
    assert refused.status_code == 401 and refused.json["error"]["code"] == "key_owner_disabled"


def test_a_store_unlinked_in_the_same_process_is_refused_at_once(app, linked):
    link_id, _ = linked
    key = make_key(app)
    api = app.test_client()
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200
    with app.app_context():
        stores.unlink(db.session.get(StoreLink, link_id))
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 409


def test_a_store_unlinked_by_another_process_is_refused_within_the_bound(app, worker, linked):
    link_id, _ = linked
    key = make_key(app)
    api = worker.test_client()
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200
    with app.app_context():
        stores.unlink(db.session.get(StoreLink, link_id))
    status_until(api, proxied(link_id), key, 409, BOUND + 0.5)


def test_a_store_reauthorized_by_another_process_is_called_with_its_new_tokens(app, worker, linked, sandbox):
    link_id, integration = linked
    key = make_key(app)
    api = worker.test_client()
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200  # cached, old tokens
    # Reauthorize in Magento: the old access token is gone, another worker stores the new one.
    integration.token = Token("access", random_string(), random_string(), "")
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        link.access_token, link.access_token_secret = integration.token.token, integration.token.secret
        db.session.commit()
    answer = api.get(proxied(link_id), headers=bearer(key))
    assert answer.status_code == 200 and answer.headers["X-Companion-Store-Status"] == "linked"
    assert len(answer.json["items"]) > 0
    with app.app_context():
        assert db.session.get(StoreLink, link_id).status == StoreLink.LINKED
        assert db.session.scalar(select(AuditEvent.id).where(AuditEvent.action == "store.revoked")) is None


def test_a_store_deleted_in_magento_is_still_marked_revoked_from_the_cache(app, worker, linked, sandbox):
    link_id, integration = linked
    key = make_key(app)
    api = worker.test_client()
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200  # cached
    sandbox.state.integrations.pop(integration.id)
    refused = api.get(proxied(link_id), headers=bearer(key))
    assert refused.status_code == 503 and refused.headers["X-Companion-Store-Status"] == "revoked"
    with app.app_context():
        assert db.session.get(StoreLink, link_id).status == StoreLink.REVOKED
    # The worker's own change dropped its cache entry: no call goes out on the revoked link.
    again = api.get(proxied(link_id), headers=bearer(key))
    assert again.status_code == 503 and again.json["error"]["code"] == "store_token_revoked"


def test_someone_elses_store_stays_absent_when_cached(app, linked):
    link_id, _ = linked
    owner_key = make_key(app, "own", owner="owner@example.com")
    from .apikit import account

    account(app, "other@example.com")
    other_key = make_key(app, "other", owner="other@example.com")
    api = app.test_client()
    assert api.get(proxied(link_id), headers=bearer(owner_key)).status_code == 200  # the link is cached now
    assert api.get(proxied(link_id), headers=bearer(other_key)).status_code == 404


def test_an_admins_key_uses_a_members_store_when_cached(app, linked):
    """Admins see every store: an admin's key reaches a store a member linked, cached or not."""
    link_id, _ = linked
    from .apikit import account

    account(app, "boss@example.com", role="admin")
    admin_key = make_key(app, "boss", owner="boss@example.com")
    member_key = make_key(app, "own", owner="owner@example.com")
    api = app.test_client()
    assert api.get(proxied(link_id), headers=bearer(member_key)).status_code == 200  # the link is cached now
    assert api.get(proxied(link_id), headers=bearer(admin_key)).status_code == 200
    assert api.get(proxied(link_id), headers=bearer(admin_key)).status_code == 200  # and the key too


def test_a_cache_flooded_with_distinct_keys_starts_again_empty(monkeypatch):
    """Bounded memory: a flood of distinct keys (or store ids) empties the cache rather than growing it."""
    from integration.api import cache

    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    entries = cache.TimedCache(60)
    for n in range(3):
        entries.put(n, f"value {n}")
    assert [entries.get(n) for n in range(3)] == ["value 0", "value 1", "value 2"]
    entries.put(3, "value 3")  # one more than it holds: only the newest is kept
    assert [entries.get(n) for n in range(4)] == [None, None, None, "value 3"]


def test_a_store_error_a_bulk_update_notes_in_this_process_is_cleared_by_the_next_good_call(app, quiet, linked):
    """The feed sync notes a store's error with an UPDATE statement (not through the session's objects): the
    next API call that works must still see it, and clear it, as the store's health then shows."""
    from sqlalchemy import update

    link_id, _ = linked
    key = make_key(app)
    api = quiet.test_client()
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200
    with quiet.app_context():
        db.session.execute(update(StoreLink).where(StoreLink.id == link_id).values(last_error="feed sync: timed out")
                           .execution_options(synchronize_session=False))
        db.session.commit()
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200
    health = {s["id"]: s["last_error"] for s in api.get("/api/v1/stores", headers=bearer(key)).json["data"]}
    assert health[link_id] is None


def test_statements_that_change_keys_accounts_or_stores_in_bulk_apply_at_once(app, quiet, linked):
    """A change made with an UPDATE or DELETE statement (a script, a future bulk action) rather than
    through the session's objects is seen by the next call of this process too."""
    from sqlalchemy import delete, update

    from integration.models import ApiKey, User, utcnow

    link_id, _ = linked
    api = quiet.test_client()

    def bulk(statement):
        with quiet.app_context():
            db.session.execute(statement.execution_options(synchronize_session=False))
            db.session.commit()

    key = make_key(app, name="revoked")
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200
    bulk(update(ApiKey).where(ApiKey.name == "revoked").values(revoked_at=utcnow()))
    assert api.get(proxied(link_id), headers=bearer(key)).json["error"]["code"] == "key_revoked"

    key = make_key(app, name="owned", owner="owner@example.com")
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200
    bulk(update(User).where(User.email == "owner@example.com").values(active=False))
    assert api.get(proxied(link_id), headers=bearer(key)).json["error"]["code"] == "key_owner_disabled"
    bulk(update(User).where(User.email == "owner@example.com").values(active=True))

    key = make_key(app, name="store")
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 200
    bulk(delete(StoreLink).where(StoreLink.id == link_id))
    assert api.get(proxied(link_id), headers=bearer(key)).status_code == 404
