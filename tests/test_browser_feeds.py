"""The Jobs page in a real browser: Sync now from a store's page, live progress without a
reload, and the store's feeds afterwards."""

from __future__ import annotations

import pytest

from integration import jobs

from .conftest import PASSWORD
from .test_browser import ARTIFACTS, browser, page, pytestmark  # noqa: F401 - fixtures and marks


@pytest.fixture
def app_config(app_config):
    return {**app_config, "SYNC_ENTITIES": ("products", "orders"), "SYNC_PAGE_SIZE": 5}


def test_sync_now_shows_live_progress_and_the_feeds(app, live_app, linked, sandbox, page):
    link_id, _ = linked
    sandbox.state.latency = 0.25  # 12 pages of products: a few seconds to watch
    jobs.start(app)
    try:
        page.goto(f"{live_app.url}/auth/login")
        page.fill("input[name=email]", "owner@example.com")
        page.fill("input[name=password]", PASSWORD)
        page.click("input[type=submit]")
        page.goto(f"{live_app.url}/stores/{link_id}")
        page.click("button:has-text('Sync now')")
        page.wait_for_selector("text=Queued 2 sync jobs")
        page.evaluate("window.stillTheSamePage = true")
        page.wait_for_selector(".job-state .status-running", timeout=15000)  # (CSP: no eval, so selectors)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "jobs-running.png"), full_page=True)
        page.wait_for_selector(".job-state .status-queued, .job-state .status-running", state="detached",
                               timeout=30000)
        assert page.evaluate("window.stillTheSamePage") is True  # updated in place, no reload
        rows = page.inner_text("table.jobs")
        assert "60 / 60" in rows and "60 / 0 / 0" in rows
        page.screenshot(path=str(ARTIFACTS / "jobs-finished.png"), full_page=True)
        page.goto(f"{live_app.url}/stores/{link_id}")
        feeds = page.inner_text("table.feeds")
        assert "products" in feeds and "60" in feeds and "never synced" not in feeds
        page.screenshot(path=str(ARTIFACTS / "store-feeds.png"), full_page=True)
    finally:
        jobs.stop(app)
