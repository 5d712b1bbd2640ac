"""The service API over real HTTP: keys, scopes, visibility, pagination, errors, limits."""

from __future__ import annotations

import logging

import requests
from sqlalchemy import select

from integration.extensions import db
from integration.models import AuditEvent, StoreLink, User

from .apikit import account, bearer, make_key
from .test_dashboard import add_links


def get(live_app, path, key=None, **kw):
    headers = {**(bearer(key) if key else {}), **kw.pop("headers", {})}
    return requests.get(live_app.url + path, headers=headers, timeout=10, **kw)


def test_a_member_key_sees_only_that_members_stores(app, live_app, linked, user):
    link_id, _ = linked
    other = account(app, "other@example.com")
    add_links(app, 3, owner_id=other)
    member_key = make_key(app, "member", owner="owner@example.com")
    mine = get(live_app, "/api/v1/stores", member_key).json()["data"]
    assert [s["id"] for s in mine] == [link_id] and mine[0]["owner"] == "owner@example.com"
    with app.app_context():
        foreign = db.session.scalar(select(StoreLink.id).where(StoreLink.owner_id == other))
    for path in (f"/api/v1/stores/{foreign}", f"/api/v1/stores/{foreign}/rest/default/V1/products"):
        refused = get(live_app, path, member_key)
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
    assert requests.post(f"{live_app.url}/api/v1/stores/{foreign}/check", headers=bearer(member_key),
                         timeout=10).status_code == 404
    # An admin's key and a service key (no owner) see all four.
    account(app, "boss@example.com", "admin")
    for key in (make_key(app, "boss", owner="boss@example.com"), make_key(app, "service")):
        assert len(get(live_app, "/api/v1/stores", key).json()["data"]) == 4


def test_store_shape_never_has_credentials(app, live_app, linked):
    link_id, integration = linked
    key = make_key(app)
    store = get(live_app, f"/api/v1/stores/{link_id}", key)
    assert store.status_code == 200
    assert set(store.json()) == {"id", "label", "consumer_key", "base_url", "status", "owner", "signature_profile", "magento_version",
                                 "linked_at", "last_contact_at", "revoked_at", "last_error"}
    assert store.json()["status"] == "linked" and store.json()["linked_at"].endswith("Z")
    assert integration.consumer_secret not in store.text and integration.token.token not in store.text
    assert integration.consumer_key not in store.text and store.json()["consumer_key"] == (
        f"{integration.consumer_key[:4]}…{integration.consumer_key[-4:]}")


