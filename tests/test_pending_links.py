"""Anyone can post a callback: links nobody claims stay out of the store list and expire, and
what such a callback says is shown as inert text."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from integration import create_app
from integration.extensions import db
from integration.models import Activation, AuditEvent, StoreLink, utcnow

from .conftest import PASSWORD, csrf_from


def login(client, email="admin@example.com"):
    page = client.get("/auth/login").get_data(as_text=True)
    return client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})


def callback(client, n: int, base_url: str = "http://127.0.0.1:8080/"):
    return client.post("/magento/callback", data={
        "oauth_consumer_key": f"k{n:031d}", "oauth_consumer_secret": "s" * 32, "store_base_url": base_url,
        "oauth_verifier": "v" * 32})


def age(app, n: int, hours: float) -> None:
    """Make callback ``n``'s link look ``hours`` old."""
    with app.app_context():
        db.session.execute(update(StoreLink).where(StoreLink.consumer_key == f"k{n:031d}")
                           .values(updated_at=utcnow() - dt.timedelta(hours=hours)))
        db.session.commit()


def count(app, model=StoreLink) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def test_a_flood_of_callbacks_stays_out_of_the_store_list(app, client, admin):
    with app.app_context():
        db.session.add(StoreLink(consumer_key="r" * 32, consumer_secret="s" * 32, base_url="https://real.example/",
                                 store_host="real.example", status="linked"))
        db.session.commit()
    for n in range(30):
        assert callback(client, n).status_code == 200
    login(client)
    page = client.get("/").get_data(as_text=True)
    assert "real.example" in page and "127.0.0.1:8080" not in page
    assert 'class="count">1<' in page and "30 callbacks nobody has claimed yet" in page
    pending = client.get("/?status=pending").get_data(as_text=True)
    assert pending.count("http://127.0.0.1:8080/") == 30 and "real.example" not in pending


@pytest.mark.parametrize("owned", [True, False])  # False: its owner's account was deleted since
def test_a_store_being_reauthorized_stays_in_the_list(app, client, admin, user, owned):
    """Pending, but a store that was linked before: not an unclaimed callback, and never purged."""
    with app.app_context():
        db.session.add(StoreLink(consumer_key="r" * 32, consumer_secret="s" * 32, base_url="https://real.example/",
                                 store_host="real.example", status="pending", owner_id=user if owned else None,
                                 linked_at=utcnow() - dt.timedelta(days=30),
                                 updated_at=utcnow() - dt.timedelta(days=3)))
        db.session.commit()
    callback(client, 1)
    login(client)
    assert "real.example" in client.get("/").get_data(as_text=True)
    assert count(app) == 2


def test_unclaimed_links_expire_and_the_next_callbacks_delete_them(app, client, admin):
    for n in range(3):
        callback(client, n)
    age(app, 0, 25)
    age(app, 1, 23)
    login(client)
    pending = client.get("/?status=pending").get_data(as_text=True)
    assert "k0000" not in pending and pending.count("http://127.0.0.1:8080/") == 2
    assert "2 callbacks nobody has claimed yet" in client.get("/").get_data(as_text=True)
    with app.app_context():
        expired_id = StoreLink.by_consumer_key(f"k{0:031d}").id
    assert client.get(f"/stores/{expired_id}").status_code == 404
    assert count(app) == 3 and count(app, Activation) == 3
    callback(client, 9)  # any callback deletes expired ones, with their activations
    assert count(app) == 3 and count(app, Activation) == 3
    with app.app_context():
        assert StoreLink.by_consumer_key(f"k{0:031d}") is None
        # The audit trail keeps the callback that created it.
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "callback.received")) == 4


@pytest.mark.parametrize("verifier", ["v" * 32, "w" * 32])  # Magento retrying, or a new Activate
def test_another_callback_for_an_unclaimed_link_restarts_its_expiry(app_config, client, verifier):
    callback(client, 0)
    app = create_app({**app_config, "PENDING_EXPIRY_HOURS": 2})
    age(app, 0, 1.5)
    assert app.test_client().post("/magento/callback", data={
        "oauth_consumer_key": f"k{0:031d}", "oauth_consumer_secret": "s" * 32,
        "store_base_url": "http://127.0.0.1:8080/", "oauth_verifier": verifier}).status_code == 200
    stricter = create_app({**app_config, "PENDING_EXPIRY_HOURS": 1})
    result = stricter.test_cli_runner().invoke(args=["stores", "purge-pending"])
    assert "deleted 0 " in result.output and count(app) == 1


def test_purge_pending_command_deletes_expired_unclaimed_links(app, client, user):
    for n in range(4):
        callback(client, n)
    with app.app_context():  # an old link that someone owns is never purged
        link = StoreLink.by_consumer_key(f"k{1:031d}")
        link.owner_id = user
        db.session.commit()
    age(app, 0, 30)
    age(app, 1, 30)
    result = app.test_cli_runner().invoke(args=["stores", "purge-pending"])
    assert result.exit_code == 0 and "deleted 1 expired unclaimed store links" in result.output
    assert count(app) == 3


def test_the_expiry_is_configurable(app_config, client):
    app = create_app({**app_config, "PENDING_EXPIRY_HOURS": 0.5})
    c = app.test_client()
    callback(c, 0)
    age(app, 0, 0.6)
    callback(c, 1)
    assert count(app) == 1


def test_a_callback_with_bidi_or_control_characters_in_the_store_url_is_refused(app, client):
    for url in ("http://127.0.0.1:8080/\u202egnp.exe/", "http://127.0.0.1:8080/a\u2066b/",
                "http://127.0.0.1:8080/\u009b31m/", "http://127.0.0.1:8080/a\u00a0b/"):
        response = callback(client, 0, url)
        assert response.status_code == 400 and "control or formatting characters" in response.get_data(as_text=True)
    assert count(app) == 0


def test_a_store_url_from_a_callback_is_shown_escaped(app, client, admin):
    assert callback(client, 0, "http://127.0.0.1:8080/<script>alert(1)</script>/").status_code == 200
    login(client)
    for url in ("/?status=pending", "/audit"):
        page = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("char", ["\u202e", "\u2067", "\u200f", "\x1b"])
def test_bidi_and_control_characters_stored_earlier_never_reach_a_page(app, client, admin, char):
    """Rows stored before the callback refused them, or Magento's own messages."""
    with app.app_context():
        link = StoreLink(consumer_key="r" * 32, consumer_secret="s" * 32, base_url="https://shop.example/",
                         store_host="shop.example", status="failed")
        db.session.add(link)
        db.session.commit()
        link_id = link.id
        # Written past the ORM, whose listener would neutralise them now: rows from before that rule.
        db.session.execute(StoreLink.__table__.update().where(StoreLink.__table__.c.id == link_id).values(
            base_url=f"https://shop.example/{char}gpj/", last_error=f"oops{char}"))
        db.session.commit()
    login(client)
    for url in ("/", f"/stores/{link_id}", "/?status=failed"):
        page = client.get(url).get_data(as_text=True)
        assert char not in page and f"[U+{ord(char):04X}]gpj" in page
