"""The audit of API calls written in batches (the default, INTEGRATION_API_AUDIT_FLUSH_SECONDS=1):
every call has its row within the flush interval, the rest go in when the server stops, and a
row whose store was deleted meanwhile keeps its text."""

from __future__ import annotations

import logging
import time

import pytest
import requests
from sqlalchemy import delete, select

from integration import create_app
from integration.apikeys import usage
from integration.extensions import db
from integration.models import ApiKey, AuditEvent, StoreLink

from .apikit import bearer, make_key
from .servers import Gunicorn
from .test_workers import env_for


@pytest.fixture
def batched(app, app_config):
    batched = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 1})
    yield batched
    usage.flush(batched)  # nothing of this test's left to land in the next one's tables


def api_calls(app) -> list[tuple[str, int | None]]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(select(AuditEvent.detail, AuditEvent.store_link_id)
                                                         .where(AuditEvent.action == "api.call").order_by(AuditEvent.id))]


def test_every_call_is_audited_within_the_flush_interval(app, batched, linked):
    link_id, _ = linked
    key = make_key(app)
    api = batched.test_client()
    prefix = key[:16]
    paths = [f"/api/v1/stores/{link_id}/rest/default/V1/products"] * 5 + ["/api/v1/stores/999999/rest/default/V1/x"]
    statuses = [api.get(path, headers=bearer(key)).status_code for path in paths]
    assert statuses == [200] * 5 + [404]
    started = time.monotonic()
    while len(api_calls(app)) < len(paths):
        assert time.monotonic() - started < 2.5, f"only {len(api_calls(app))} of {len(paths)} rows after 2.5 s"
        time.sleep(0.1)
    assert api_calls(app) == [(f"GET {path} → {status} (key {prefix})", link_id if status == 200 else None)
                              for path, status in zip(paths, statuses)]
    with app.app_context():
        row = db.session.scalar(select(ApiKey))
        assert row.last_used_at is not None and row.last_used_addr == "127.0.0.1"


def test_control_characters_in_a_called_path_never_reach_the_audit_row(app, batched):
    # The path is the caller's: an escape sequence or a right-to-left override in it would drive the
    # terminal of whoever reads the audit table, or make the row read as another path.
    key = make_key(app)
    api = batched.test_client()
    assert api.get("/api/v1/stores/999999/rest/default/V1/%1B%5B2J%E2%80%AEnimda", headers=bearer(key)).status_code \
        in (400, 404)
    started = time.monotonic()
    while not api_calls(app):
        assert time.monotonic() - started < 2.5, "no audit row after 2.5 s"
        time.sleep(0.1)
    [(detail, _)] = api_calls(app)
    assert "\x1b" not in detail and "\u202e" not in detail
    assert detail.startswith("GET /api/v1/stores/999999/rest/default/V1/\ufffd[2J\ufffdnimda")


def test_a_row_whose_store_was_deleted_before_the_batch_keeps_its_text(app, app_config, linked):
    link_id, _ = linked
    key = make_key(app)
    slow = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 60})  # the row waits in the buffer
    api = slow.test_client()
    assert api.get(f"/api/v1/stores/{link_id}/rest/default/V1/products", headers=bearer(key)).status_code == 200
    assert api_calls(app) == []
    with app.app_context():
        db.session.execute(delete(StoreLink).where(StoreLink.id == link_id))
        db.session.commit()
    assert usage.flush(slow) == 1
    assert api_calls(app) == [(f"GET /api/v1/stores/{link_id}/rest/default/V1/products → 200 (key {key[:16]})",
                               None)]


def test_a_row_the_database_cannot_hold_does_not_keep_the_others_out(app, app_config, linked, caplog):
    """One row with a value its column cannot hold (PostgreSQL refuses it; SQLite stores it) is dropped
    and said in the log; the rows beside it go in, and the batches after it too."""
    from integration.apikeys import service

    link_id, _ = linked
    key = make_key(app)
    slow = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 60})  # the rows wait in the buffer
    api = slow.test_client()
    path = f"/api/v1/stores/{link_id}/rest/default/V1/products"
    assert api.get(path, headers=bearer(key)).status_code == 200
    with slow.app_context():
        key_id = db.session.scalar(select(ApiKey.id).where(ApiKey.prefix == key[:16]))
    with slow.test_request_context():
        service.record_use(key_id, key[:16], None, method="GET", path="/odd", status=200, remote_addr="x" * 100)
    assert api.get(path, headers=bearer(key)).status_code == 200
    usage.flush(slow)
    good = (f"GET {path} → 200 (key {key[:16]})", link_id)
    written = api_calls(app)
    assert [row for row in written if row == good] == [good, good]
    assert len(written) in (2, 3)  # the odd row dropped where the database refuses it
    if len(written) == 2:
        assert "dropped 1 API audit row(s) the database refused" in caplog.text
    assert api.get(path, headers=bearer(key)).status_code == 200
    assert usage.flush(slow) == 1 and api_calls(app)[-1] == good


