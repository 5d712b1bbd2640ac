"""The capability probe against the sandbox: what a store offers and lacks (its ACL-filtered
schema, store views, currency, input limits, async API), the warnings on the store page, the
probe after every link, and exports and syncs that keep to a store's page-size limit."""

from __future__ import annotations

import json
import time

import pytest
import requests
from sqlalchemy import select

from integration import jobs, probe
from integration.extensions import db
from integration.feeds.models import Job
from integration.models import AuditEvent, StoreLink
from integration.sandbox import SandboxState, create_sandbox

from .conftest import Served
from .test_store_contact import cli, login


def capabilities(app, link_id):
    with app.app_context():
        return probe.capabilities_of(db.session.get(StoreLink, link_id))


def audit_actions(app, link_id, action):
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.detail).where(
            AuditEvent.store_link_id == link_id, AuditEvent.action == action)))


def test_probe_reads_what_the_store_offers(app, linked):
    link_id, _ = linked
    result = cli(app, "probe", link_id)
    assert result.exit_code == 0, result.output
    assert "magento: 2.4 Community" in result.output
    assert "store views: default" in result.output and "base currency: EUR" in result.output
    assert "input limits: off" in result.output and "async/bulk API: available" in result.output
    assert "warning" not in result.output
    found = capabilities(app, link_id)
    assert found.can("GET", "/V1/products") and found.can("DELETE", "/V1/products/{sku}")
    assert found.can("GET", "/V1/orders") and found.store_views == ({"id": 1, "code": "default",
                                                                     "name": "Default Store View"},)
    assert found.warnings() == [] and found.async_events is False and found.max_page_size is None
    assert audit_actions(app, link_id, "store.probed") == ["capability probe: ok"]  # one contact, one entry
    with app.app_context():
        assert db.session.get(StoreLink, link_id).magento_version == "Magento/2.4 (Community)"


def test_partial_acl_is_seen_and_warned_about_on_the_store_page(app, linked, client):
    link_id, integration = linked
    integration.resources = ("Magento_Catalog::products",)  # the admin ticked Products only
    result = cli(app, "probe", link_id)
    assert result.exit_code == 0, result.output
    found = capabilities(app, link_id)
    assert found.can("GET", "/V1/products") and not found.can("GET", "/V1/orders")
    assert [f.name for f in found.missing()] == ["store views", "orders", "customers"]
    assert found.store_views == () and found.base_currency is None
    login(client, "owner@example.com")
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "orders: not granted — in Magento, edit the integration, API → tick Sales, then Reauthorize" in page
    assert "customers: not granted" in page and "products: not granted" not in page
    # Granted again: the warnings go with the next probe.
    integration.resources = ("Magento_Backend::all",)
    assert cli(app, "probe", link_id).exit_code == 0
    assert capabilities(app, link_id).warnings() == []


def test_input_limits_and_async_switches_are_detected(app, linked, sandbox):
    link_id, _ = linked
    sandbox.state.input_limit = 300
    sandbox.state.async_api = False
    sandbox.state.async_events_module = True
    result = cli(app, "probe", link_id)
    assert "input limits: on, at most 300 records a page" in result.output
    assert "async/bulk API: not available" in result.output and "async events module: yes" in result.output
    found = capabilities(app, link_id)
    assert found.input_limits is True and found.max_page_size == 300 and found.async_events is True
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        assert probe.page_size_for(link, 1000) == 300 and probe.page_size_for(link, 50) == 50


def test_a_failed_probe_is_kept_and_shown(app, linked, client):
    link_id, _ = linked
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        link.base_url = "http://127.0.0.1:9/"  # nothing listens there
        db.session.commit()
    result = cli(app, "probe", link_id)
    assert result.exit_code == 1
    found = capabilities(app, link_id)
    assert found.error and not found.known
    login(client, "owner@example.com")
    assert "The last probe failed" in client.get(f"/stores/{link_id}").get_data(as_text=True)


def test_the_probe_runs_after_linking(app, linked):
    link_id, _ = linked
    assert capabilities(app, link_id) is None  # queued by the link, not run yet
    jobs.start(app)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and capabilities(app, link_id) is None:
            time.sleep(0.1)
    finally:
        jobs.stop(app)
    found = capabilities(app, link_id)
    assert found is not None and found.can("GET", "/V1/products")


