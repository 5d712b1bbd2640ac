"""API keys: made by the CLI or an admin in the dashboard, shown once, stored as a hash, revocable."""

from __future__ import annotations

import hashlib
import re

import requests
from sqlalchemy import select, text

from integration.extensions import db
from integration.models import ApiKey, AuditEvent

from .apikit import bearer, make_key
from .test_dashboard import login, post

KEY = re.compile(r"mic_[0-9a-f]{12}_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def raw_rows(app) -> str:
    """Every column of every row of every table, as text."""
    with app.app_context(), db.engine.connect() as conn:
        return "\n".join(str(tuple(row)) for table in db.metadata.sorted_tables
                         for row in conn.execute(text(f"SELECT * FROM {table.name}")))


def test_cli_creates_a_key_shown_once_and_stored_only_as_a_hash(app, user):
    runner = app.test_cli_runner()
    created = runner.invoke(args=["apikeys", "create", "erp", "--scope", "stores:read", "--scope", "stores:call",
                                  "--owner", "owner@example.com"])
    assert created.exit_code == 0, created.output
    keys = KEY.findall(created.output)
    assert len(keys) == 1
    key = keys[0]
    secret = key[len("mic_") + 12 + 1:]
    assert len(secret) == 43  # 32 random bytes, base64url
    with app.app_context():
        row = db.session.scalar(select(ApiKey).where(ApiKey.name == "erp"))
        assert row.secret_hash == hashlib.sha256(key.encode()).hexdigest()
        assert row.scope_list == ["stores:read", "stores:call"] and row.owner.email == "owner@example.com"
    assert secret not in raw_rows(app)
    listed = runner.invoke(args=["apikeys", "list"])
    assert listed.exit_code == 0 and "erp\t" + key[:16] in listed.output and "never used" in listed.output
    assert secret not in listed.output

    # It works, then is revoked, then does not work.
    client = app.test_client()
    assert client.get("/api/v1/stores", headers=bearer(key)).status_code == 200
    revoked = runner.invoke(args=["apikeys", "revoke", "erp"])
    assert revoked.exit_code == 0 and "revoked erp" in revoked.output
    refused = client.get("/api/v1/stores", headers=bearer(key))
    assert refused.status_code == 401 and refused.json["error"]["code"] == "key_revoked"
    assert "revoked" in runner.invoke(args=["apikeys", "list"]).output


def test_cli_refuses_bad_names_scopes_owners_and_duplicates(app, user):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["apikeys", "create", "a b"]).exit_code == 1
    assert runner.invoke(args=["apikeys", "create", "x", "--scope", "stores:write"]).exit_code == 2
    assert "no account" in runner.invoke(args=["apikeys", "create", "x", "--owner", "nobody@example.com"]).output
    assert runner.invoke(args=["apikeys", "create", "x"]).exit_code == 0
    again = runner.invoke(args=["apikeys", "create", "x"])
    assert again.exit_code == 1 and "already exists" in again.output
    assert "no key named y" in runner.invoke(args=["apikeys", "revoke", "y"]).output
    runner.invoke(args=["apikeys", "revoke", "x"])
    assert "already revoked" in runner.invoke(args=["apikeys", "revoke", "x"]).output


def test_default_scope_is_read_only(app):
    created = app.test_cli_runner().invoke(args=["apikeys", "create", "reader"])
    key = KEY.findall(created.output)[0]
    client = app.test_client()
    assert client.get("/api/v1/stores", headers=bearer(key)).status_code == 200
    assert client.post("/api/v1/stores/1/check", headers=bearer(key)).status_code == 403


def test_admins_create_see_once_and_revoke_keys_in_the_dashboard(app, client, admin, user):
    login(client, "admin@example.com")
    page = client.get("/api-keys/").get_data(as_text=True)
    owner_id = re.search(r'<option value="(\d+)">owner@example.com', page).group(1)
    created = post(client, "/api-keys/", "/api-keys/", name="pim", owner=owner_id, scopes=["stores:read"])
    body = created.get_data(as_text=True)
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"
    key = KEY.findall(body)[0]
    assert "will not be shown again" in body
    # Not in the session cookie, not on the next page.
    assert key not in (created.headers.get("Set-Cookie") or "")
    again = client.get("/api-keys/").get_data(as_text=True)
    assert key not in again and key[:16] in again and "owner@example.com" in again
    assert app.test_client().get("/api/v1/stores", headers=bearer(key)).status_code == 200

    with app.app_context():
        key_id = db.session.scalar(select(ApiKey.id).where(ApiKey.name == "pim"))
    assert post(client, f"/api-keys/{key_id}/revoke", "/api-keys/").status_code == 302
    assert "revoked" in client.get("/api-keys/").get_data(as_text=True)
    assert app.test_client().get("/api/v1/stores", headers=bearer(key)).status_code == 401
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("apikey.%"))).all()
    assert actions == ["apikey.created", "apikey.revoked"]


def test_dashboard_form_errors_and_members_are_refused(app, client, admin, user):
    login(client, "admin@example.com")
    bad = post(client, "/api-keys/", "/api-keys/", name="no spaces", owner="", scopes=["stores:read"])
    assert bad.status_code == 400 and "letters, digits" in bad.get_data(as_text=True)
    login(client)  # a member now
    assert client.get("/api-keys/").status_code == 403


def test_last_use_is_written_at_most_once_a_minute_and_every_use_is_audited(app, live_app, user):
    key = make_key(app)
    assert requests.get(f"{live_app.url}/api/v1/stores", headers=bearer(key), timeout=10).status_code == 200
    with app.app_context():
        first_use = db.session.scalar(select(ApiKey.last_used_at))
    for _ in range(2):
        assert requests.get(f"{live_app.url}/api/v1/stores", headers=bearer(key), timeout=10).status_code == 200
    with app.app_context():
        row = db.session.scalar(select(ApiKey))
        assert row.last_used_at == first_use and row.last_used_addr == "127.0.0.1"
        calls = db.session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "api.call")).all()
        assert calls == [f"GET /api/v1/stores → 200 (key {row.prefix})"] * 3
        # A minute later the next use moves it forward.
        row.last_used_at = first_use.replace(year=first_use.year - 1)
        db.session.commit()
    requests.get(f"{live_app.url}/api/v1/stores", headers=bearer(key), timeout=10)
    with app.app_context():
        assert db.session.scalar(select(ApiKey.last_used_at)) > first_use
