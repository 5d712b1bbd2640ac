"""Telling stores apart in the list: label, id and masked consumer key; unlinked is its own
status; an empty filter result says so; times name their zone."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import create_engine, select, text

from integration.extensions import db
from integration.models import AuditEvent, StoreLink

from .conftest import PASSWORD, csrf_from


def login(client, email="admin@example.com"):
    page = client.get("/auth/login").get_data(as_text=True)
    return client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})


def three_of_one_store(app, **extra) -> list[int]:
    """Three integrations of the same store, as a sandbox or a test shop makes them."""
    ids = []
    with app.app_context():
        for key in ("Alpha" + "a" * 23 + "0001", "Bravo" + "b" * 23 + "0002", "Charl" + "c" * 23 + "0003"):
            link = StoreLink(consumer_key=key, consumer_secret="s" * 32, base_url="http://127.0.0.1:5001/",
                             store_host="127.0.0.1", status="linked", linked_at=dt.datetime(2024, 5, 1, 9, 30),
                             **extra)
            db.session.add(link)
            db.session.flush()
            ids.append(link.id)
        db.session.commit()
    return ids


def rows(page: str) -> list[str]:
    return re.findall(r"<tr>\s*<td><a href=\"/stores/\d+\">.*?</tr>", page, re.S)


def test_rows_of_one_store_are_told_apart_by_id_and_key(app, client, admin):
    ids = three_of_one_store(app)
    login(client)
    found = rows(client.get("/").get_data(as_text=True))
    assert len(found) == 3 and len(set(found)) == 3
    for link_id, key in zip(ids, ("Alph…0001", "Brav…0002", "Char…0003")):
        assert any(f"#{link_id} · key <code>{key}</code>" in r for r in found)
    assert all("s" * 8 not in r for r in found)  # the secret is never near the page


def test_a_label_set_on_the_store_page_names_the_store_in_the_list(app, client, admin):
    ids = three_of_one_store(app)
    login(client)
    page = client.get(f"/stores/{ids[1]}").get_data(as_text=True)
    response = client.post(f"/stores/{ids[1]}/label", data={"csrf_token": csrf_from(page),
                                                            "label": "  Staging   ERP  "})
    assert response.status_code == 302
    listed = client.get("/").get_data(as_text=True)
    assert f'<a href="/stores/{ids[1]}">Staging ERP</a>' in listed
    assert "<h1>Staging ERP</h1>" in client.get(f"/stores/{ids[1]}").get_data(as_text=True)
    assert f'<a href="/stores/{ids[1]}">' in client.get("/?q=staging").get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "store.labelled")).all() \
            == ["Staging ERP"]
    client.post(f"/stores/{ids[1]}/label", data={"csrf_token": csrf_from(page), "label": ""})
    assert "Staging ERP" not in rows(client.get("/").get_data(as_text=True))[0]


@pytest.mark.parametrize("label, reason", [("x" * 101, "at most 100"), ("ERP\u202e", "control or formatting"),
                                           ("ERP\x1b[31m", "control or formatting")])
def test_a_bad_label_is_refused_at_the_field(app, client, admin, label, reason):
    ids = three_of_one_store(app)
    login(client)
    page = client.get(f"/stores/{ids[0]}").get_data(as_text=True)
    response = client.post(f"/stores/{ids[0]}/label", data={"csrf_token": csrf_from(page), "label": label})
    assert response.status_code == 400 and reason in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(StoreLink, ids[0]).label is None


def test_a_member_cannot_label_someone_elses_store(app, client, user):
    ids = three_of_one_store(app)
    login(client, "owner@example.com")
    page = client.get("/").get_data(as_text=True)
    assert client.post(f"/stores/{ids[0]}/label", data={"csrf_token": csrf_from(page), "label": "x"}).status_code \
        == 404


def test_an_unlinked_store_shows_as_unlinked_without_an_error(app, client, linked, user):
    link_id, _ = linked
    login(client, "owner@example.com")
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    client.post(f"/stores/{link_id}/unlink", data={"csrf_token": csrf_from(page)})
    listed = client.get("/").get_data(as_text=True)
    assert 'class="status status-unlinked">unlinked<' in listed and "status-revoked" not in listed
    assert 'class="error-cell"></td>' in listed
    store = client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert "Unlinked at" in store and "Last error" not in store
    assert 'status-unlinked' in client.get("/?status=unlinked").get_data(as_text=True)


def test_a_filter_without_a_match_says_so(app, client, admin):
    three_of_one_store(app)
    login(client)
    for url in ("/?status=failed", "/?q=nothing-like-this", "/?status=linked&q=zzz"):
        page = client.get(url).get_data(as_text=True)
        assert "No stores match these filters" in page and "No stores yet" not in page


def test_with_no_store_at_all_the_list_says_how_to_start(client, admin):
    login(client)
    page = client.get("/").get_data(as_text=True)
    assert "No stores yet" in page and "/magento/callback" in page


def test_times_say_they_are_utc(app, client, admin, linked):
    link_id, _ = linked
    three_of_one_store(app)
    login(client)
    listed = client.get("/").get_data(as_text=True)
    assert '<time datetime="2024-05-01T09:30:00Z">2024-05-01 09:30 UTC</time>' in listed
    store = client.get(f"/stores/{link_id}").get_data(as_text=True)
    stamps = re.findall(r"<time datetime=\"[^\"]+Z\">[^<]+ UTC</time>", store)
    assert len(stamps) >= 4  # linked, last contact, the activation, the audit entries
    assert not re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?</td>", store)


def test_the_migration_turns_unlinked_revocations_into_unlinked(tmp_path):
    """Stores unlinked before this version were marked revoked with the error 'unlinked'."""
    from flask_migrate import downgrade, upgrade

    from integration import create_app

    from .conftest import _config

    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    app = create_app(_config(url, tmp_path))
    with app.app_context():
        upgrade(revision="0002")
        with db.engine.begin() as conn:
            for key, status, error in (("a" * 32, "revoked", "unlinked"), ("b" * 32, "revoked", "token revoked"),
                                       ("c" * 32, "linked", None)):
                conn.execute(text(
                    "INSERT INTO store_links (consumer_key, consumer_secret, base_url, store_host, status, last_error,"
                    " created_at, updated_at) VALUES (:k, 'x', 'https://s.example/', 's.example', :s, :e,"
                    " '2024-01-01', '2024-01-01')"), {"k": key, "s": status, "e": error})
        upgrade()
        got = db.session.execute(text("SELECT consumer_key, status, last_error FROM store_links ORDER BY 1")).all()
        assert [tuple(r) for r in got] == [("a" * 32, "unlinked", None), ("b" * 32, "revoked", "token revoked"),
                                           ("c" * 32, "linked", None)]
        downgrade(revision="0002")
        got = db.session.execute(text("SELECT status, last_error FROM store_links ORDER BY consumer_key")).all()
        assert [tuple(r) for r in got][0] == ("revoked", "unlinked")
        db.engine.dispose()
    create_engine(url).dispose()
