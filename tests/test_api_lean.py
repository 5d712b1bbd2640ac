"""The API's calls are served by an app of their own (integration/api/lean.py) that runs the main
app's very hooks, views and error handlers: the same calls through it and through the main app's
own Flask path give the same answers, and the same audit rows."""

from __future__ import annotations

import json

from flask import Flask
from sqlalchemy import select
from werkzeug.test import Client
from werkzeug.wrappers import Response

from integration import create_app
from integration.api import lean
from integration.apikeys import service
from integration.extensions import db
from integration.models import ApiKey, AuditEvent

from .apikit import account, bearer, make_key

#: Differ from one request to the next whichever app answers.
VARYING = {"x-request-id", "x-companion-elapsed-ms", "date", "content-length"}


def _both(app) -> tuple[Client, Client]:
    """A client through the app as served (the API's own app for its paths), and one through
    the main app's own Flask path, which served the API before."""
    assert isinstance(app.wsgi_app, lean.Dispatch)
    return Client(app, Response), Client(lambda environ, start: Flask.wsgi_app(app, environ, start), Response)


def _answer(response: Response) -> tuple:
    # The one difference: the main app said "Vary: Cookie" because Flask-Login looked at the
    # browser session for a remember cookie; an API answer never depends on a cookie.
    headers = sorted((name.lower(), _methods(value) if name.lower() == "allow" else value)
                     for name, value in response.headers
                     if name.lower() not in VARYING and (name.lower(), value) != ("vary", "Cookie"))
    body = response.get_data()
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return response.status_code, headers, body


def _methods(allow: str) -> str:
    """``Allow`` lists a route's methods from a set: the same methods, in either app's order."""
    return ", ".join(sorted(method.strip() for method in allow.split(",")))


def _last_audit(app) -> tuple | None:
    with app.app_context():
        row = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).first()
        return None if row is None else (row.action, row.user_id, row.store_link_id, row.remote_addr, row.detail)


def test_twenty_one_kinds_of_call_answer_the_same_through_the_apis_app_and_the_main_one(app, linked, sandbox):
    link_id, _ = linked
    key = make_key(app, "svc", owner="owner@example.com")
    reader = make_key(app, "reader", scopes=["stores:read", "events:read"])
    account(app, "other@example.com")
    stranger = make_key(app, "stranger", owner="other@example.com")
    revoked = make_key(app, "old")
    with app.app_context():
        service.revoke(db.session.scalar(select(ApiKey).where(ApiKey.name == "old")))
        db.session.commit()
    proxy = f"/api/v1/stores/{link_id}/rest/default/V1"
    calls = [
        ("GET", f"{proxy}/products?searchCriteria%5BpageSize%5D=2&searchCriteria%5BcurrentPage%5D=2", key, {}),
        ("GET", f"{proxy}/products/SB-00001", key, {}),
        ("GET", f"{proxy}/products/NO-SUCH-SKU", key, {}),  # Magento's own 404
        ("HEAD", f"{proxy}/products/SB-00001", key, {}),
        ("PUT", f"{proxy}/products/SB-00002", key, {"json": {"product": {"price": 12.5}}}),
        ("PUT", f"{proxy}/products/SB-00002", key, {"data": b"{not json", "content_type": "application/json"}),
        ("GET", f"{proxy}/products/%2E%2E/x", key, {}),  # a dot segment
        ("GET", f"/api/v1/stores/{link_id}/rest/Bad-Code/V1/products", key, {}),
        ("GET", f"{proxy}/products", None, {}),  # no key
        ("GET", f"{proxy}/products", "mic_0123456789ab_" + "x" * 43, {}),  # unknown key
        ("GET", f"{proxy}/products", revoked, {}),
        ("GET", f"{proxy}/products", reader, {}),  # wrong scope
        ("GET", f"{proxy}/products?api_key={key}", key, {}),  # a key in the query string
        ("GET", f"/api/v1/stores/{link_id}/rest/default/V1/products", stranger, {}),  # someone else's store
        ("GET", "/api/v1/stores/999999/rest/default/V1/products", key, {}),
        ("GET", "/api/v1/stores", reader, {"headers": {"Cookie": "session=forged.cookie"}}),
        ("GET", f"/api/v1/stores/{link_id}", reader, {}),
        ("GET", "/api/v1/events", reader, {}),
        ("GET", "/api/v1/stores/x/nothing", key, {}),  # no such route
        ("PATCH", f"{proxy}/products/SB-00001", key, {}),  # no such method
        ("GET", f"{proxy}/products", key, {"headers": {"X-Request-Id": "caller-id-42"}}),
    ]
    served, main = _both(app)
    for method, path, with_key, extra in calls:
        headers = {**(bearer(with_key) if with_key else {}), **extra.pop("headers", {})}
        answers, audits = [], []
        for client in (served, main):
            answers.append(_answer(client.open(path, method=method, headers=headers,
                                               environ_base={"REMOTE_ADDR": "127.0.0.9"}, **extra)))
            audits.append(_last_audit(app))
        if path.endswith("/nothing") or method == "PATCH":
            # What routing answers (no such route, no such method) is the API's own answer in its app:
            # never cached, and audited as a call with the key (the main app left it to the dashboard's).
            status, headers, body = answers[1]
            assert answers[0] == (status, sorted(headers + [("cache-control", "no-store")]), body), (method, path)
            assert audits[0][0] == "api.call" and audits[0][4].startswith(f"{method} {path.split('?')[0]} → {status} ")
            continue
        assert answers[0] == answers[1], (method, path, set(answers[0][1]) ^ set(answers[1][1]))
        assert audits[0] == audits[1], (method, path)
    with app.app_context():
        actions = db.session.scalars(select(AuditEvent.action)).all()
    assert actions.count("api.call") >= 2 * 14 and "api.refused" in actions


