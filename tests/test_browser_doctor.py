"""A real browser: an activation attempted after Magento's window. The pop-up counts down, says the
time ran out and to Activate/Reauthorize again, never asks the store; the operator's doctor shows
each step and the fix; Activate in the sandbox then restarts the window and links."""

from __future__ import annotations

import re

from .conftest import PASSWORD
from .test_browser import ARTIFACTS, _shot, browser, login, page, pytestmark  # noqa: F401 - fixtures and marks

WINDOW = 9  # seconds; the app counts doctor.MARGIN (2 s) as gone before the callback reached it


def test_an_activation_after_the_window_says_expired_and_the_doctor_shows_each_step(
        app, live_app, sandbox, user, admin, page):
    app.config["ACTIVATION_WINDOW"] = WINDOW
    sandbox.state.consumer_expiry = WINDOW  # the store's oauth/consumer/expiration_period
    page.goto(f"{sandbox.url}/admin/integrations")
    with page.expect_popup() as popup_info:
        page.click("tr[data-integration='1'] button.activate")
    popup = popup_info.value
    popup.wait_for_load_state()
    clock = popup.locator(".window-clock")
    assert re.fullmatch(r"0:0[0-7]", clock.inner_text().strip()), clock.inner_text()
    assert "more to finish linking" in popup.locator(".window-left").inner_text()
    _shot(popup, "doctor-popup-countdown")

    # The admin is slow: the countdown reaches zero and the notice replaces it, without a reload.
    popup.wait_for_selector(".window-expired", state="visible", timeout=WINDOW * 1000 + 5000)
    assert popup.locator(".window-left").is_hidden()
    notice = popup.locator(".window-expired").inner_text()
    assert "The time to link has run out" in notice and "Reauthorize" in notice and "Activate" in notice
    _shot(popup, "doctor-popup-countdown-expired")

    # Trying anyway: refused by us before the store is asked.
    popup.fill("input[name=email]", "owner@example.com")
    popup.fill("input[name=password]", PASSWORD)
    popup.click("input[type=submit]")
    popup.wait_for_selector("h1:has-text('The time to link has run out')")
    text = popup.inner_text("main")
    assert "only within a few minutes of clicking Activate or Reauthorize" in text
    assert "click Activate on this integration (Reauthorize, if its row shows that instead)" in text
    assert sandbox.state.counters.request_token_calls == 0
    _shot(popup, "doctor-popup-expired")
    # Magento's grid reloads itself once the pop-up is closed: wait for that, or it races our next page.
    with page.expect_navigation():
        popup.close()

    # The operator opens the doctor from the store list (the failed activation links to it).
    login(page, live_app.url, "admin@example.com")
    page.wait_for_selector("text=Linked stores")
    row = page.locator("tbody tr", has_text=sandbox.url)
    assert row.locator(".status-failed").count() == 1
    row.get_by_role("link", name="doctor").click()
    page.wait_for_selector("h1:has-text('Activation doctor')")
    assert page.inner_text("#cause") == "Magento's activation window had passed"
    steps = page.locator("ol.timeline > li")
    assert [(steps.nth(i).get_attribute("data-step"), steps.nth(i).get_attribute("data-outcome"))
            for i in range(steps.count())] == [
        ("callback", "ok"), ("popup", "ok"), ("login", "ok"), ("request_token", "skipped")]
    timeline = page.inner_text("ol.timeline")
    assert "Callback received" in timeline and "from 127.0.0.1" in timeline and " ms" in timeline
    assert f"left of Magento's {WINDOW} s window" in timeline and "as owner@example.com" in timeline
    assert "not tried: the callback arrived more than" in timeline
    assert "Fix:" in page.inner_text(".diagnosis")
    _shot(page, "doctor-expired")

    # Magento's grid reads Activate (the integration never became Active): it restarts the window.
    sandbox_page = page.context.new_page()
    sandbox_page.goto(f"{sandbox.url}/admin/integrations")
    assert sandbox_page.inner_text("tr[data-integration='1'] button.activate").strip() == "Activate"
    with sandbox_page.expect_popup() as popup_info:
        sandbox_page.click("tr[data-integration='1'] button.activate")
    again = popup_info.value
    again.wait_for_load_state()
    assert again.locator(".window-left").is_visible()
    with again.expect_event("close", timeout=20000):
        again.click("input[type=submit]")  # signed in already (the same browser): confirm
    sandbox_page.wait_for_selector("tr[data-integration='1'] .status-Active")

    page.reload()
    assert page.locator("#cause").count() == 0
    assert [(steps.nth(i).get_attribute("data-step"), steps.nth(i).get_attribute("data-outcome"))
            for i in range(4, steps.count())] == [
        ("callback", "ok"), ("popup", "ok"), ("login", "ok"), ("request_token", "ok"), ("access_token", "ok")]
    assert "Nothing wrong in the last activation" in page.inner_text(".diagnosis")
    _shot(page, "doctor-after-activate")
