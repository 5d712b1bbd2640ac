"""The store list as an operator sees it in a real browser: stores of one address told apart,
unlinked in grey, times in the browser's own zone, named."""

from __future__ import annotations

import datetime as dt

from integration.extensions import db
from integration.models import StoreLink

from .conftest import PASSWORD
from .test_browser import ARTIFACTS, browser, pytestmark  # noqa: F401 - the fixture and the skip rule


def test_the_store_list_tells_stores_apart_and_shows_local_times(app, live_app, admin, browser):  # noqa: F811
    with app.app_context():
        for key, label, status in (("Alpha" + "a" * 23 + "0001", "Shop DE (ERP)", "linked"),
                                   ("Bravo" + "b" * 23 + "0002", None, "linked"),
                                   ("Charl" + "c" * 23 + "0003", None, "unlinked")):
            db.session.add(StoreLink(consumer_key=key, consumer_secret="s" * 32, base_url="http://127.0.0.1:5001/",
                                     store_host="127.0.0.1", status=status, label=label,
                                     linked_at=dt.datetime(2024, 5, 1, 9, 30),
                                     revoked_at=dt.datetime(2024, 5, 2, 8, 0) if status == "unlinked" else None))
        db.session.commit()
    context = browser.new_context(viewport={"width": 1200, "height": 700}, timezone_id="Asia/Kolkata")
    page = context.new_page()
    page.set_default_timeout(15000)
    page.goto(f"{live_app.url}/auth/login")
    page.get_by_label("Email").fill("admin@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("text=Linked stores")
    rows = page.locator("tbody tr")
    texts = [rows.nth(i).inner_text() for i in range(rows.count())]
    assert len(texts) == 3 and len(set(texts)) == 3
    labelled = page.locator("tbody tr", has_text="Shop DE (ERP)")
    assert "Alph…0001" in labelled.inner_text() and "http://127.0.0.1:5001/" in labelled.inner_text()
    # 09:30 UTC is 15:00 in India (UTC+5:30, no summer time); the UTC text stays as the tooltip.
    stamp = labelled.locator("time").first
    assert stamp.inner_text() == "2024-05-01 15:00 GMT+5:30"
    assert stamp.get_attribute("title") == "2024-05-01 09:30 UTC"
    unlinked = page.locator("tbody tr", has_text="Char…0003").locator(".status")
    assert unlinked.inner_text() == "unlinked"
    assert unlinked.evaluate("e => getComputedStyle(e).color") != labelled.locator(".status").evaluate(
        "e => getComputedStyle(e).color")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "store-list.png"), full_page=True)
    # Naming a store from its page.
    page.locator("tbody tr", has_text="Brav…0002").locator("a").click()
    page.get_by_label("Label").fill("Shop AT (PIM)")
    page.get_by_role("button", name="Save label").click()
    page.wait_for_selector("text=Label saved.")
    assert page.inner_text("h1") == "Shop AT (PIM)"
    page.screenshot(path=str(ARTIFACTS / "store-page.png"), full_page=True)
    page.goto(f"{live_app.url}/?q=no-such-store")
    assert "No stores match these filters" in page.inner_text("tbody")
    context.close()
