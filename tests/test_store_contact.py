"""What a call to a linked store leaves behind, from the web and the CLI alike: the store's
health changes only when the link itself fails, and every call is audited once."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from integration.extensions import db
from integration.models import AuditEvent, StoreLink

from .conftest import PASSWORD, csrf_from


def login(client, email="admin@example.com"):
    page = client.get("/auth/login").get_data(as_text=True)
    return client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})


def console(client, link_id, method="GET", path="products", **fields):
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    return client.post(f"/stores/{link_id}/console", data={
        "csrf_token": csrf_from(page), "method": method, "path": path, "store_code": "default", **fields})


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["stores", *map(str, args)])


def health(app, link_id):
    with app.app_context():
        link = db.session.get(StoreLink, link_id)
        return link.status, link.last_error, link.last_contact_at


def events(app, link_id, *actions):
    with app.app_context():
        return db.session.execute(
            select(AuditEvent.action, AuditEvent.detail, AuditEvent.remote_addr, AuditEvent.user_id)
            .where(AuditEvent.store_link_id == link_id, AuditEvent.action.in_(actions)).order_by(AuditEvent.id)
        ).all()


@pytest.mark.parametrize("path", ["products/does-not-exist", "nothing/here"])
def test_a_console_mistake_leaves_the_stores_health_alone(app, client, linked, admin, path):
    link_id, _ = linked
    before = health(app, link_id)
    login(client)
    page = console(client, link_id, path=path).get_data(as_text=True)
    assert "HTTP 404" in page
    assert health(app, link_id) == before == ("linked", None, before[2])
    assert "Last error" not in client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "Last error" in client.get("/").get_data(as_text=True)  # the column header only
    assert 'class="error-cell"></td>' in client.get("/").get_data(as_text=True)


def test_a_cli_call_mistake_and_a_refused_body_leave_the_health_alone(app, linked):
    link_id, _ = linked
    before = health(app, link_id)
    assert cli(app, "call", link_id, "GET", "products/NOPE").exit_code == 1
    assert cli(app, "call", link_id, "POST", "products", "--data", '{"product": {}}').exit_code == 1
    assert health(app, link_id) == before


def test_a_resource_the_integration_was_not_given_is_not_a_broken_link(app, client, linked, admin, sandbox):
    link_id, integration = linked
    integration.resources = ("Magento_Sales::sales",)
    login(client)
    page = console(client, link_id).get_data(as_text=True)
    assert "HTTP 401" in page
    assert health(app, link_id)[:2] == ("linked", None)


def test_a_deleted_integration_seen_from_the_console_marks_the_store_revoked(app, client, linked, admin, sandbox):
    link_id, integration = linked
    sandbox.state.integrations.pop(integration.id)
    login(client)
    console(client, link_id)
    status, error, _ = health(app, link_id)
    assert status == "revoked" and "does not exist" in error


def test_an_unreachable_store_seen_from_the_cli_is_recorded(app, linked, sandbox):
    link_id, _ = linked
    sandbox.stop()
    assert cli(app, "call", link_id, "GET", "products").exit_code == 1
    status, error, _ = health(app, link_id)
    assert status == "linked" and error


def test_a_failed_test_connection_is_recorded_whatever_the_failure(app, client, linked, admin, sandbox):
    """The test call exists to find out: any failure of it is the store's last error."""
    link_id, integration = linked
    sandbox.state.failures.append(["/store/storeConfigs", 404, 1])
    login(client)
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    client.post(f"/stores/{link_id}/test", data={"csrf_token": csrf_from(page)})
    assert health(app, link_id)[1]
    client.post(f"/stores/{link_id}/test", data={"csrf_token": csrf_from(page)})
    assert health(app, link_id)[1] is None  # and a passing test clears it


def test_cli_check_call_and_export_are_audited_like_the_web_console(app, linked, tmp_path):
    link_id, _ = linked
    assert cli(app, "check", link_id).exit_code == 0
    assert cli(app, "call", link_id, "GET", "products", "--param", "searchCriteria[pageSize]=1").exit_code == 0
    assert cli(app, "call", link_id, "get", "products/NOPE").exit_code == 1
    assert cli(app, "export", link_id, "orders", "--output", tmp_path / "o.jsonl").exit_code == 0
    assert cli(app, "export", link_id, "products", "--since", "2001-01-01", "--output", tmp_path / "p.jsonl",
               "--page-size", "50").exit_code == 0
    got = events(app, link_id, "store.tested", "console.call", "store.exported")
    assert [(a, d, r, u) for a, d, r, u in got] == [
        ("store.tested", "ok", "command line", None),
        ("console.call", "GET products: ok", "command line", None),
        ("console.call", "GET products/NOPE: failed: The product that was requested doesn't exist. "
                         "Verify the product and try again.", "command line", None),
        ("store.exported", "orders: ok", "command line", None),
        ("store.exported", "products since 2001-01-01: ok", "command line", None),
    ]


def test_web_test_and_console_calls_are_audited_once_each(app, client, linked, admin):
    link_id, _ = linked
    login(client)
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    client.post(f"/stores/{link_id}/test", data={"csrf_token": csrf_from(page)})
    console(client, link_id)
    console(client, link_id, path="products", params="a=1\na=2")  # refused before anything is sent
    got = events(app, link_id, "store.tested", "console.call")
    assert [(a, d, r) for a, d, r, _ in got] == [
        ("store.tested", "ok", "127.0.0.1"), ("console.call", "GET products: ok", "127.0.0.1"),
        ("console.call", "GET products: stopped (ValueError)", "127.0.0.1")]
    assert {u for *_, u in got} == {admin}


def test_an_interrupted_export_is_still_on_the_record(app, linked, tmp_path, monkeypatch):
    from integration.magento import export as export_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "export", interrupted)
    link_id, _ = linked
    cli(app, "export", link_id, "products", "--output", tmp_path / "p.jsonl")
    assert [d for _, d, *_ in events(app, link_id, "store.exported")] == ["products: stopped (KeyboardInterrupt)"]


def test_two_calls_that_find_the_token_revoked_at_once_announce_it_once(app, linked, sandbox):
    """A proxied call and a sync (two processes) both find the integration deleted: one store.revoked."""
    import threading

    from integration import events as event_log
    from integration import stores
    from integration.magento import errors

    link_id, integration = linked
    sandbox.state.integrations.pop(integration.id)  # deleted in Magento's admin
    loaded = threading.Barrier(2)
    outcomes = []

    def call():
        with app.app_context():
            link = db.session.get(StoreLink, link_id)
            assert link.status == StoreLink.LINKED
            loaded.wait()  # both have read "linked" before either call fails
            try:
                with stores.contact(link, "console.call", "GET store/storeConfigs") as client:
                    client.get("store/storeConfigs")
            except errors.TokenRevoked:
                outcomes.append("revoked")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=call) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert outcomes == ["revoked", "revoked"]
    with app.app_context():
        announced = db.session.scalars(select(event_log.Event.type).where(event_log.Event.store_link_id == link_id)
                                       .where(event_log.Event.type == event_log.STORE_REVOKED)).all()
        audited = db.session.scalars(select(AuditEvent.action).where(AuditEvent.action == "store.revoked")).all()
        assert len(announced) == 1 and len(audited) == 1
        assert db.session.get(StoreLink, link_id).status == StoreLink.REVOKED
