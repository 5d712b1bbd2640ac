"""In a real browser: an admin makes an API key (shown once), and the API docs page renders
the OpenAPI document with Swagger UI under the strict CSP."""

from __future__ import annotations

import re

import requests

from .apikit import bearer
from .conftest import PASSWORD
from .test_browser import ARTIFACTS, browser, page, pytestmark  # noqa: F401 - fixtures and marks


def _watch_console(page) -> list[str]:
    """Script errors, CSP refusals and failed requests (the browser's own favicon probe aside)."""
    problems: list[str] = []

    def console(msg):
        if msg.type in ("error", "warning") and not msg.text.startswith("Failed to load resource"):
            problems.append(msg.text)

    def response(r):
        if r.status >= 400 and not r.url.endswith("/favicon.ico"):
            problems.append(f"{r.status} {r.request.method} {r.url}")

    page.on("console", console)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("response", response)
    return problems


def test_an_admin_creates_a_key_sees_it_once_and_it_works(live_app, linked, admin, page):
    problems = _watch_console(page)
    page.goto(f"{live_app.url}/auth/login")
    page.fill("input[name=email]", "admin@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.click("text=API keys")
    page.fill("input[name=name]", "erp-sync")
    page.select_option("select[name=owner]", label="owner@example.com (member)")
    page.check("input[value='stores:call']")
    page.click("input[type=submit][value='Create key']")
    key = page.inner_text("#new-key").strip()
    assert re.fullmatch(r"mic_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-keys-created.png"), full_page=True)
    row = page.locator("tr[data-key]", has_text="erp-sync")
    assert "stores:read stores:call" in row.inner_text() and "owner@example.com" in row.inner_text()
    page.goto(f"{live_app.url}/api-keys/")
    assert key not in page.content()
    link_id, _ = linked
    assert requests.get(f"{live_app.url}/api/v1/stores/{link_id}", headers=bearer(key), timeout=10).status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("tr[data-key]", has_text="erp-sync").locator("button", has_text="Revoke").click()
    page.wait_for_selector("text=revoked")
    assert requests.get(f"{live_app.url}/api/v1/stores/{link_id}", headers=bearer(key), timeout=10).status_code == 401
    assert not problems, problems


def test_the_api_docs_render_with_local_assets_and_no_csp_violation(live_app, page):
    problems = _watch_console(page)
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_app.url) else None)
    page.goto(f"{live_app.url}/api/v1/docs")
    page.wait_for_selector("text=List stores")
    page.wait_for_selector("text=Call a store's REST API")
    assert page.locator(".opblock").count() >= 7  # 3 store operations, 4 proxy methods
    assert page.locator("button.authorize").count() == 1
    page.click("text=List stores")
    page.wait_for_selector("text=next_cursor", timeout=10000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=False)
    assert not outside, outside
    assert not problems, problems
