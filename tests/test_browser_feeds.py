"""The Jobs page in a real browser: Sync now from a store's page, live progress without a
reload, and the store's feeds afterwards; an export from the store's page, downloaded as a CSV."""

from __future__ import annotations

import csv

import pytest

from integration import jobs

from .test_browser import ARTIFACTS, browser, login, page, pytestmark  # noqa: F401 - fixtures and marks


@pytest.fixture
def app_config(app_config):
    # A page at a time (no parallel pages), so the running job can be watched.
    return {**app_config, "SYNC_ENTITIES": ("products", "orders"), "SYNC_PAGE_SIZE": 5, "STORE_CONCURRENCY": 1}


def test_sync_now_shows_live_progress_and_the_feeds(app, live_app, linked, sandbox, page):
    link_id, _ = linked
    sandbox.state.latency = 0.25  # 12 pages of products: a few seconds to watch
    jobs.start(app)
    try:
        login(page, live_app.url, "owner@example.com")
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


def test_a_dashboard_export_downloads_a_csv(app, live_app, linked, sandbox, page, tmp_path):
    link_id, _ = linked
    sandbox.state.latency = 0.2  # 12 pages of 5: the job is seen running, then done
    app.config["EXPORT_PAGE_SIZE"] = 5
    jobs.start(app)
    try:
        login(page, live_app.url, "owner@example.com")
        page.goto(f"{live_app.url}/stores/{link_id}")
        page.select_option("select[name=entity]", "products")
        page.select_option("select[name=format]", "csv")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "store-export-form.png"), full_page=True)
        page.click("form.export-form button[type=submit]")
        page.wait_for_selector("text=Export queued as job")
        page.evaluate("window.stillTheSamePage = true")
        link = page.wait_for_selector("a.download", timeout=30000)  # appears in place when the job is done
        assert page.evaluate("window.stillTheSamePage") is True
        page.screenshot(path=str(ARTIFACTS / "jobs-export-finished.png"), full_page=True)
        with page.expect_download() as download_info:
            link.click()
        download = download_info.value
        assert download.suggested_filename.startswith(f"store-{link_id}-products-")
        assert download.suggested_filename.endswith(".csv")
        saved = tmp_path / "export.csv"
        download.save_as(saved)
        rows = list(csv.DictReader(saved.open(encoding="utf-8")))
        assert len(rows) == 60 and rows[0]["sku"] == "SB-00001"
    finally:
        jobs.stop(app)
