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


def login(page, url, email="admin@example.com"):
    """Our login page, filled in and submitted as a person would."""
    page.goto(f"{url}/auth/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")


def _shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_not_you_in_the_popup_switches_account_and_still_links(live_app, sandbox, user, admin, page):
    from integration.models import StoreLink

    # This browser is logged in to our app as the owner when Magento opens the pop-up.
    page.goto(f"{live_app.url}/auth/login")
    page.fill("input[name=email]", "owner@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("text=Linked stores")
    page.goto(f"{sandbox.url}/admin/integrations")
    with page.expect_popup() as popup_info:
        page.click("tr[data-integration='1'] button.activate")
    popup = popup_info.value
    popup.wait_for_load_state()
    header = popup.locator("header")
    assert "Signed in as owner@example.com" in header.inner_text()
    for menu in ("Stores", "Add store", "Log out"):
        assert header.get_by_text(menu, exact=True).count() == 0
    _shot(popup, "popup-signed-in")

    popup.get_by_role("button", name="Not you? Use another account").click()
    popup.wait_for_selector("input[name=password]")
    assert popup.url.startswith(f"{live_app.url}/magento/identity?oauth_consumer_key=")
    _shot(popup, "popup-after-not-you")
    popup.fill("input[name=email]", "admin@example.com")
    popup.fill("input[name=password]", PASSWORD)
    with popup.expect_event("close", timeout=20000):
        popup.click("input[type=submit]")
    page.wait_for_selector("tr[data-integration='1'] .status-Active")
    with live_app.app.app_context():
        link = StoreLink.by_consumer_key(sandbox.state.integrations[1].consumer_key)
        assert link.owner.email == "admin@example.com"


def test_long_urls_and_messages_wrap_on_a_390_px_phone(live_app, sandbox, user, browser):
    import requests

    from integration.sandbox.oauth_provider import new_verifier

    long_path = "shop-" + "x" * 1500 + "/"
    integration = sandbox.state.add_integration("Long", "x", "y")
    assert requests.post(f"{live_app.url}/magento/callback", timeout=10, data={
        "oauth_consumer_key": integration.consumer_key, "oauth_consumer_secret": integration.consumer_secret,
        "store_base_url": f"{sandbox.url}/{long_path}", "oauth_verifier": new_verifier(integration).verifier,
    }).status_code == 200
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  user_agent="Mozilla/5.0 (Phone) " + "Build/" + "Z" * 300)
    page = context.new_page()
    page.set_default_timeout(15000)

    def fits(name):
        _shot(page, f"390-{name}")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name}: {width} px wide"

    callback = f"{sandbox.url}/admin/integration/loginSuccessCallback?state=" + "y" * 600
    page.goto(f"{live_app.url}/magento/identity?oauth_consumer_key={integration.consumer_key}"
              f"&success_call_back={callback}")
    fits("identity")
    page.fill("input[name=email]", "nobody-" + "n" * 200 + "@example.com")
    page.fill("input[name=password]", "wrong password")
    page.click("input[type=submit]")
    page.wait_for_selector("text=Wrong email or password.")
    fits("identity-wrong-password")
    page.goto(f"{live_app.url}/magento/identity?oauth_consumer_key=" + "z" * 32)
    fits("identity-no-callback")
    page.goto(f"{live_app.url}/auth/login")
    page.fill("input[name=email]", "owner@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{live_app.url}/accounts/me")
    page.wait_for_selector("text=This session")
    fits("account-sessions")
    context.close()


def test_deleting_the_integration_in_the_sandbox_grid_revokes_our_token(app, live_app, sandbox, user, page):
    from .test_activation_flow import run_activation

    run_activation(live_app, sandbox)
    page.goto(f"{sandbox.url}/admin/integrations")
    page.click("tr[data-integration='1'] button.delete")
    page.wait_for_selector("text=No integrations yet.")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sandbox-integration-deleted.png"), full_page=True)
    assert sandbox.state.integrations == {}
    # The store only learns at our next signed call: the dashboard's check marks it revoked.
    page.goto(f"{live_app.url}/auth/login")
    page.fill("input[name=email]", "owner@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.locator("tbody tr", has_text=sandbox.url).locator("a").click()
    page.click("text=Test connection")
    page.wait_for_selector("text=The integration was deleted, reauthorized or its token revoked in Magento")
    assert "revoked" in page.inner_text("main")
