"""The Webhooks page in a real browser: add an endpoint, copy its secret, read the log, Replay."""

from __future__ import annotations

import pytest

from integration.webhook_signature import HEADER, verify_signature

from .conftest import PASSWORD
from .receiver import Receiver
from .test_browser import ARTIFACTS, browser, page, pytestmark  # noqa: F401 - fixtures and marks
from .test_webhooks import FAST, a_link, dispatch_now, record_event


@pytest.fixture
def app_config(app_config):
    return {**app_config, **FAST}


def test_admin_adds_an_endpoint_reads_the_log_and_replays(app, live_app, admin, page):
    receiver = Receiver()
    try:
        page.goto(f"{live_app.url}/auth/login")
        page.fill("input[name=email]", "admin@example.com")
        page.fill("input[name=password]", PASSWORD)
        page.click("input[type=submit]")
        page.click("text=Webhooks")
        page.fill("input[name=url]", receiver.url + "/hooks")
        page.check("input[value='store.unlinked']")
        page.click("input[value='Add endpoint']")
        secret = page.inner_text("#new-secret").strip()
        assert secret.startswith("whsec_") and page.is_visible("text=not shown again")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "webhooks-added.png"), full_page=True)
        event_id = record_event(app, a_link(app))
        dispatch_now(app)
        page.click("text=Delivery log")
        assert page.inner_text("table.deliveries").count("delivered") == 1
        assert event_id in page.content()
        page.click("button:has-text('Replay')")
        page.wait_for_selector("text=is being sent again")
        dispatch_now(app)
        page.reload()
        page.click("summary")
        page.screenshot(path=str(ARTIFACTS / "webhooks-log.png"), full_page=True)
        first, again = receiver.received
        assert first.event["id"] == again.event["id"] == event_id
        verify_signature(secret, again.headers[HEADER], again.body)
        assert secret not in page.content()
    finally:
        receiver.stop()
