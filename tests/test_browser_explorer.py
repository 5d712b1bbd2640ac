"""The API explorer and the capability warnings in a real browser: the store's own schema in
Swagger UI, *Try it* through our server (a GET returns products; a write is refused without the
confirmation tick), and a store linked with partial ACL whose page says what is missing."""

from __future__ import annotations

from playwright.sync_api import expect

from .conftest import PASSWORD
from .test_browser import ARTIFACTS, browser, login, page, pytestmark  # noqa: F401 - fixtures and marks



def operation(page, tag, operation_id):
    block = page.locator(f"#operations-{tag}-{operation_id}")
    block.locator(".opblock-summary").first.click()
    block.locator(".try-out__btn").click()
    return block


def test_explorer_lists_the_stores_operations_and_tries_them(live_app, linked, sandbox, admin, page):
    link_id, _ = linked
    login(page, live_app.url)
    page.goto(f"{live_app.url}/stores/{link_id}")
    page.click("button:has-text('Probe now')")
    page.wait_for_selector("text=Probed:")
    page.click("a:has-text('API explorer')")
    page.wait_for_selector(".opblock-tag")
    tags = page.locator(".opblock-tag").all_inner_texts()
    assert any("catalogProductRepositoryV1" in t for t in tags) and any("salesOrderRepositoryV1" in t for t in tags)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/V1/products/{sku}" in " ".join(paths) and "/V1/store/storeViews" in " ".join(paths)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "14-api-explorer.png"), full_page=True)
    # Searchable: the filter keeps only the matching resources.
    page.fill(".operation-filter-input", "salesOrder")
    expect(page.locator(".opblock-tag")).to_have_count(1)  # (the CSP allows no eval: locators, not JS)
    page.fill(".operation-filter-input", "")
    expect(page.locator(".opblock-tag")).to_have_count(len(tags))

    # Try it: a GET returns products, through our server.
    block = operation(page, "catalogProductRepositoryV1", "catalogProductRepositoryV1GetListGet")
    block.locator("tr[data-param-name='searchCriteria[pageSize]'] input").fill("2")
    block.locator("button.execute").click()
    block.locator(".live-responses-table tr.response .response-col_status").first.wait_for()
    assert block.locator(".live-responses-table tr.response .response-col_status").first.inner_text().strip() == "200"
    body = block.locator(".live-responses-table .microlight, .live-responses-table pre").first.inner_text()
    assert '"SB-00001"' in body and '"SB-00002"' in body and '"SB-00003"' not in body
    block.locator(".opblock-summary").first.scroll_into_view_if_needed()
    block.screenshot(path=str(ARTIFACTS / "15-api-explorer-try-it.png"))

    # A write without the tick is refused by our server; the product stays.
    block = operation(page, "catalogProductRepositoryV1", "catalogProductRepositoryV1DeleteByIdDelete")
    block.locator("tr[data-param-name='sku'] input").fill("SB-00001")
    block.locator("button.execute").click()
    block.locator(".live-responses-table tr.response .response-col_status").first.wait_for()
    assert block.locator(".live-responses-table tr.response .response-col_status").first.inner_text().strip() == "400"
    assert "Tick this box to send a DELETE" in block.locator(".live-responses-table").inner_text()
    assert "SB-00001" in sandbox.state.products
    block.screenshot(path=str(ARTIFACTS / "16-api-explorer-write-refused.png"))
    # With the tick, it goes through.
    page.check("#confirm-writes")
    block.locator("button.execute").click()
    block.locator(".live-responses-table tr.response .response-col_status:text('200')").first.wait_for()
    assert "SB-00001" not in sandbox.state.products
    # Every call was signed and audited on the server, once.
    page.goto(f"{live_app.url}/stores/{link_id}")
    trail = page.inner_text("body")
    assert "GET products: ok" in trail and "DELETE products/SB-00001: ok" in trail
    assert trail.count("DELETE products/SB-00001") == 1  # the refused one never reached the store


def test_partial_acl_store_page_warns_what_is_missing(live_app, sandbox, admin, page):
    # In the sandbox's Magento admin: a new integration with Resource Access "Custom", Products only.
    page.goto(f"{sandbox.url}/admin/integrations")
    page.fill("input[name=name]", "Products only")
    page.fill("input[name=callback_url]", f"{live_app.url}/magento/callback")
    page.fill("input[name=identity_url]", f"{live_app.url}/magento/identity")
    page.check("input[name=resource_access][value=custom]")
    page.check("input[name=resources][value='Magento_Catalog::products']")
    page.click("button:has-text('Save')")
    row = page.locator("tr", has_text="Products only")
    assert "Custom: Magento_Catalog::products" in row.inner_text()
    with page.expect_popup() as info:
        row.locator("button.activate").click()
    popup = info.value
    popup.fill("input[name=email]", "admin@example.com")
    popup.fill("input[name=password]", PASSWORD)
    with popup.expect_event("close"):
        popup.click("input[type=submit][value='Log in and link store']")
    # Magento's grid reloads once the pop-up is done: let it, or the reload races our next page.
    page.wait_for_selector("tr:has-text('Products only') .status-Active")
    login(page, live_app.url)
    page.goto(f"{live_app.url}/")
    page.click("tbody a")
    page.click("button:has-text('Probe now')")
    page.wait_for_selector("text=Probed:")
    warnings = page.locator("ul.warnings").inner_text()
    assert "orders: not granted — in Magento, edit the integration, API → tick Sales, then Reauthorize" in warnings
    assert "customers: not granted" in warnings and "store views: not granted" in warnings
    assert "products" not in warnings.replace("product export", "")
    page.locator("#capabilities").scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "17-store-capabilities-partial-acl.png"), full_page=True)
