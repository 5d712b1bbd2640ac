"""A real browser does what a store admin does: Activate, log in inside the pop-up, back to Active."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import PASSWORD

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                       reason="Debian's chromium is not installed (CI installs it)"),
]


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for i, p in enumerate(context.pages):
            p.screenshot(path=str(ARTIFACTS / f"{request.node.name}-{i}.png"), full_page=True)
    context.close()


def test_admin_activates_in_magento_and_logs_in_inside_the_popup(live_app, sandbox, user, page):
    page.goto(f"{sandbox.url}/admin/integrations")
    with page.expect_popup() as popup_info:
        page.click("tr[data-integration='1'] button.activate")
    popup = popup_info.value
    popup.wait_for_load_state()
    assert popup.url.startswith(f"{live_app.url}/magento/identity?oauth_consumer_key=")
    popup.fill("input[name=email]", "owner@example.com")
    popup.fill("input[name=password]", PASSWORD)
    with popup.expect_event("close", timeout=20000):
        popup.click("input[type=submit]")
    # Magento's page polls the pop-up, sees it closed and reloads: the integration is Active.
    page.wait_for_selector("tr[data-integration='1'] .status-Active")
    assert page.inner_text("tr[data-integration='1'] button.activate").strip() == "Reauthorize"

    # The operator sees the store linked in our dashboard.
    page.goto(f"{live_app.url}/auth/login")
    page.fill("input[name=email]", "owner@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("text=Linked stores")
    row = page.locator("tbody tr", has_text=sandbox.url)
    assert row.locator(".status-linked").count() == 1
    row.locator("a").click()
    page.click("text=Test connection")
    page.wait_for_selector("text=Connection works: Magento/2.4 (Community)")


def test_phone_sized_login_and_store_list_are_usable(live_app, user, browser):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(f"{live_app.url}/auth/login")
    # Labels are tied to their inputs, so this finds them the way a screen reader does.
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("text=Linked stores")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375 + 1
    context.close()
