"""The audit of API calls written in batches (the default, INTEGRATION_API_AUDIT_FLUSH_SECONDS=1):
every call has its row within the flush interval, the rest go in when the server stops, and a
row whose store was deleted meanwhile keeps its text."""

from __future__ import annotations

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
