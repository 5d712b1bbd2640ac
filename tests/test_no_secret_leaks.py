"""A full run, then a grep: no secret in any page, header, CLI output or log line."""

from __future__ import annotations

import logging

import requests

from integration.models import StoreLink

from .conftest import PASSWORD, csrf_from


def test_no_secret_reaches_a_page_a_log_or_the_cli(app, live_app, sandbox, user, admin, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="integration")
    seen: list[str] = []

    def keep(response, *args, **kwargs):
        seen.append(f"{response.status_code} {response.url}\n{dict(response.headers)}\n{response.text}")

    reply = requests.get(f"{sandbox.url}/admin/integrations/1/tokens_exchange", timeout=10).json()
    integration = sandbox.state.integrations[1]
    verifier = integration.token.verifier
    browser = requests.Session()
    browser.hooks["response"].append(keep)
    popup = browser.get(reply["identity_link_url"], params={
        "oauth_consumer_key": reply["oauth_consumer_key"], "success_call_back": reply["success_call_back"]})
    browser.post(f"{live_app.url}/magento/identity", data={
        "csrf_token": csrf_from(popup.text), "oauth_consumer_key": reply["oauth_consumer_key"],
        "success_call_back": reply["success_call_back"], "email": "owner@example.com", "password": "wrong one!!"})
    browser.post(f"{live_app.url}/magento/identity", data={
        "csrf_token": csrf_from(popup.text), "oauth_consumer_key": reply["oauth_consumer_key"],
        "success_call_back": reply["success_call_back"], "email": "owner@example.com", "password": PASSWORD})
    assert integration.status == "Active"
    access = {"access token": integration.token.token, "access token secret": integration.token.secret}
    with app.app_context():
        link_id = StoreLink.by_consumer_key(integration.consumer_key).id

    ops = requests.Session()
    ops.hooks["response"].append(keep)
    login = ops.get(f"{live_app.url}/auth/login")
    ops.post(f"{live_app.url}/auth/login", data={"csrf_token": csrf_from(login.text), "email": "admin@example.com",
                                                 "password": PASSWORD})
    store_page = ops.get(f"{live_app.url}/stores/{link_id}")
    token = csrf_from(store_page.text)
    ops.post(f"{live_app.url}/stores/{link_id}/test", data={"csrf_token": token})
    ops.post(f"{live_app.url}/stores/{link_id}/console", data={
        "csrf_token": token, "method": "GET", "path": "store/storeConfigs", "store_code": "default"})
    ops.post(f"{live_app.url}/stores/{link_id}/console", data={
        "csrf_token": token, "method": "GET", "path": "products/NOPE", "store_code": "default"})
    for path in ("/", "/audit", "/accounts/", f"/stores/{link_id}", "/magento/callback", "/nope"):
        ops.get(live_app.url + path)

    runner = app.test_cli_runner()
    outputs = [runner.invoke(args=args).output for args in (
        ["stores", "list", "--json"], ["stores", "show", str(link_id)], ["stores", "check", str(link_id)],
        ["stores", "call", str(link_id), "GET", "orders", "--param", "searchCriteria[pageSize]=1"],
        ["stores", "export", str(link_id), "customers"], ["users", "list"])]

    # A store that refuses: the error page and the stored error.
    integration.token = None
    sandbox.state.integrations[1].consumer_updated_at = 0
    requests.get(f"{sandbox.url}/admin/integrations/1/tokens_exchange?reauthorize=1", timeout=10)
    sandbox.state.integrations[1].consumer_updated_at = 0
    popup = browser.get(reply["identity_link_url"], params={"oauth_consumer_key": reply["oauth_consumer_key"]})
    refused = browser.post(f"{live_app.url}/magento/identity", data={
        "csrf_token": csrf_from(popup.text), "oauth_consumer_key": reply["oauth_consumer_key"],
        "success_call_back": ""})
    assert refused.status_code == 502

    secrets = {"consumer secret": integration.consumer_secret, "verifier": verifier,
               "new verifier": sandbox.state.integrations[1].token.verifier, "password": PASSWORD, **access}
    everything = "\n".join(seen + outputs + [r.getMessage() for r in caplog.records] +
                           [str(r.exc_info) for r in caplog.records if r.exc_info])
    assert len(seen) > 15 and "Connection works" in everything
    for name, secret in secrets.items():
        assert secret and secret not in everything, f"{name} leaked"
