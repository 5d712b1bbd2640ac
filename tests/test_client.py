"""The signed REST client against the sandbox store over real HTTP."""

from __future__ import annotations

import pytest

from integration.magento import errors
from integration.magento.client import Credentials, StoreClient, query_string, segment
from integration.magento.search import Filter, SearchCriteria
from integration.magento.store_url import StorePolicy
from integration.sandbox.oauth_provider import new_verifier
from integration.magento.token_exchange import Consumer, TokenExchange
from integration.magento.store_url import safe_session

LOCAL = StorePolicy(("127.0.0.1",))


def linked(sandbox, **client_kwargs) -> tuple[StoreClient, object]:
    integration = sandbox.state.add_integration("Client test", "x", "y")
    verifier = new_verifier(integration).verifier
    token = TokenExchange(safe_session(LOCAL)).run(sandbox.url + "/",
                                                   Consumer(integration.consumer_key, integration.consumer_secret),
                                                   verifier)
    creds = Credentials(integration.consumer_key, integration.consumer_secret, token.token, token.secret)
    kwargs = {"policy": LOCAL, "sleep": lambda s: None, **client_kwargs}
    return StoreClient(sandbox.url + "/", creds, **kwargs), integration


def test_signed_get_with_store_code_and_search_criteria(sandbox):
    client, _ = linked(sandbox)
    configs = client.get("store/storeConfigs", store_code="all")
    assert configs[0]["code"] == "all"
    result = client.search("products", SearchCriteria().where("sku", "SB-0001%", "like").order_by("id", "DESC")
                           .page(5, 1))
    assert result["total_count"] == 10  # SB-00010 .. SB-00019
    assert [p["sku"] for p in result["items"]] == ["SB-00019", "SB-00018", "SB-00017", "SB-00016", "SB-00015"]


def test_or_within_a_group_and_within_groups(sandbox):
    client, _ = linked(sandbox)
    criteria = (SearchCriteria().any_of(Filter("sku", "SB-00001"), Filter("sku", "SB-00002"))
                .where("price", 0, "gt"))
    assert {p["sku"] for p in client.search("products", criteria)["items"]} == {"SB-00001", "SB-00002"}
    in_list = client.search("products", SearchCriteria().where("sku", ["SB-00003", "SB-00004"], "in"))
    assert in_list["total_count"] == 2


def test_values_with_spaces_plus_and_unicode_are_signed_as_magento_verifies(sandbox):
    client, _ = linked(sandbox)
    criteria = SearchCriteria().where("name", "Blaue Jacke ü +50% A&B", "eq").where("created_at", "2024-01-01 00:00:00",
                                                                                    "gt")
    assert client.search("products", criteria)["total_count"] == 0  # accepted, just no match
    assert client.get("products", params={"q": "a b+c", "fields": "items[sku,name]"})["total_count"] == 60


def test_json_bodies_post_put_delete(sandbox):
    client, _ = linked(sandbox)
    created = client.post("products", json={"product": {"sku": "NEW 1/2", "name": "Blaue Jacke ü", "price": 9.5}})
    assert created["sku"] == "NEW 1/2"
    assert client.get(f"products/{segment('NEW 1/2')}")["name"] == "Blaue Jacke ü"
    assert client.put(f"products/{segment('NEW 1/2')}", json={"product": {"price": 11}})["price"] == 11
    assert client.delete(f"products/{segment('NEW 1/2')}") is True
    with pytest.raises(errors.NotFound, match="doesn't exist"):
        client.get(f"products/{segment('NEW 1/2')}")


def test_form_body_is_signed(sandbox):
    client, _ = linked(sandbox)
    # Not a resource the sandbox routes; reaching 404 proves the signature was accepted.
    with pytest.raises(errors.NotFound, match="does not match any route"):
        client.request("POST", "nothing/here", form={"a": "b c", "d": "1+1"})