def test_cursor_pagination_and_status_filter(app, live_app, admin):
    add_links(app, 5, status="linked")
    with app.app_context():
        for i in range(5, 8):
            db.session.add(StoreLink(consumer_key=f"{i:032d}", consumer_secret="s" * 32, status="revoked",
                                     base_url=f"https://r{i}.example.com/", store_host=f"r{i}.example.com"))
        db.session.commit()
    key = make_key(app)
    seen, cursor = [], None
    while True:
        page = get(live_app, "/api/v1/stores", key, params={"limit": 3, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200
        seen += [s["id"] for s in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 8 and seen == sorted(seen)
    revoked = get(live_app, "/api/v1/stores", key, params={"status": "revoked"}).json()
    assert [s["status"] for s in revoked["data"]] == ["revoked"] * 3 and revoked["next_cursor"] is None
    for params in ({"status": "nope"}, {"limit": 0}, {"limit": 201}, {"cursor": "garbage!"}, {"unknown": 1}):
        bad = get(live_app, "/api/v1/stores", key, params=params)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request", params


def test_keys_that_do_not_authenticate_get_401_in_our_error_shape(app, live_app, user):
    key = make_key(app, "k", owner="owner@example.com")
    cases = {
        None: "unauthenticated",
        "Basic abc": "invalid_key",
        "Bearer nope": "invalid_key",
        "Bearer " + key[:-1] + ("A" if key[-1] != "A" else "B"): "invalid_key",  # right prefix, wrong secret
    }
    for header, code in cases.items():
        response = get(live_app, "/api/v1/stores", headers={"Authorization": header} if header else {})
        assert response.status_code == 401, header
        assert response.json() == {"error": {"code": code, "message": response.json()["error"]["message"]}}
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api"')
        assert "Set-Cookie" not in response.headers
    # The account behind the key is disabled: its key stops working.
    with app.app_context():
        User.by_email("owner@example.com").active = False
        db.session.commit()
    disabled = get(live_app, "/api/v1/stores", key)
    assert disabled.status_code == 401 and disabled.json()["error"]["code"] == "key_owner_disabled"
    with app.app_context():
        refusals = db.session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "api.refused")).all()
    assert len(refusals) == 2 and "unknown" in refusals[0] and "owner_disabled" in refusals[1]


def test_a_wrong_scope_is_403(app, live_app, linked):
    link_id, _ = linked
    reader = make_key(app, "reader", scopes=["stores:read"])
    caller = make_key(app, "caller", scopes=["stores:call"])
    assert get(live_app, "/api/v1/stores", reader).status_code == 200
    for response in (get(live_app, f"/api/v1/stores/{link_id}/rest/default/V1/products", reader),
                     requests.post(f"{live_app.url}/api/v1/stores/{link_id}/check", headers=bearer(reader),
                                   timeout=10),
                     get(live_app, "/api/v1/stores", caller)):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_scope"
    assert get(live_app, f"/api/v1/stores/{link_id}/rest/default/V1/products", caller).status_code == 200


def test_a_key_in_the_query_string_is_refused_and_not_logged(app, live_app, linked, caplog):
    caplog.set_level(logging.DEBUG)
    key = make_key(app)
    secret = key[17:]
    for params in ({"api_key": key}, {"searchCriteria[x]": f"token {key}"}, {key: ""}):
        refused = requests.get(f"{live_app.url}/api/v1/stores", params=params, headers=bearer(key), timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "key_in_query"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert key[:16] in logged and secret not in logged
    with app.app_context():
        audited = db.session.scalars(select(AuditEvent.detail)).all()
    assert audited and not any(secret in (d or "") for d in audited)
    # Request lines (the dev server's, or anything else logging a URL) are masked on the way out.
    from integration.logs import redact

    line = redact(f'"GET /api/v1/stores?api_key={key}&x=1 HTTP/1.1" 400')
    assert secret not in line and f"{key[:16]}_[redacted]&x=1" in line


def test_check_through_the_api_records_and_reports(app, live_app, linked, sandbox):
    link_id, integration = linked
    key = make_key(app)
    ok = requests.post(f"{live_app.url}/api/v1/stores/{link_id}/check", headers=bearer(key), timeout=10)
    assert ok.status_code == 200
    assert ok.json()["magento_version"] == "Magento/2.4 (Community)" and ok.json()["store"]["id"] == link_id
    assert ok.json()["store_configs"][0]["code"] == "default"
    sandbox.state.integrations.pop(integration.id)
    revoked = requests.post(f"{live_app.url}/api/v1/stores/{link_id}/check", headers=bearer(key), timeout=10)
    assert revoked.status_code == 503
    error = revoked.json()["error"]
    assert error["code"] == "store_token_revoked" and error["store_error"]["type"] == "TokenRevoked"
    assert error["store_error"]["status"] == 401 and "Activate it again" in error["store_error"]["hint"]
    assert get(live_app, f"/api/v1/stores/{link_id}", key).json()["status"] == "revoked"
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action).where(AuditEvent.store_link_id == link_id)).all()
    assert {"store.tested", "store.revoked", "api.call"} <= set(actions)


