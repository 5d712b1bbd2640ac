"""The API explorer over HTTP: admins only, the schema served from our cached copy pointing at
our own server, and *Try it* held to the console's rules (CSRF, the tick for writes, audit)."""

from __future__ import annotations

from sqlalchemy import select

from integration.extensions import db
from integration.models import AuditEvent

from .conftest import csrf_from
from .test_store_contact import cli, login

def try_it(client, link_id, method="GET", path="products", **fields):
    page = client.get(f"/stores/{link_id}/explorer").get_data(as_text=True)
    return client.post(f"/stores/{link_id}/explorer/call", data={
        "csrf_token": csrf_from(page), "method": method, "path": path, "store_code": "default", **fields})

def test_explorer_is_for_admins_and_needs_a_probe(app, linked, admin, client):
    link_id, _ = linked
    login(client, "owner@example.com")  # the store's owner, a member
    assert client.get(f"/stores/{link_id}/explorer").status_code == 403
    assert client.get(f"/stores/{link_id}/explorer/schema.json").status_code == 403
    client.post("/auth/logout", data={"csrf_token": csrf_from(client.get("/").get_data(as_text=True))})
    login(client)
    assert "No schema yet" in client.get(f"/stores/{link_id}/explorer").get_data(as_text=True)
    assert client.get(f"/stores/{link_id}/explorer/schema.json").status_code == 404
    assert cli(app, "probe", link_id).exit_code == 0
    page = client.get(f"/stores/{link_id}/explorer").get_data(as_text=True)
    assert 'id="swagger-ui"' in page and "cdn" not in page.lower()
    schema = client.get(f"/stores/{link_id}/explorer/schema.json")
    document = schema.get_json()
    assert schema.headers["Cache-Control"] == "no-store"
    # The browser is pointed at us, never at the store.
    assert document["host"] == "localhost" and document["basePath"] == f"/stores/{link_id}/explorer/rest/default"
    assert "/V1/products" in document["paths"]
    assert client.get("/stores/999/explorer").status_code == 404

def test_try_it_is_the_console(app, linked, admin, client, sandbox):
    link_id, _ = linked
    assert cli(app, "probe", link_id).exit_code == 0
    login(client)
    answer = try_it(client, link_id, params="searchCriteria[pageSize]=2")
    assert answer.status_code == 200 and [p["sku"] for p in answer.get_json()["items"]] == ["SB-00001", "SB-00002"]
    assert sandbox.state.integrations[1].token.token not in answer.get_data(as_text=True)
    refused = try_it(client, link_id, "DELETE", "products/SB-00001")
    assert refused.status_code == 400 and "Tick this box to send a DELETE" in refused.get_json()["message"]
    assert "SB-00001" in sandbox.state.products
    assert try_it(client, link_id, "DELETE", "products/SB-00001", confirm="y").status_code == 200
    assert "SB-00001" not in sandbox.state.products
    # The store's own refusal comes back with its status.
    missing = try_it(client, link_id, "GET", "products/NOPE")
    assert missing.status_code == 404 and "doesn't exist" in missing.get_json()["message"]
    assert try_it(client, link_id, "GET", "../../admin").status_code == 400  # the console's path rule
    no_csrf = client.post(f"/stores/{link_id}/explorer/call", data={"method": "GET", "path": "products",
                                                                    "store_code": "default"})
    assert no_csrf.status_code == 400
    with app.app_context():
        calls = list(db.session.scalars(select(AuditEvent.detail).where(
            AuditEvent.store_link_id == link_id, AuditEvent.action == "console.call").order_by(AuditEvent.id)))
    assert calls == ["GET products: ok", "DELETE products/SB-00001: ok",
                     "GET products/NOPE: failed: The product that was requested doesn't exist. "
                     "Verify the product and try again."]
