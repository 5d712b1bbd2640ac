"""Render the main pages in headless Chromium and save them as docs/*.png.

    .venv/bin/python docs/screenshots.py
    .venv/bin/python docs/screenshots.py --only doctor   # just the activation doctor's pages (18-21)

Runs the sandbox store and the app on free ports with a throw-away SQLite database,
activates a store through the real pop-up, and photographs each page on the way.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs"


def main(only: str | None = None) -> None:
    from cryptography.fernet import Fernet
    from flask_migrate import upgrade
    from playwright.sync_api import sync_playwright

    from integration import create_app
    from integration.extensions import db
    from integration.models import User
    from integration.sandbox import SandboxState, create_sandbox
    from tests.servers import Served

    tmp = tempfile.mkdtemp()
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/shots.sqlite", "SECRET_KEY": "d" * 64,
                      "ENCRYPTION_KEYS": (Fernet.generate_key().decode(),),
                      "ALLOWED_STORE_HOSTS": ("127.0.0.1",), "SELF_REGISTRATION": True,
                      "REQUIRE_2FA": "off"})  # the pages themselves, not the enrolment they would lead to
    with app.app_context():
        upgrade()
        admin = User(email="ops@example.com", role="admin")
        admin.set_password("screenshot password")
        db.session.add(admin)
        db.session.commit()
    state = SandboxState(products=200)
    sandbox, served = Served(create_sandbox(state)), Served(app)
    state.add_integration("Companion", f"{served.url}/magento/callback", f"{served.url}/magento/identity")
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
            shot = lambda pg, name: pg.screenshot(path=str(OUT / f"{name}.png"), full_page=True)  # noqa: E731
            if only == "doctor":
                doctor_pages(browser, app, state, sandbox, served, shot)
                return
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(f"{sandbox.url}/admin/integrations")
            shot(page, "01-sandbox-integrations")
            with page.expect_popup() as info:
                page.click("button.activate")
            popup = info.value
            popup.wait_for_load_state()
            popup.set_viewport_size({"width": 680, "height": 800})
            shot(popup, "02-identity-popup-login")
            popup.fill("input[name=email]", "ops@example.com")
            popup.fill("input[name=password]", "wrong password")
            popup.click("input[type=submit][value='Log in and link store']")
            shot(popup, "03-identity-popup-wrong-password")
            popup.fill("input[name=email]", "ops@example.com")
            popup.fill("input[name=password]", "screenshot password")
            with popup.expect_event("close"):
                popup.click("input[type=submit][value='Log in and link store']")
            page.wait_for_selector(".status-Active")
            shot(page, "04-sandbox-active")
            page.goto(f"{served.url}/")
            shot(page, "05-dashboard-stores")
            page.click("tbody a")
            page.click("text=Test connection")
            page.fill("textarea[name=params]", "searchCriteria[pageSize]=2")
            page.fill("input[name=path]", "products")
            page.click("input[type=submit][value='Send signed request']")
            page.wait_for_selector(".result")
            shot(page, "06-store-page-console")
            page.goto(f"{served.url}/accounts/")
            shot(page, "07-accounts")
            page.goto(f"{served.url}/audit")
            shot(page, "08-audit")
            page.goto(f"{served.url}/stores/new")
            shot(page, "09-manual-link")
            page.goto(f"{served.url}/nope")
            shot(page, "10-error-404")
            fresh = browser.new_page(viewport={"width": 680, "height": 700})
            fresh.goto(f"{served.url}/magento/identity?oauth_consumer_key={'z' * 32}&success_call_back=x")
            shot(fresh, "11-identity-no-callback")
            fresh.goto(f"{served.url}/magento/callback")
            shot(fresh, "12-callback-about")
            phone = browser.new_page(viewport={"width": 375, "height": 740}, is_mobile=True)
            phone.goto(f"{served.url}/auth/login")
            shot(phone, "13-phone-login")
            _explorer(page, served.url, sandbox.url, shot)
            doctor_pages(browser, app, state, sandbox, served, shot)
            browser.close()
    finally:
        sandbox.stop()
        served.stop()
    print(f"screenshots in {OUT}")


def _explorer(page, app_url: str, sandbox_url: str, shot) -> None:
    """The capability probe and the API explorer (issue 11): the store linked above, probed; its
    explorer, a Try it GET and a write refused without the tick; then a store linked with partial ACL."""
    page.goto(f"{app_url}/stores/1")
    page.click("button:has-text('Probe now')")
    page.wait_for_selector("text=Probed:")
    page.click("a:has-text('API explorer')")
    page.wait_for_selector(".opblock-tag")
    shot(page, "14-api-explorer")
    block = page.locator("#operations-catalogProductRepositoryV1-catalogProductRepositoryV1GetListGet")
    block.locator(".opblock-summary").first.click()
    block.locator(".try-out__btn").click()
    block.locator("tr[data-param-name='searchCriteria[pageSize]'] input").fill("2")
    block.locator("button.execute").click()
    block.locator(".live-responses-table tr.response").first.wait_for()
    block.screenshot(path=str(OUT / "15-api-explorer-try-it.png"))
    block = page.locator("#operations-catalogProductRepositoryV1-catalogProductRepositoryV1DeleteByIdDelete")
    block.locator(".opblock-summary").first.click()
    block.locator(".try-out__btn").click()
    block.locator("tr[data-param-name='sku'] input").fill("SB-00001")
    block.locator("button.execute").click()
    block.locator(".live-responses-table tr.response").first.wait_for()
    block.screenshot(path=str(OUT / "16-api-explorer-write-refused.png"))
    # A second integration in Magento's admin, granted Products only.
    page.goto(f"{sandbox_url}/admin/integrations")
    page.fill("input[name=name]", "Products only")
    page.fill("input[name=callback_url]", f"{app_url}/magento/callback")
    page.fill("input[name=identity_url]", f"{app_url}/magento/identity")
    page.check("input[name=resource_access][value=custom]")
    page.check("input[name=resources][value='Magento_Catalog::products']")
    page.click("button:has-text('Save')")
    with page.expect_popup() as info:
        page.locator("tr", has_text="Products only").locator("button.activate").click()
    popup = info.value
    popup.wait_for_load_state()
    with popup.expect_event("close"):  # still logged in from the first link: one click
        popup.click("input[type=submit]")
    page.goto(f"{app_url}/stores/2")
    page.click("button:has-text('Probe now')")
    page.wait_for_selector("ul.warnings")
    shot(page, "17-store-capabilities-partial-acl")


def doctor_pages(browser, app, state, sandbox, served, shot) -> None:
    """The activation doctor: a pop-up counting down, the same pop-up once Magento's window has
    passed (a short window, so nobody waits five minutes), the operator's timeline, the overview."""
    app.config["ACTIVATION_WINDOW"] = 6
    state.consumer_expiry = 6
    integration = state.add_integration("Slow shop", f"{served.url}/magento/callback",
                                        f"{served.url}/magento/identity")
    page = browser.new_page(viewport={"width": 1200, "height": 760})
    page.goto(f"{sandbox.url}/admin/integrations")
    with page.expect_popup() as info:
        page.click(f"tr[data-integration='{integration.id}'] button.activate")
    popup = info.value
    popup.wait_for_load_state()
    popup.set_viewport_size({"width": 680, "height": 640})
    shot(popup, "18-popup-countdown")
    popup.wait_for_selector(".window-expired", state="visible", timeout=15000)
    popup.fill("input[name=email]", "ops@example.com")
    popup.fill("input[name=password]", "screenshot password")
    popup.click("input[type=submit]")
    popup.wait_for_selector("h1:has-text('The time to link has run out')")
    shot(popup, "19-popup-expired")
    popup.close()
    page.goto(f"{served.url}/auth/login")
    if page.locator("input[name=password]").count():
        page.fill("input[name=email]", "ops@example.com")
        page.fill("input[name=password]", "screenshot password")
        page.click("input[type=submit]")
    page.goto(f"{served.url}/")
    page.locator("tbody tr", has_text="failed").get_by_role("link", name="doctor").click()
    page.wait_for_selector("h1:has-text('Activation doctor')")
    shot(page, "20-doctor-expired")
    page.goto(f"{served.url}/magento/identity?oauth_consumer_key={'q' * 32}&success_call_back=x")
    page.goto(f"{served.url}/doctor")
    page.click("text=Send a test POST")
    page.wait_for_selector(".flash")
    shot(page, "21-doctor-overview-test-post")


if __name__ == "__main__":
    main(sys.argv[2] if sys.argv[1:2] == ["--only"] else None)
