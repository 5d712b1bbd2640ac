"""Sessions live on the server: logging out, a new password or a disabled account ends them everywhere,
and each account sees and ends its other sessions."""

from __future__ import annotations

import re

import pytest
import requests
from sqlalchemy import func, select

from integration.extensions import db
from integration.models import AuditEvent, User

from .conftest import PASSWORD, csrf_from
from .servers import Gunicorn


def login(client, email="owner@example.com", agent="Firefox/128", addr="10.1.1.1"):
    """Log in as a browser with this address and user agent (and keep them for its next requests)."""
    client.environ_base.update({"REMOTE_ADDR": addr, "HTTP_USER_AGENT": agent})
    page = client.get("/auth/login").get_data(as_text=True)
    response = client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})
    assert response.status_code == 302


def copy_of(app, client):
    """Another browser with the same cookie (and the same address and agent, as a thief would make sure of)."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    thief.environ_base.update(client.environ_base)
    return thief


def logged_in(client) -> bool:
    return client.get("/").status_code == 200


def post_form(client, url, page_url, **data):
    page = client.get(page_url).get_data(as_text=True)
    return client.post(url, data={"csrf_token": csrf_from(page), **data})


def test_a_copied_cookie_stops_working_at_logout(app, client, user):
    login(client)
    thief = copy_of(app, client)
    assert logged_in(thief)
    post_form(client, "/auth/logout", "/")
    assert not logged_in(client) and not logged_in(thief)


def _reset_on_the_web(app, client, admin_client):
    login(admin_client, "admin@example.com", agent="Admin browser")
    with app.app_context():
        user_id = User.by_email("owner@example.com").id
    post_form(admin_client, f"/accounts/{user_id}/password", "/accounts/", password="a brand new password")


def _reset_in_the_cli(app, client, admin_client):
    result = app.test_cli_runner().invoke(args=["users", "reset-password", "owner@example.com"],
                                          input="a brand new password\na brand new password\n")
    assert result.exit_code == 0, result.output


def _disable_and_enable(app, client, admin_client):
    login(admin_client, "admin@example.com", agent="Admin browser")
    with app.app_context():
        user_id = User.by_email("owner@example.com").id
    post_form(admin_client, f"/accounts/{user_id}/toggle", "/accounts/")
    post_form(admin_client, f"/accounts/{user_id}/toggle", "/accounts/")
    with app.app_context():
        assert User.by_email("owner@example.com").active


@pytest.mark.parametrize("change", [_reset_on_the_web, _reset_in_the_cli, _disable_and_enable])
def test_a_new_password_or_a_disabled_account_ends_every_session(app, client, user, admin, change):
    login(client)
    thief = copy_of(app, client)
    assert logged_in(thief)
    change(app, client, app.test_client())
    assert not logged_in(thief) and not logged_in(client)


def test_an_admin_who_resets_their_own_password_stays_logged_in(app, client, admin):
    login(client, "admin@example.com")
    with app.app_context():
        admin_id = User.by_email("admin@example.com").id
    other = app.test_client()
    login(other, "admin@example.com", agent="Other browser")
    post_form(client, f"/accounts/{admin_id}/password", "/accounts/", password="a brand new password")
    assert logged_in(client) and not logged_in(other)


def test_an_account_sees_its_sessions_and_ends_another_one(app, client, user, admin):
    login(client, agent="Firefox/128 on the office desktop", addr="10.1.1.1")
    phone = app.test_client()
    login(phone, agent="Mobile Safari \x1b[2J", addr="10.9.9.9")
    page = client.get("/accounts/me").get_data(as_text=True)
    assert "Firefox/128 on the office desktop" in page and "10.1.1.1" in page
    assert "Mobile Safari \ufffd[2J" in page and "10.9.9.9" in page  # stored without the escape character
    rows = re.findall(r"<tr data-session=\"([0-9a-f]{64})\"(?: class=\"(current)\")?>", page)
    assert len(rows) == 2 and [c for _, c in rows].count("current") == 1
    other = next(sid for sid, current in rows if not current)

    # Somebody else's session cannot be ended from this account.
    admin_client = app.test_client()
    login(admin_client, "admin@example.com")
    assert post_form(admin_client, f"/accounts/me/sessions/{other}/end", "/accounts/me").status_code == 404
    assert logged_in(phone)

    response = post_form(client, f"/accounts/me/sessions/{other}/end", "/accounts/me")
    assert response.status_code == 302
    assert not logged_in(phone) and logged_in(client)
    page = client.get("/accounts/me").get_data(as_text=True)
    assert "Mobile Safari" not in page and len(re.findall(r"<tr data-session=", page)) == 1
    with app.app_context():
        assert "session.ended" in db.session.scalars(select(AuditEvent.action)).all()


def test_sessions_end_on_every_worker(app_config, user):
    """Nothing in process memory: a cookie ended on one worker is refused by all of them."""
    from .test_workers import env_for

    server = Gunicorn(env_for(app_config), workers=3, threads=2)
    try:
        browser = requests.Session()
        page = browser.get(server.url + "/auth/login", timeout=10).text
        assert browser.post(server.url + "/auth/login", timeout=10, allow_redirects=False, data={
            "csrf_token": csrf_from(page), "email": "owner@example.com", "password": PASSWORD}).status_code == 302
        cookie = browser.cookies["session"]

        def answers() -> list[int]:  # a new connection each time: the requests spread over the workers
            return [requests.get(server.url + "/", cookies={"session": cookie}, allow_redirects=False,
                                 timeout=10).status_code for _ in range(9)]

        assert answers() == [200] * 9
        page = browser.get(server.url + "/", timeout=10).text
        browser.post(server.url + "/auth/logout", data={"csrf_token": csrf_from(page)}, timeout=10)
        assert answers() == [302] * 9
    finally:
        server.stop()


def test_an_idle_session_ends_and_finished_ones_are_cleared_at_the_next_login(app, client, user):
    import datetime as dt

    from integration.models import UserSession, utcnow

    login(client)
    with app.app_context():
        first = db.session.scalars(select(UserSession)).one()
        first.last_seen_at = utcnow() - dt.timedelta(minutes=5)
        first_id = first.id
        db.session.commit()
    assert logged_in(client)
    with app.app_context():  # used again: "last seen" moved
        first = db.session.get(UserSession, first_id)
        assert utcnow() - first.last_seen_at < dt.timedelta(minutes=1)
        first.last_seen_at = utcnow() - dt.timedelta(days=15)
        db.session.commit()
    assert not logged_in(client)  # two weeks unused: over
    login(client)
    with app.app_context():
        assert db.session.get(UserSession, first_id) is None
        assert db.session.scalar(select(func.count()).select_from(UserSession)) == 1
