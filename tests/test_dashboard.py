"""The operators' dashboard, accounts and roles."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select

from integration.extensions import db
from integration.models import AuditEvent, StoreLink, User
from integration.sandbox.state import Token, random_string

from .conftest import PASSWORD, csrf_from


def login(client, email="owner@example.com", password=PASSWORD):
    page = client.get("/auth/login").get_data(as_text=True)
    return client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": password})


def post(client, url, page_url, **data):
    page = client.get(page_url).get_data(as_text=True)
    return client.post(url, data={"csrf_token": csrf_from(page), **data})


def add_links(app, n, owner_id=None, status="linked"):
    with app.app_context():
        for i in range(n):
            db.session.add(StoreLink(consumer_key=f"{i:032d}", consumer_secret="s" * 32,
                                     base_url=f"https://shop{i}.example.com/", store_host=f"shop{i}.example.com",
                                     status=status, owner_id=owner_id))
        db.session.commit()


def test_dashboard_requires_login(client):
    response = client.get("/")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_members_see_their_stores_admins_see_all(app, client, user, admin):
    add_links(app, 3, owner_id=user)
    with app.app_context():
        db.session.add(StoreLink(consumer_key="x" * 32, consumer_secret="s" * 32, base_url="https://other.example/",
                                 store_host="other.example", status="pending"))
        db.session.commit()
        other_id = StoreLink.by_consumer_key("x" * 32).id
    login(client)
    page = client.get("/").get_data(as_text=True)
    assert page.count("https://shop") == 3 and "other.example" not in page
    assert client.get(f"/stores/{other_id}").status_code == 404
    client.post("/auth/logout", data={"csrf_token": csrf_from(page)})
    login(client, "admin@example.com")
    page = client.get("/").get_data(as_text=True)
    assert page.count("https://shop") == 3 and "1 callback nobody has claimed" in page
    assert "other.example" in client.get("/?status=pending").get_data(as_text=True)


def test_search_status_filter_and_pagination(app, client, admin):
    add_links(app, 120)
    with app.app_context():
        StoreLink.by_consumer_key(f"{6:032d}").status = "failed"
        db.session.commit()
    login(client, "admin@example.com")
    first = client.get("/").get_data(as_text=True)
    assert "page 1 of 3" in first and first.count('class="status status-') == 50
    third = client.get("/?page=3").get_data(as_text=True)
    assert third.count('class="status status-') == 20
    failed = client.get("/?status=failed").get_data(as_text=True)
    assert failed.count('class="status status-failed"') == 1 and "shop6.example.com" in failed
    found = client.get("/?q=shop11").get_data(as_text=True)
    assert "shop11.example.com" in found and "shop110.example.com" in found and "shop12." not in found
    assert "No stores match these filters" in client.get("/?q=%25nothing%25").get_data(as_text=True)


def test_store_page_test_connection_and_unlink(app, client, linked, sandbox):
    link_id, integration = linked
    login(client)
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "Activations" in page and "exchange.succeeded" in page and "callback.received" in page
    ok = post(client, f"/stores/{link_id}/test", f"/stores/{link_id}")
    assert ok.status_code == 302
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "Connection works: Magento/2.4 (Community)" in page
    sandbox.state.integrations.pop(integration.id)
    post(client, f"/stores/{link_id}/test", f"/stores/{link_id}")
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "Test failed" in page and "status-revoked" in page
    assert post(client, f"/stores/{link_id}/unlink", f"/stores/{link_id}").status_code == 302
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        assert not link.has_token and len(link.activations) == 1
        actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.store_link_id == link_id)).all()
        assert {"store.tested", "store.revoked", "store.unlinked"} <= set(actions)


def test_api_console_for_admins(app, client, linked, admin):
    link_id, _ = linked
    login(client, "admin@example.com")
    url = f"/stores/{link_id}/console"
    got = post(client, url, f"/stores/{link_id}", method="GET", path="products", store_code="default",
               params="searchCriteria[pageSize]=2\nsearchCriteria[currentPage]=1", body="")
    page = got.get_data(as_text=True)
    assert got.status_code == 200 and "HTTP 200" in page and "&#34;total_count&#34;: 60" in page
    unconfirmed = post(client, url, f"/stores/{link_id}", method="POST", path="products", store_code="default",
                       body='{"product": {"sku": "C-1"}}')
    assert unconfirmed.status_code == 400 and "Tick this box" in unconfirmed.get_data(as_text=True)
    confirmed = post(client, url, f"/stores/{link_id}", method="POST", path="products", store_code="default",
                     body='{"product": {"sku": "C-1", "name": "secret body"}}', confirm="y")
    assert "&#34;sku&#34;: &#34;C-1&#34;" in confirmed.get_data(as_text=True)
    missing = post(client, url, f"/stores/{link_id}", method="GET", path="products/NOPE", store_code="default")
    assert "HTTP 404" in missing.get_data(as_text=True) and "doesn&#39;t exist" in missing.get_data(as_text=True)
    bad_json = post(client, url, f"/stores/{link_id}", method="PUT", path="products/C-1", store_code="default",
                    body="{nope", confirm="y")
    assert bad_json.status_code == 400 and "not JSON" in bad_json.get_data(as_text=True)
    with app.app_context():
        details = db.session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "console.call")).all()
    assert details == ["GET products: ok", "POST products: ok",
                       "GET products/NOPE: failed: The product that was requested doesn't exist. Verify the product "
                       "and try again."]
    assert not any("secret body" in d for d in details)


def test_the_signature_profile_is_not_known_until_a_request_tells_the_profiles_apart(app, client, linked, admin):
    link_id, _ = linked
    login(client, "admin@example.com")

    def shown() -> tuple[bool, bool]:
        listed = "<td>not known yet</td>" in client.get("/").get_data(as_text=True)
        details = "Signature profile</dt><dd>not known yet" in client.get(f"/stores/{link_id}").get_data(as_text=True)
        return listed, details

    assert shown() == (True, True)  # the token exchange signs alike under every profile
    post(client, f"/stores/{link_id}/test", f"/stores/{link_id}")
    assert shown() == (True, True)  # so does the test call
    # [2] before [10] sets 2.4.8+ apart, a space in a plain value 2.4.4-2.4.7 from patch-37278.
    params = "q=a b\n" + "\n".join(f"searchCriteria[filter_groups][0][filters][{i}][field]=sku" for i in (2, 10))
    post(client, f"/stores/{link_id}/console", f"/stores/{link_id}", method="GET", path="products",
         store_code="default", params=params)
    assert shown() == (False, False)
    with app.app_context():
        assert db.session.get(StoreLink, link_id).signature_profile == "2.4.8+"


def test_api_console_refuses_dot_segments(app, client, linked, admin, sandbox):
    link_id, _ = linked
    login(client, "admin@example.com")
    for path in ("../../../../x", "products/%2e%2E", "products/..%2Fx"):
        response = post(client, f"/stores/{link_id}/console", f"/stores/{link_id}", method="DELETE", path=path,
                        store_code="default", confirm="y")
        assert response.status_code == 400 and "path segment is not allowed" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(select(AuditEvent).where(AuditEvent.action == "console.call")).all() == []
    assert len(sandbox.state.products) == 60


def test_api_console_is_admin_only(client, linked):
    link_id, _ = linked
    login(client)
    assert "API console" not in client.get(f"/stores/{link_id}").get_data(as_text=True)
    response = post(client, f"/stores/{link_id}/console", f"/stores/{link_id}", method="GET", path="products",
                    store_code="default")
    assert response.status_code == 403


def test_manual_link_form_tests_before_saving(app, client, sandbox, user):
    integration = sandbox.state.add_integration("Manual", "", "")
    integration.token = Token("access", random_string(), random_string(), "")
    integration.status = "Active"
    login(client)
    fields = {"base_url": sandbox.url, "consumer_key": integration.consumer_key,
              "consumer_secret": integration.consumer_secret, "access_token": integration.token.token,
              "access_token_secret": "z" * 32}
    refused = post(client, "/stores/new", "/stores/new", **fields)
    assert refused.status_code == 400 and "signature is invalid" in refused.get_data(as_text=True)
    assert integration.consumer_secret not in refused.get_data(as_text=True)
    short = post(client, "/stores/new", "/stores/new", **{**fields, "consumer_key": "short"})
    assert short.status_code == 400 and "32 letters or digits" in short.get_data(as_text=True)
    with app.app_context():
        assert db.session.query(StoreLink).count() == 0
    fields["access_token_secret"] = integration.token.secret
    linked = post(client, "/stores/new", "/stores/new", **fields)
    assert linked.status_code == 302
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.owner_id == user and link.status == "linked"


def test_accounts_admin_creates_disables_and_resets(app, client, admin, user):
    login(client, "admin@example.com")
    created = post(client, "/accounts/", "/accounts/", email="New@Example.com", password="a long password",
                   role="member")
    assert created.status_code == 302
    dup = post(client, "/accounts/", "/accounts/", email="new@example.com", password="a long password", role="member")
    assert dup.status_code == 400 and "already exists" in dup.get_data(as_text=True)
    weak = post(client, "/accounts/", "/accounts/", email="weak@example.com", password="short", role="member")
    assert weak.status_code == 400 and "at least 10" in weak.get_data(as_text=True)
    assert post(client, f"/accounts/{user}/toggle", "/accounts/").status_code == 302
    assert post(client, f"/accounts/{admin}/toggle", "/accounts/").status_code == 302  # refused: own account
    assert post(client, f"/accounts/{user}/password", "/accounts/", password="brand new password").status_code == 302
    with app.app_context():
        owner = db.session.get(User, user)
        assert not owner.active and owner.check_password("brand new password")
        assert db.session.get(User, admin).active
    other = app.test_client()
    assert login(other, "owner@example.com", "brand new password").status_code == 401  # disabled


def test_accounts_are_admin_only(client, user):
    login(client)
    assert client.get("/accounts/").status_code == 403
    assert client.get("/audit").status_code == 403


def test_admin_audit_page_lists_logins_and_failures(client, admin):
    login(client, "admin@example.com", "wrong password")
    login(client, "admin@example.com")
    page = client.get("/audit").get_data(as_text=True)
    assert "login.failed" in page and "login" in page and PASSWORD not in page


@pytest.mark.parametrize("enabled", [False, True])
def test_self_registration_in_the_identity_popup(app, app_config, sandbox, enabled):
    from integration import create_app
    from integration.sandbox.oauth_provider import new_verifier

    app = create_app({**app_config, "SELF_REGISTRATION": enabled})
    client = app.test_client()
    integration = sandbox.state.add_integration("New merchant", "x", "y")
    client.post("/magento/callback", data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": sandbox.url + "/", "oauth_verifier": new_verifier(integration).verifier})
    page = client.get(f"/magento/identity?oauth_consumer_key={integration.consumer_key}").get_data(as_text=True)
    assert ("Create account and link store" in page) is enabled
    response = client.post("/magento/identity/register", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "merchant@example.com", "password": "merchant password", "confirm": "merchant password"})
    if not enabled:
        assert response.status_code == 404
        return
    assert response.status_code == 200 and "has one now" in response.get_data(as_text=True)
    response = client.post("/magento/identity", data={
        "csrf_token": csrf_from(page), "oauth_consumer_key": integration.consumer_key, "success_call_back": "",
        "email": "merchant@example.com", "password": "merchant password"})
    assert response.status_code == 200 and "Store linked" in response.get_data(as_text=True)
    with app.app_context():
        link = StoreLink.by_consumer_key(integration.consumer_key)
        assert link.owner.email == "merchant@example.com"


def test_error_pages_are_html_for_browsers_and_json_for_clients(client):
    html = client.get("/nope")
    assert html.status_code == 404 and "text/html" in html.content_type and "Not Found" in html.get_data(as_text=True)
    js = client.get("/nope", headers={"Accept": "application/json"})
    assert js.status_code == 404 and js.get_json() == {"error": "Not Found", "status": 404,
                                                       "message": js.get_json()["message"]}
    assert client.put("/magento/callback").status_code == 405
    assert client.post("/auth/login", data={}).status_code == 400


def test_unexpected_errors_are_a_500_page_that_says_nothing_inside(app_config, caplog):
    """The page says nothing inside; the log keeps the traceback for the operator, secrets masked."""
    from integration import create_app

    app = create_app(app_config)

    @app.get("/boom")
    def boom():
        raise RuntimeError("internal detail oauth_token_secret=abc")

    client = app.test_client()
    html = client.get("/boom")
    assert html.status_code == 500 and "Internal Server Error" in html.get_data(as_text=True)
    assert "internal detail" not in html.get_data(as_text=True)
    js = client.get("/boom", headers={"Accept": "application/json"})
    assert js.status_code == 500 and js.get_json()["status"] == 500
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert logged and "RuntimeError: internal detail" in caplog.text
    assert "oauth_token_secret=[redacted]" in caplog.text and "oauth_token_secret=abc" not in caplog.text
    assert client.get("/auth/login", headers={"Accept": "application/json"}).status_code == 200
    assert client.get("/stores/1").status_code == 302  # 403/404 pages are behind login


def test_a_store_list_page_is_one_query_whatever_the_number_of_links(app, client, admin, user):
    from sqlalchemy import event

    add_links(app, 120, owner_id=user)
    login(client, "admin@example.com")
    statements = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        page = client.get("/?page=2").get_data(as_text=True)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert "page 2 of 3" in page and page.count("owner@example.com") == 50
    assert len([s for s in statements if "store_links" in s]) == 1