def test_the_rate_limit_counts_calls_through_either_app_together(app_config, linked):
    app = create_app({**app_config, "API_RATE_LIMIT": "3 per minute"})
    key = make_key(app, "limited", scopes=["stores:read"])
    served, main = _both(app)
    codes = [client.get("/api/v1/stores", headers=bearer(key)).status_code
             for client in (served, main, served, main, served)]
    assert codes == [200, 200, 200, 429, 429]


def test_behind_a_proxy_the_apis_calls_are_counted_and_audited_by_the_callers_address(app_config):
    app = create_app({**app_config, "TRUSTED_PROXIES": 1, "API_RATE_LIMIT": "2 per minute"})
    key = make_key(app, "behind", scopes=["stores:read"])
    client = app.test_client()

    def call(address: str) -> int:
        return client.get("/api/v1/stores", headers={**bearer(key), "X-Forwarded-For": address}).status_code

    assert [call("203.0.113.7"), call("203.0.113.7")] == [200, 200]
    with app.app_context():
        audited = db.session.scalars(select(AuditEvent.remote_addr).where(AuditEvent.action == "api.call")).all()
        last_addr = db.session.scalar(select(ApiKey.last_used_addr).where(ApiKey.name == "behind"))
    assert audited == ["203.0.113.7", "203.0.113.7"] and last_addr == "203.0.113.7"


def test_the_apis_app_runs_every_hook_of_the_main_app_but_those_that_skip_the_api(app):
    """A hook added to the main app runs for the API's calls too; the ones left behind are the
    main app's, each of which does nothing for an API request."""
    api = app.extensions["api_app"]
    for funcs in ("before_request_funcs", "after_request_funcs", "teardown_request_funcs"):
        main_hooks = getattr(app, funcs).get(None, [])
        # The API blueprint's own hooks run app-wide there: all that app serves is the API.
        apis = getattr(app, funcs).get("api", []) if funcs != "teardown_request_funcs" else []
        assert getattr(api, funcs).get(None, []) == [
            h for h in main_hooks if lean._name(h) not in lean.NOT_FOR_THE_API] + apis
    left_behind = {lean._name(h) for funcs in ("before_request_funcs", "after_request_funcs", "teardown_request_funcs")
                   for h in getattr(app, funcs).get(None, [])} & lean.NOT_FOR_THE_API
    assert left_behind == lean.NOT_FOR_THE_API  # each name still names a hook the main app has
    assert api.teardown_appcontext_funcs == app.teardown_appcontext_funcs
    assert api.config is app.config and api.extensions is app.extensions