def test_only_the_references_that_are_gone_are_dropped_from_a_batch(app, app_config, linked, sandbox):
    """One store of the batch deleted meanwhile: its row loses the reference, the other store's row and
    both rows' account keep theirs."""
    from integration.models import User

    from .conftest import PASSWORD, csrf_from
    from .test_identity import activate

    kept, _ = linked
    client = app.test_client()
    other = activate(client, sandbox, name="Other")
    page = client.get(f"/magento/identity?oauth_consumer_key={other.consumer_key}").get_data(as_text=True)
    assert client.post("/magento/identity", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": other.consumer_key, "success_call_back": "",
        "email": "owner@example.com", "password": PASSWORD}).status_code == 200
    with app.app_context():
        gone = StoreLink.by_consumer_key(other.consumer_key).id
        owner = User.by_email("owner@example.com").id
    key = make_key(app, owner="owner@example.com")
    slow = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 60})
    api = slow.test_client()
    for link_id in (kept, gone):
        assert api.get(f"/api/v1/stores/{link_id}/rest/default/V1/products", headers=bearer(key)).status_code == 200
    with app.app_context():
        db.session.execute(delete(StoreLink).where(StoreLink.id == gone))
        db.session.commit()
    assert usage.flush(slow) == 2
    with app.app_context():
        rows = db.session.execute(select(AuditEvent.store_link_id, AuditEvent.user_id)
                                  .where(AuditEvent.action == "api.call").order_by(AuditEvent.id)).all()
    assert [tuple(row) for row in rows] == [(kept, owner), (None, owner)]


def test_rows_still_waiting_are_written_when_the_server_stops(app, app_config, linked):
    link_id, _ = linked
    key = make_key(app)
    # A flush interval far longer than the test: only the stop can write them.
    server = Gunicorn(env_for(app_config, INTEGRATION_API_AUDIT_FLUSH_SECONDS="60"), workers=2, threads=4)
    try:
        url = f"{server.url}/api/v1/stores/{link_id}/rest/default/V1/products"
        with requests.Session() as session:
            statuses = [session.get(url, headers=bearer(key), timeout=10).status_code for _ in range(10)]
        assert statuses == [200] * 10
        assert len(api_calls(app)) < 10  # still in the workers' buffers
    finally:
        log = server.stop()  # SIGTERM: gunicorn's graceful stop
    assert len(api_calls(app)) == 10, log


def _rename_audit_table(app, old: str, new: str) -> None:
    """The database refusing the rows (as when it is down), and back."""
    from sqlalchemy import text

    with app.app_context():
        db.session.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
        db.session.commit()


def test_rows_wait_while_the_database_refuses_them_and_go_in_in_order_once_it_is_back(
        app, app_config, linked, monkeypatch, caplog):
    link_id, _ = linked
    key = make_key(app)
    monkeypatch.setattr(usage, "MAX_WAITING", 3)
    slow = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 60})
    api = slow.test_client()
    paths = [f"/api/v1/stores/{link_id}/rest/default/V1/products", "/api/v1/stores/999999/rest/default/V1/x"] * 3
    statuses = [api.get(path, headers=bearer(key)).status_code for path in paths[:3]]
    _rename_audit_table(app, "audit_events", "audit_events_away")
    try:
        with pytest.raises(Exception):
            usage.flush(slow)
        assert not [r for r in caplog.records if "dropped" in r.getMessage()]  # three waiting: all kept
        statuses += [api.get(path, headers=bearer(key)).status_code for path in paths[3:]]
        with pytest.raises(Exception):
            usage.flush(slow)  # six waiting, three kept: the three oldest go, and the log says so
    finally:
        _rename_audit_table(app, "audit_events_away", "audit_events")
    assert ("integration.api", logging.ERROR, "dropped 3 API audit rows: the database refused them for too long"
            ) in caplog.record_tuples  # under the API's logger, where operators look for it
    assert usage.flush(slow) == 3
    assert api_calls(app) == [(f"GET {path} → {status} (key {key[:16]})", link_id if status == 200 else None)
                              for path, status in list(zip(paths, statuses))[3:]]
    with app.app_context():
        row = db.session.scalar(select(ApiKey))
        assert row.last_used_at is not None and row.last_used_addr == "127.0.0.1"


