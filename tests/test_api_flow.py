"""The issue's "done when": a client service's whole path over real HTTP, with a real webhook
receiver. A key from the CLI, an endpoint registered, a store activated in the sandbox by its
admin, ``store.linked`` received and verified with the shipped helper, the store listed and
called through the proxy (a searchCriteria GET and a PUT), the integration deleted in the
sandbox's admin, and the next call telling us so: ``store.revoked`` at the receiver and in
the events feed."""

from __future__ import annotations

import re

import pytest
import requests

from integration.webhook_signature import HEADER, verify_signature

from .apikit import bearer
from .test_activation_flow import run_activation
from .test_webhooks import FAST


@pytest.fixture
def app_config(app_config):
    return {**app_config, **FAST}


def test_a_service_lists_and_calls_a_store_and_learns_it_was_revoked(app, live_app, sandbox, user, receiver,
                                                                      runner):
    cli = app.test_cli_runner()
    created = cli.invoke(args=["apikeys", "create", "erp", "--scope", "stores:read", "--scope", "stores:call",
                               "--scope", "events:read", "--owner", "owner@example.com"])
    key = re.search(r"mic_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", created.output).group(0)
    added = cli.invoke(args=["webhooks", "add", f"{receiver.url}/hooks/magento", "--event", "store.linked",
                             "--event", "store.revoked"])
    secret = re.search(r"signing secret \(shown only now\): (\S+)", added.output).group(1)
    api = requests.Session()
    api.headers.update(bearer(key))

    run_activation(live_app, sandbox)
    assert receiver.wait_for(1), "store.linked never arrived"
    linked = receiver.received[0]
    verify_signature(secret, linked.headers[HEADER], linked.body)
    assert linked.path == "/hooks/magento" and linked.event["type"] == "store.linked"
    assert linked.event["store"]["base_url"] == sandbox.url + "/"

    stores = api.get(f"{live_app.url}/api/v1/stores", params={"status": "linked"}, timeout=10).json()["data"]
    assert [s["base_url"] for s in stores] == [sandbox.url + "/"]
    store = stores[0]["id"]
    assert linked.event["store"]["id"] == store

    rest = f"{live_app.url}/api/v1/stores/{store}/rest/default/V1"
    found = api.get(f"{rest}/products", timeout=10, params={
        "searchCriteria[filter_groups][0][filters][0][field]": "sku",
        "searchCriteria[filter_groups][0][filters][0][value]": "SB-0000%",
        "searchCriteria[filter_groups][0][filters][0][condition_type]": "like",
        "searchCriteria[pageSize]": "3"})
    assert found.status_code == 200 and found.json()["total_count"] == 9
    assert [p["sku"] for p in found.json()["items"]] == ["SB-00001", "SB-00002", "SB-00003"]
    updated = api.put(f"{rest}/products/SB-00003", json={"product": {"name": "Renamed by the ERP"}}, timeout=10)
    assert updated.status_code == 200 and updated.json()["name"] == "Renamed by the ERP"
    assert sandbox.state.products["SB-00003"]["name"] == "Renamed by the ERP"

    # The merchant deletes the integration in Magento's admin.
    admin_page = requests.get(f"{sandbox.url}/admin/integrations", timeout=10).text
    assert 'action="/admin/integrations/1/delete"' in admin_page
    assert requests.post(f"{sandbox.url}/admin/integrations/1/delete", timeout=10).status_code == 200
    assert "No integrations yet." in requests.get(f"{sandbox.url}/admin/integrations", timeout=10).text
    assert receiver.count == 1  # nothing tells us yet: Magento does not call integrations on delete

    gone = api.get(f"{rest}/products/SB-00003", timeout=10)
    assert gone.status_code == 503 and gone.json()["error"]["code"] == "store_token_revoked"
    assert api.get(f"{live_app.url}/api/v1/stores/{store}", timeout=10).json()["status"] == "revoked"
    assert receiver.wait_for(2), "store.revoked never arrived"
    revoked = receiver.received[1]
    verify_signature(secret, revoked.headers[HEADER], revoked.body)
    assert revoked.event["type"] == "store.revoked" and revoked.event["store"]["id"] == store
    assert revoked.event["store"]["status"] == "revoked"

    feed = api.get(f"{live_app.url}/api/v1/events", timeout=10).json()
    assert [e["type"] for e in feed["data"]] == ["store.linked", "store.revoked"]
    assert [e["id"] for e in feed["data"]] == [linked.event["id"], revoked.event["id"]]
    assert feed["data"][1] == revoked.event  # the feed and the webhook carry the same body
    after = api.get(f"{live_app.url}/api/v1/events", params={"after": linked.event["id"]}, timeout=10).json()
    assert [e["id"] for e in after["data"]] == [revoked.event["id"]]
