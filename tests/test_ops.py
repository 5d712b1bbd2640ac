"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import re

import requests

from integration import create_app
from integration.extensions import db

from .apikit import bearer, make_key


def test_healthz_answers_without_the_database(app_config, tmp_path):
    broken = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/missing/dir/x.sqlite"})
    response = broken.test_client().get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_is_ok_on_a_migrated_database(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "failing": [],
                             "checks": {"database": "ok", "migrations": "ok", "redis": "not configured"}}


def test_readyz_fails_when_the_database_is_unreachable(app_config, tmp_path):
    for url in (f"sqlite:///{tmp_path}/missing/dir/x.sqlite", "postgresql+psycopg://postgres@127.0.0.1:9/gone"):
        broken = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": url})
        response = broken.test_client().get("/readyz")
        assert response.status_code == 503, url
        assert response.json["failing"] == ["database"] and response.json["checks"]["database"] == "unreachable"


def test_readyz_fails_when_migrations_are_not_at_head(app_config, tmp_path):
    from flask_migrate import upgrade

    behind = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/behind.sqlite"})
    with behind.app_context():
        upgrade(revision="0002")
        db.engine.dispose()
    response = behind.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["failing"] == ["migrations"]
    assert "at 0002, not at head" in response.json["checks"]["migrations"]
    empty = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/empty.sqlite"})
    assert "not migrated" in empty.test_client().get("/readyz").json["checks"]["migrations"]


def test_readyz_checks_redis_when_configured(app_config):
    down = create_app({**app_config, "REDIS_URL": "redis://127.0.0.1:9/0"})
    response = down.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["failing"] == ["redis"]
    up = create_app({**app_config, "REDIS_URL": "redis://127.0.0.1:6379/8"})
    assert up.test_client().get("/readyz").json["checks"]["redis"] == "ok"


def test_metrics_only_from_allowed_addresses(app_config):
    app = create_app({**app_config, "METRICS_ALLOW": ("127.0.0.0/8", "10.1.0.0/16", "::1")})
    client = app.test_client()
    for address in ("127.0.0.1", "10.1.2.3", "::1", "::ffff:10.1.9.9"):
        assert client.get("/metrics", environ_base={"REMOTE_ADDR": address}).status_code == 200, address
    for address in ("10.2.0.1", "192.0.2.7", "2001:db8::1", "garbage"):
        refused = client.get("/metrics", environ_base={"REMOTE_ADDR": address})
        assert refused.status_code == 403 and b"companion_" not in refused.data, address


def _value(text: str, name: str, **labels) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}{{{re.escape(selector)}}} (\S+)$" if labels else
                      rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_count_callbacks_exchanges_and_proxy_calls(app, live_app, linked, sandbox):
    link_id, _ = linked  # one callback stored, one exchange succeeded
    before = requests.get(f"{live_app.url}/metrics", timeout=10).text
    assert "companion_webhook_deliveries_total" in before or "# HELP companion_webhook_deliveries" in before
    key = make_key(app)
    url = f"{live_app.url}/api/v1/stores/{link_id}/rest/default/V1/products"
    requests.get(url, headers=bearer(key), timeout=10)
    requests.get(url + "/NOPE", headers=bearer(key), timeout=10)
    requests.post(f"{live_app.url}/magento/callback", data={"oauth_consumer_key": "x"}, timeout=10)
    after = requests.get(f"{live_app.url}/metrics", timeout=10).text
    assert after.startswith("# HELP") and "text/plain" in requests.get(f"{live_app.url}/metrics").headers[
        "Content-Type"]
    for name, labels, grew in (("companion_proxy_calls_total", {"outcome": "2xx"}, 1),
                               ("companion_proxy_calls_total", {"outcome": "4xx"}, 1),
                               ("companion_callbacks_total", {"outcome": "rejected"}, 1),
                               ("companion_proxy_call_seconds_count", {}, 2)):
        assert _value(after, name, **labels) - _value(before, name, **labels) == grew, name
    assert _value(after, "companion_callbacks_total", outcome="stored") >= 1
    assert _value(after, "companion_token_exchanges_total", outcome="succeeded") >= 1


def test_the_ops_endpoints_share_one_budget_per_address(app_config):
    """The limit is per address for /healthz, /readyz and /metrics together, not per endpoint."""
    from integration import create_app

    app = create_app({**app_config, "OPS_RATE_LIMIT": "2 per minute"})
    client = app.test_client()
    local = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/healthz", environ_base=local).status_code == 200
    assert client.get("/readyz", environ_base=local).status_code in (200, 503)
    assert client.get("/metrics", environ_base=local).status_code == 429
    # Another address has its own budget.
    assert client.get("/healthz", environ_base={"REMOTE_ADDR": "127.0.0.2"}).status_code == 200