def test_rows_the_database_refuses_at_exit_are_logged_not_raised(app, app_config, linked, caplog):
    link_id, _ = linked
    key = make_key(app)
    slow = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 60})
    assert slow.test_client().get(f"/api/v1/stores/{link_id}/rest/default/V1/products",
                                  headers=bearer(key)).status_code == 200
    _rename_audit_table(app, "audit_events", "audit_events_away")
    try:
        usage.flush_all()  # what the process runs at exit (and gunicorn's worker_exit)
    finally:
        _rename_audit_table(app, "audit_events_away", "audit_events")
    assert ("integration.api", logging.ERROR, "could not write API audit rows at exit") in caplog.record_tuples
    assert usage.flush(slow) == 1  # still waiting, had the process gone on


def test_without_a_flush_interval_each_call_writes_its_row_within_the_request(app, app_config, linked):
    link_id, _ = linked
    key = make_key(app)
    api = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 0}).test_client()
    path = f"/api/v1/stores/{link_id}/rest/default/V1/products"
    assert api.get(path, headers=bearer(key)).status_code == 200
    assert api_calls(app) == [(f"GET {path} → 200 (key {key[:16]})", link_id)]
    with app.app_context():
        assert db.session.scalar(select(ApiKey)).last_used_at is not None


def test_a_full_batch_is_written_without_waiting_for_the_interval(app, app_config, linked, monkeypatch):
    link_id, _ = linked
    key = make_key(app)
    monkeypatch.setattr(usage, "BATCH", 3)
    slow = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 60})
    api = slow.test_client()
    for _ in range(3):
        assert api.get(f"/api/v1/stores/{link_id}/rest/default/V1/products", headers=bearer(key)).status_code == 200
    started = time.monotonic()
    while len(api_calls(app)) < 3:
        assert time.monotonic() - started < 5, f"{len(api_calls(app))} of 3 rows after 5 s"
        time.sleep(0.05)
    # The next row waits for the interval (or the next full batch) again.
    assert api.get(f"/api/v1/stores/{link_id}/rest/default/V1/products", headers=bearer(key)).status_code == 200
    time.sleep(0.5)
    assert len(api_calls(app)) == 3
    assert usage.flush(slow) == 1


def test_the_writer_stops_when_idle_and_the_next_call_starts_it_again(app, app_config, linked, monkeypatch):
    import threading

    link_id, _ = linked
    key = make_key(app)
    monkeypatch.setattr(usage, "IDLE_TICKS", 2)
    quick = create_app({**app_config, "API_AUDIT_FLUSH_SECONDS": 0.05})
    api = quick.test_client()
    others = set(threading.enumerate())  # earlier tests' apps may still have theirs
    writers = lambda: [t for t in threading.enumerate() if t.name == "api-audit" and t not in others]  # noqa: E731
    for n in (1, 2):
        assert api.get(f"/api/v1/stores/{link_id}/rest/default/V1/products", headers=bearer(key)).status_code == 200
        started = time.monotonic()
        while len(api_calls(app)) < n or writers():
            assert time.monotonic() - started < 5, f"{len(api_calls(app))} of {n} rows, {len(writers())} writers"
            time.sleep(0.05)


def test_a_call_is_answered_while_the_database_refuses_its_audit_row(app, batched, linked, caplog):
    """Batched (the default 1 s), the request never waits for the audit: the writer says it will retry,
    and the row goes in once the database takes it again."""
    link_id, _ = linked
    key = make_key(app)
    path = f"/api/v1/stores/{link_id}/rest/default/V1/products"
    retrying = ("integration.api", logging.ERROR, "could not write API audit rows; retrying")
    _rename_audit_table(app, "audit_events", "audit_events_away")
    try:
        assert batched.test_client().get(path, headers=bearer(key)).status_code == 200
        started = time.monotonic()
        while retrying not in caplog.record_tuples:
            assert time.monotonic() - started < 3, caplog.record_tuples
            time.sleep(0.1)
    finally:
        _rename_audit_table(app, "audit_events_away", "audit_events")
    started = time.monotonic()
    while api_calls(app) != [(f"GET {path} → 200 (key {key[:16]})", link_id)]:
        assert time.monotonic() - started < 3, api_calls(app)
        time.sleep(0.1)
