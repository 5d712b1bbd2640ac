"""Our database going away and coming back, with the app running."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import make_url

from integration import create_app

from .servers import TcpProxy
from .test_callback import KEY, post


@pytest.fixture
def db_through_proxy(app_config):
    url = make_url(app_config["SQLALCHEMY_DATABASE_URI"])
    if not url.drivername.startswith("postgresql"):
        pytest.skip("runs on PostgreSQL (CI's second pass): a local SQLite file does not go away")
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(port=proxy.port, query={**url.query, "connect_timeout": "2"})
    app = create_app({**app_config, "SQLALCHEMY_DATABASE_URI": proxied.render_as_string(hide_password=False)})
    yield app, proxy
    proxy.cut()


def test_database_down_means_a_quick_503_and_recovery_without_restart(db_through_proxy, user):
    app, proxy = db_through_proxy
    client = app.test_client()
    assert post(client).status_code == 200
    proxy.cut()
    started = time.monotonic()
    refused = post(client, oauth_verifier="w" * 32)
    assert refused.status_code == 503 and "could not be stored" in refused.get_data(as_text=True)
    page = client.get(f"/magento/identity?oauth_consumer_key={KEY}", headers={"Accept": "text/html"})
    assert page.status_code == 503 and "database is unavailable" in page.get_data(as_text=True)
    api = client.get(f"/magento/identity?oauth_consumer_key={KEY}", headers={"Accept": "application/json"})
    assert api.status_code == 503 and api.get_json()["status"] == 503
    assert time.monotonic() - started < 10
    proxy.restore()
    assert post(client, oauth_verifier="w" * 32).status_code == 200  # same process, reconnected
    with app.app_context():
        from integration.models import StoreLink

        assert [a.kind for a in StoreLink.by_consumer_key(KEY).activations] == ["reauthorize", "activate"]