def test_bad_request_fills_magentos_placeholders(sandbox):
    client, _ = linked(sandbox)
    with pytest.raises(errors.BadRequest) as caught:
        client.post("products", json={"nope": 1})
    assert str(caught.value) == '"product" is required. Enter and try again.'
    assert caught.value.parameters == {"fieldName": "product"}


def test_acl_refusal_names_the_resource(sandbox):
    client, integration = linked(sandbox)
    integration.resources = ("Magento_Catalog::products",)
    with pytest.raises(errors.NotAuthorized, match="isn't authorized to access Magento_Sales::sales"):
        client.get("orders", params=SearchCriteria().params())


def test_revoked_token_is_its_own_error(sandbox):
    client, integration = linked(sandbox)
    integration.token.revoked = True
    with pytest.raises(errors.TokenRevoked, match="revoked"):
        client.get("store/storeConfigs")
    sandbox.state.integrations.pop(integration.id)  # integration deleted in Magento
    with pytest.raises(errors.TokenRevoked, match="does not exist"):
        client.get("store/storeConfigs")


def test_older_store_is_detected_and_remembered(sandbox):
    sandbox.state.profile = "2.4.4-2.4.7"
    seen = []
    client, _ = linked(sandbox, on_profile=seen.append)
    # Plain request: every profile signs it alike, so it tells nothing.
    client.get("store/storeConfigs")
    assert seen == [] and not client.profile_known
    # [2] and [10] sort differently: 2.4.8+ is refused, 2.4.4-2.4.7 accepted and remembered.
    params = {f"searchCriteria[filter_groups][0][filters][{i}][field]": "sku" for i in (2, 10)}
    params.update({f"searchCriteria[filter_groups][0][filters][{i}][value]": f"SB-0000{i % 9}" for i in (2, 10)})
    client.get("products", params=params)
    assert seen == ["2.4.4-2.4.7"] and client.profile == "2.4.4-2.4.7"
    calls = sandbox.state.counters.rest_calls
    client.get("products", params=params)
    assert sandbox.state.counters.rest_calls == calls + 1  # no second try any more


def test_signature_error_when_no_profile_works(sandbox):
    client, _ = linked(sandbox)
    client.credentials = Credentials(client.credentials.consumer_key, "wrong" * 6 + "xx",
                                     client.credentials.access_token, client.credentials.access_token_secret)
    with pytest.raises(errors.SignatureRejected, match="signature is invalid"):
        client.get("store/storeConfigs")


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_get_put_delete_are_retried_with_a_fresh_nonce(sandbox, status):
    client, _ = linked(sandbox)
    sandbox.state.failures.append(["/store/storeConfigs", status, 2])
    assert client.get("store/storeConfigs")[0]["code"] == "default"
    sandbox.state.failures.append(["/products/SB-00001", status, 1])
    assert client.put("products/SB-00001", json={"product": {"price": 1}})["price"] == 1


def test_post_is_never_retried(sandbox):
    client, _ = linked(sandbox)
    sandbox.state.failures.append(["/products", 503, 1])
    with pytest.raises(errors.ServerError):
        client.post("products", json={"product": {"sku": "X"}})
    assert "X" not in sandbox.state.products


def test_retries_are_bounded_and_honour_retry_after(sandbox):
    delays = []
    client, _ = linked(sandbox, sleep=delays.append, retries=2)
    sandbox.state.failures.append(["/store/storeConfigs", 429, 5])
    with pytest.raises(errors.RateLimited):
        client.get("store/storeConfigs")
    assert delays == [0.0, 0.0]  # the sandbox sends Retry-After: 0


def test_a_deadline_bounds_the_whole_call_retries_included(sandbox):
    import time

    client, _ = linked(sandbox, deadline=0.5, retries=5, backoff=0.0, timeout=(5.0, 5.0))
    sandbox.state.latency = 0.3
    sandbox.state.failures.append(["/store/storeConfigs", 503, 5])
    started = time.monotonic()
    with pytest.raises(errors.StoreTimeout, match="within 0.5 s"):
        client.get("store/storeConfigs")
    # One 503 after 0.3 s, then a second attempt cut off at the deadline: no third.
    assert time.monotonic() - started < 0.9
    time.sleep(0.4)  # the sandbox finishes the abandoned second attempt
    assert sandbox.state.failures[-1][2] == 3


