"""A client service's whole path over real HTTP: a key from the CLI, a store activated in the
sandbox by its admin, the store listed, called through the proxy (a searchCriteria GET and a
PUT), then the integration deleted in Magento and the next call telling us so."""

from __future__ import annotations

import re

import requests

from .apikit import bearer
from .test_activation_flow import run_activation


def test_a_service_lists_and_calls_a_store_and_learns_it_was_revoked(app, live_app, sandbox, user):
    created = app.test_cli_runner().invoke(args=["apikeys", "create", "erp", "--scope", "stores:read",
                                                 "--scope", "stores:call", "--owner", "owner@example.com"])
    key = re.search(r"mic_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", created.output).group(0)
    api = requests.Session()
    api.headers.update(bearer(key))

    run_activation(live_app, sandbox)
    stores = api.get(f"{live_app.url}/api/v1/stores", params={"status": "linked"}, timeout=10).json()["data"]
    assert [s["base_url"] for s in stores] == [sandbox.url + "/"]
    store = stores[0]["id"]

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

    sandbox.state.integrations.pop(1)  # the merchant deletes the integration in Magento's admin
    gone = api.get(f"{rest}/products/SB-00003", timeout=10)
    assert gone.status_code == 503 and gone.json()["error"]["code"] == "store_token_revoked"
    assert api.get(f"{live_app.url}/api/v1/stores/{store}", timeout=10).json()["status"] == "revoked"