def test_unknown_routes_wrong_methods_and_big_bodies_answer_json(app, live_app, linked):
    link_id, _ = linked
    key = make_key(app)
    unknown = get(live_app, "/api/v1/nothing/here", key, headers={"Accept": "text/html"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert unknown.headers["Content-Type"] == "application/json"
    assert get(live_app, "/api/v1/stores/not-a-number", key).json()["error"]["code"] == "not_found"
    wrong = requests.patch(f"{live_app.url}/api/v1/stores", headers=bearer(key), timeout=10)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    big = requests.put(f"{live_app.url}/api/v1/stores/{link_id}/rest/default/V1/products/X", headers=bearer(key),
                       data=b'{"a": "' + b"x" * (1024 * 1024) + b'"}', timeout=10)
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    # HTML pages elsewhere stay HTML.
    assert "text/html" in requests.get(f"{live_app.url}/nope", timeout=10).headers["Content-Type"]


def test_the_rate_limit_counts_per_key(app_config, sandbox, user):
    from integration import create_app

    from .conftest import Served

    limited = create_app({**app_config, "API_RATE_LIMIT": "3 per minute"})
    served = Served(limited)
    try:
        first, second = make_key(limited, "first"), make_key(limited, "second")
        answers = [get(served, "/api/v1/stores", first).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        over = get(served, "/api/v1/stores", first)
        assert over.json()["error"]["code"] == "rate_limited" and 0 < int(over.headers["Retry-After"]) <= 60
        assert get(served, "/api/v1/stores", second).status_code == 200  # its own count
    finally:
        served.stop()


# --- what an outsider tried (each of these answered wrongly once) ------------------------

def test_ids_too_large_for_a_row_are_not_found_not_a_server_error(app, live_app, client, admin):
    key = make_key(app)
    for path in ("/api/v1/stores/9223372036854775808", "/api/v1/stores/99999999999999999999999/rest/default/V1/x"):
        answer = get(live_app, path, key)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    import base64
    cursor = base64.urlsafe_b64encode(b"s99999999999999999999999").decode().rstrip("=")
    assert get(live_app, f"/api/v1/stores?cursor={cursor}", key).status_code == 400
    from .test_dashboard import login
    login(client, "admin@example.com")
    assert client.get("/webhooks/99999999999999999999999").status_code == 404
    assert client.get("/accounts/").status_code == 200


def test_unclaimed_callbacks_are_nobodys_stores_and_stay_out_of_the_api(app, live_app, client):
    posted = client.post("/magento/callback", data={
        "oauth_consumer_key": "a" * 32, "oauth_consumer_secret": "b" * 32,
        "store_base_url": "http://127.0.0.1:9/", "oauth_verifier": "c" * 32})
    assert posted.status_code == 200
    key = make_key(app)
    assert get(live_app, "/api/v1/stores", key).json()["data"] == []
    assert get(live_app, "/api/v1/stores?status=pending", key).json()["data"] == []
    assert get(live_app, "/api/v1/stores?status=unlinked", key).status_code == 200


def test_head_through_the_proxy_reaches_the_store_as_a_get(app, live_app, linked, sandbox):
    link_id, _ = linked
    answer = requests.head(f"{live_app.url}/api/v1/stores/{link_id}/rest/default/V1/store/storeConfigs",
                           headers=bearer(make_key(app)), timeout=10)
    assert answer.status_code == 200 and answer.content == b""


def test_a_chunked_body_over_the_limit_is_refused_not_cut_short(app, live_app, linked, sandbox):
    """No Content-Length: the 1 MiB limit is counted on the bytes read, never a truncated body sent on."""
    import socket
    from urllib.parse import urlsplit

    link_id, _ = linked
    body = b'{"product": {"sku": "CHUNKED", "name": "c", "price": 1}}' + b" " * (1024 * 1024 + 10)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                      for i in range(0, len(body), 65536))
    address = urlsplit(live_app.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/stores/%d/rest/default/V1/products HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" % (link_id, make_key(app).encode()))
        try:
            sock.sendall(chunks + b"0\r\n\r\n")
        except OSError:
            pass  # the server may stop reading once it has refused
        answer = b""
        while b"\r\n\r\n" not in answer and (data := sock.recv(65536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert "CHUNKED" not in sandbox.state.products


def test_pages_that_show_a_webhook_secret_are_not_cached(app, client, admin):
    from .servers import csrf_from
    from .test_dashboard import login

    app.config["ALLOWED_WEBHOOK_HOSTS"] = ("127.0.0.1",)
    login(client, "admin@example.com")
    page = client.get("/webhooks/").get_data(as_text=True)
    made = client.post("/webhooks/", data={"csrf_token": csrf_from(page), "url": "http://127.0.0.1:9/in",
                                           "types": ["store.linked"]})
    assert made.status_code == 201 and "whsec_" in made.get_data(as_text=True)
    assert made.headers["Cache-Control"] == "no-store"