def test_probe_now_from_the_store_page(app, linked, client):
    link_id, _ = linked
    login(client, "owner@example.com")
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "Not probed yet" in page
    from .conftest import csrf_from

    response = client.post(f"/stores/{link_id}/probe", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "Probed:" in page and "at most" not in page and "Input limits</dt><dd>off" in page
    assert client.post(f"/stores/{link_id}/probe").status_code == 400  # no CSRF token


# --- the sandbox's schema, as Magento answers it ------------------------------------------------

def store_client(sandbox, resources=("Magento_Backend::all",)):
    from integration.magento.client import Credentials, StoreClient
    from integration.magento.store_url import StorePolicy
    from integration.sandbox.state import Token, random_string

    integration = sandbox.state.add_integration("x", resources=resources)
    integration.token = Token("access", random_string(), random_string(), "")
    integration.status = "Active"
    creds = Credentials(integration.consumer_key, integration.consumer_secret, integration.token.token,
                        integration.token.secret)
    return StoreClient(sandbox.url, creds, policy=StorePolicy(("127.0.0.1",))), integration


def test_sandbox_schema_is_filtered_by_the_callers_acl(sandbox):
    client, integration = store_client(sandbox, ("Magento_Sales::sales",))
    document = client.schema()
    assert document["swagger"] == "2.0" and document["basePath"] == "/rest/default"
    assert list(document["paths"]) == ["/V1/orders"]
    assert document["paths"]["/V1/orders"]["get"]["operationId"] == "salesOrderRepositoryV1GetListGet"
    # Unsigned: an anonymous caller, who may call none of these.
    anonymous = requests.get(f"{sandbox.url}/rest/default/schema?services=all", timeout=5)
    assert anonymous.status_code == 200 and anonymous.json()["paths"] == {}
    # Badly signed: refused as any REST call.
    bad = requests.get(f"{sandbox.url}/rest/default/schema?services=all", timeout=5, headers={
        "Authorization": f'OAuth oauth_consumer_key="{integration.consumer_key}", oauth_nonce="n1", '
                         'oauth_signature_method="HMAC-SHA256", oauth_timestamp="%d", oauth_version="1.0", '
                         f'oauth_token="{integration.token.token}", oauth_signature="bm90IGl0"' % time.time()})
    assert bad.status_code == 401 and "signature" in bad.json()["message"].lower()


def test_sandbox_input_limit_answers_as_magento(sandbox):
    from integration.magento.errors import PageSizeTooLarge

    sandbox.state.input_limit = 300
    client, _ = store_client(sandbox)
    raw = client.request_raw("GET", "products", params={"searchCriteria[pageSize]": "301"})
    assert raw.status_code == 400
    assert raw.json() == {"message": "Maximum SearchCriteria pageSize is %max", "parameters": {"max": 300}}
    with pytest.raises(PageSizeTooLarge) as refused:
        client.get("products", params={"searchCriteria[pageSize]": "301"})
    assert refused.value.limit == 300 and str(refused.value) == "Maximum SearchCriteria pageSize is 300"
    assert len(client.get("products", params={"searchCriteria[pageSize]": "300"})["items"]) == 300
    assert len(client.get("products", params={"searchCriteria": ""})["items"]) == 20  # the default page size


# --- exports and syncs keep to the limit ------------------------------------------------------

@pytest.fixture
def sandbox():
    """More products than one page of 300."""
    state = SandboxState(products=650)
    served = Served(create_sandbox(state))
    served.state = state
    yield served
    served.stop()


def test_export_with_input_limits_on_uses_pages_the_store_accepts(app, linked, sandbox, tmp_path):
    link_id, _ = linked
    sandbox.state.input_limit = 300
    out = tmp_path / "products.jsonl"
    result = cli(app, "export", link_id, "products", "--output", out, "--page-size", "1000", "--concurrency", "2")
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 650
    assert sandbox.state.counters.largest_page_served == 300
    assert sandbox.state.counters.page_size_refusals == 1  # asked once for 1000, then kept to 300
    assert capabilities(app, link_id).max_page_size == 300  # learnt: the next export asks for 300 at once
    out.unlink()
    assert cli(app, "export", link_id, "products", "--output", out, "--page-size", "1000").exit_code == 0
    assert sandbox.state.counters.page_size_refusals == 1 and len(out.read_text().splitlines()) == 650


def test_export_after_a_probe_never_asks_for_more(app, linked, sandbox, tmp_path):
    link_id, _ = linked
    sandbox.state.input_limit = 120
    assert cli(app, "probe", link_id).exit_code == 0
    assert sandbox.state.counters.page_size_refusals == 1  # the probe's question
    out = tmp_path / "products.jsonl"
    result = cli(app, "export", link_id, "products", "--output", out, "--page-size", "1000")
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 650
    assert sandbox.state.counters.page_size_refusals == 1 and sandbox.state.counters.largest_page_served == 120


@pytest.mark.parametrize("probed", [True, False])
def test_sync_with_input_limits_on_keeps_to_the_limit(app, linked, sandbox, probed):
    link_id, _ = linked
    app.config.update(SYNC_ENTITIES=("products",), SYNC_PAGE_SIZE=300)
    sandbox.state.input_limit = 100  # an admin lowered Magento's default maximum of 300
    if probed:
        assert cli(app, "probe", link_id).exit_code == 0
    result = app.test_cli_runner().invoke(args=["sync", str(link_id), "products", "--full"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        job = db.session.scalars(select(Job).order_by(Job.id.desc())).first()
        assert job.state == Job.FINISHED, job.error
        assert job.created == 650
    assert sandbox.state.counters.largest_page_served == 100
    assert sandbox.state.counters.page_size_refusals == 1  # the probe's question, or the sync's first page
    assert capabilities(app, link_id).max_page_size == 100


def test_sandbox_async_and_bulk_endpoints_answer_202(sandbox):
    from integration.magento.oauth import magento_auth

    _, integration = store_client(sandbox)

    def post(path, entities):
        return requests.post(f"{sandbox.url}/rest/default/{path}", data=json.dumps(entities), timeout=5,
                             headers={"Content-Type": "application/json"},
                             auth=magento_auth(integration.consumer_key, integration.consumer_secret,
                                               integration.token.token, integration.token.secret))

    bulk = post("async/bulk/V1/products", [{"product": {"sku": "ASYNC-1", "name": "A"}}, {"product": {"name": "?"}}])
    assert bulk.status_code == 202
    assert [i["status"] for i in bulk.json()["request_items"]] == ["accepted", "rejected"]
    assert bulk.json()["errors"] is True and sandbox.state.products["ASYNC-1"]["name"] == "A"
    one = post("async/V1/products", {"product": {"sku": "ASYNC-2"}})
    assert one.status_code == 202 and one.json()["request_items"][0]["status"] == "accepted"
    sandbox.state.async_api = False  # no Magento_WebapiAsync: no such route
    assert post("async/V1/products", {"product": {"sku": "ASYNC-3"}}).status_code == 404