def test_backoff_grows_exponentially_with_jitter(sandbox):
    client, _ = linked(sandbox, backoff=1.0)
    for attempt in range(5):
        assert all(0 <= client._delay(attempt, None) <= 2 ** attempt for _ in range(50))
    assert client._delay(0, "7") == 7.0
    assert client._delay(0, "100000") == 60.0


def test_unreachable_store_is_retried_then_raised():
    delays = []
    client = StoreClient("http://127.0.0.1:9/", Credentials("a" * 32, "b" * 32, "c" * 32, "d" * 32),
                         policy=LOCAL, sleep=delays.append, retries=2)
    with pytest.raises(errors.StoreUnreachable):
        client.get("store/storeConfigs")
    assert len(delays) == 2


def test_iter_search_pages_by_total_count_sequentially_and_concurrently(sandbox):
    client, _ = linked(sandbox)
    expected = [f"SB-{i:05d}" for i in range(1, 61)]
    for concurrency in (1, 4):
        skus = [p["sku"] for p in client.iter_search("products", SearchCriteria().order_by("entity_id"),
                                                     page_size=7, concurrency=concurrency)]
        assert skus == expected


def test_query_string_rules():
    assert query_string({"q": "a b+c", "x": "ü"}) == "q=a%20b%2Bc&x=%C3%BC"
    with pytest.raises(ValueError, match="given twice"):
        query_string([("a", 1), ("a", 2)])
    assert SearchCriteria().params() == [("searchCriteria", "")]
    with pytest.raises(ValueError, match="unknown condition"):
        Filter("sku", "x", "contains")


def test_magento_version_is_read_unsigned(sandbox):
    client, _ = linked(sandbox)
    assert client.magento_version() == "Magento/2.4 (Community)"


def test_base_url_keeps_index_php_and_store_segments():
    client = StoreClient("https://Shop.Example.com/index.php/", Credentials("a", "b", "c", "d"))
    assert client.url("products", "all") == "https://shop.example.com/index.php/rest/all/V1/products"
    assert client.url("/V1/orders") == "https://shop.example.com/index.php/rest/default/V1/orders"


def test_error_bodies_become_typed_errors_with_placeholders_and_errors_list():
    from integration.magento.client import api_error

    err = api_error(400, {"message": "One or more input exceptions have occurred.", "errors": [
        {"message": '"%fieldName" is required. Enter and try again.', "parameters": {"fieldName": "sku"}},
        {"message": "The %1 value is invalid.", "parameters": ["price"]}]}, "POST", "https://s.example/rest/V1/x")
    assert isinstance(err, errors.BadRequest)
    assert err.errors == ['"sku" is required. Enter and try again.', "The price value is invalid."]
    assert str(err).startswith("One or more input exceptions have occurred. (\"sku\" is required")
    acl = api_error(401, {"message": "The consumer isn't authorized to access %resources.",
                          "parameters": {"resources": "Magento_Sales::sales"}}, "GET", "u")
    assert isinstance(acl, errors.NotAuthorized) and str(acl).endswith("access Magento_Sales::sales.")
    assert isinstance(api_error(503, None, "GET", "https://s.example/rest/V1/x?a=1"), errors.ServerError)
    assert str(api_error(418, "teapot", "GET", "https://s.example/x?secret=1")) == \
        "GET https://s.example/x answered HTTP 418"


def test_a_patched_store_is_detected_too(sandbox):
    sandbox.state.profile = "patch-37278"
    seen = []
    client, _ = linked(sandbox, on_profile=seen.append)
    criteria = SearchCriteria().where("name", "Sandbox product 7", "eq")  # a space in a bracketed value
    assert client.search("products", criteria)["total_count"] == 1
    assert seen == ["patch-37278"]
