"""The intake panel in a real browser: an admin pastes an Adobe Commerce public key, copies the
endpoint URL shown once, a signed push arrives, and the store's page shows the counts and the
quarantine (and never the key)."""

from __future__ import annotations

import json

import pytest
import requests

from integration import jobs

from .test_browser import ARTIFACTS, browser, login, page, pytestmark  # noqa: F401 - fixtures and marks
from .test_intake import adobe_signed, rsa_pair, wait_until


@pytest.fixture
def app_config(app_config):
    # The runner's start-up tick syncs the new store's feeds: products only, and threads to spare for the push.
    return {**app_config, "SYNC_ENTITIES": ("products",), "JOBS_EMBEDDED_THREADS": 4}


def test_an_admin_sets_up_adobe_webhooks_and_sees_pushes_arrive(app, admin, live_app, linked, sandbox, page):
    link_id, _ = linked
    app.config["PUBLIC_URL"] = live_app.url
    key, pem = rsa_pair()
    jobs.start(app)
    try:
        login(page, live_app.url, "admin@example.com")
        page.goto(f"{live_app.url}/stores/{link_id}")
        assert "No source" in page.inner_text("table.intake-sources")
        page.click("summary:has-text('Set up a source')")
        page.fill("textarea[name=public_key]", pem)
        page.click("button:has-text('Accept Adobe Commerce webhooks')")
        url = page.inner_text("#intake-url")
        assert url.startswith(f"{live_app.url}/magento/events/{link_id}/adobe/")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "intake-url-once.png"), full_page=True)

        body = json.dumps({"eventName": "observer.catalog_product_save_after",
                           "data": {"product": {"entity_id": 2}}}).encode()
        assert requests.post(url, data=body, timeout=5,
                             headers={"x-adobe-commerce-webhook-signature": adobe_signed(key, body)}).status_code == 200
        assert requests.post(url, data=body + b" ", timeout=5,
                             headers={"x-adobe-commerce-webhook-signature": adobe_signed(key, body)}).status_code == 401

        def counts() -> list[int]:
            return [int(page.inner_text(f"tr[data-source=adobe] td.{c}"))
                    for c in ("verified", "emitted", "duplicates", "refused")]

        def processed() -> bool:
            page.goto(f"{live_app.url}/stores/{link_id}#intake")
            # Emitted, or a duplicate when the feed's first poll (started with the runner) sent it already.
            recent = page.inner_text("table.intake-recent")
            return "emitted" in recent or "duplicate:" in recent

        assert wait_until(processed, timeout=60), (counts(), page.inner_text("table.intake-recent"))
        # Drawn again: on PostgreSQL (read committed) the page that first showed the outcome may have read the
        # counters just before the job's commit and the messages just after it; the job writes both at once.
        page.goto(f"{live_app.url}/stores/{link_id}#intake")
        verified, emitted, duplicates, refused = counts()
        assert (verified, refused) == (1, 1) and emitted + duplicates == 1
        recent = page.inner_text("table.intake-recent")
        assert "emitted" in recent or "duplicate" in recent
        assert "does not match the body" in page.inner_text("table.intake-quarantine")
        html = page.content()
        assert "BEGIN PUBLIC KEY" not in html and url.rsplit("/", 1)[1] not in html
        page.locator("#intake").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "intake-panel.png"), full_page=True)
    finally:
        jobs.stop(app)
