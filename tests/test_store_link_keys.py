"""Events and feed records always belong to a store link that exists (or, an event, to none once
its store is deleted), on both databases. On PostgreSQL triggers keep these keys, not foreign
keys (``migrations/versions/0016_link_triggers.py``): a row pointing at no store link is refused
however it is written (``COPY`` included), a deleted store link takes its feed records with it
and leaves its events without a store, and a deletion and a sync's page at the same moment
never leave a row behind, whichever comes first."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from integration import bulk
from integration.events import Event
from integration.extensions import db
from integration.feeds import sync
from integration.feeds.models import FeedRecord
from integration.models import StoreLink, utcnow

from .test_feeds import ENTITIES, types, wait_until


@pytest.fixture
def app_config(app_config):
    return {**app_config, "SYNC_ENTITIES": ENTITIES}


def _link(name: str = "a") -> int:
    link = StoreLink(consumer_key=f"key-{name}", consumer_secret="s", base_url=f"https://{name}.example/",
                     store_host=f"{name}.example", status="linked")
    db.session.add(link)
    db.session.commit()
    return link.id


def _record(link_id: int, n: int) -> dict:
    return {"store_link_id": link_id, "entity": "products", "record_id": str(n), "fingerprint": "f" * 64,
            "updated_at": None, "seen_at": utcnow()}


def _event(link_id: int, n: int) -> dict:
    return {"public_id": f"evt_{link_id}_{n}", "type": "product.created", "store_link_id": link_id,
            "created_at": utcnow(), "payload": "{}"}


def _write_page(session: Session, link_id: int, start: int = 0) -> None:
    """What a sync's page writes: its feed records and its events, each in one statement."""
    bulk.insert_rows(session, FeedRecord.__table__, [_record(link_id, n) for n in range(start, start + 5)])
    bulk.insert_rows(session, Event.__table__, [_event(link_id, n) for n in range(start, start + 5)])


def _orphans() -> tuple[int, int]:
    """Feed records and events pointing at a store link that does not exist."""
    links = select(StoreLink.id)
    records = db.session.scalar(select(func.count()).select_from(FeedRecord)
                                .where(FeedRecord.store_link_id.not_in(links)))
    events_ = db.session.scalar(select(func.count()).select_from(Event)
                                .where(Event.store_link_id.is_not(None), Event.store_link_id.not_in(links)))
    db.session.commit()
    return records, events_


def _rows(link_id: int) -> tuple[int, int]:
    records = db.session.scalar(select(func.count()).select_from(FeedRecord).where(FeedRecord.store_link_id == link_id))
    events_ = db.session.scalar(select(func.count()).select_from(Event).where(Event.store_link_id == link_id))
    db.session.commit()
    return records, events_


def test_rows_pointing_at_no_store_link_are_refused_however_they_are_written(app):
    with app.app_context():
        link_id = _link()
        missing = link_id + 1000
        for table, row in ((FeedRecord.__table__, _record(missing, 1)), (Event.__table__, _event(missing, 1))):
            with pytest.raises(IntegrityError):  # COPY on PostgreSQL
                bulk.insert_rows(db.session, table, [_record(link_id, 2) if table is FeedRecord.__table__
                                                     else _event(link_id, 2), row])
            db.session.rollback()
            with pytest.raises(IntegrityError):  # an INSERT
                db.session.execute(table.insert(), [row])
            db.session.rollback()
        bulk.insert_rows(db.session, FeedRecord.__table__, [_record(link_id, 3)])
        db.session.commit()
        with pytest.raises(IntegrityError):  # moved to no store link
            db.session.execute(update(FeedRecord).values(store_link_id=missing))
        db.session.rollback()
        assert _rows(link_id) == (1, 0) and _orphans() == (0, 0)


def test_a_deleted_store_link_takes_its_feed_records_and_leaves_its_events_without_a_store(app):
    with app.app_context():
        doomed, kept = _link("a"), _link("b")
        _write_page(db.session, doomed)
        _write_page(db.session, kept)
        db.session.commit()
        db.session.execute(delete(StoreLink).where(StoreLink.id == doomed))  # as the purge of pending links does
        db.session.commit()
        assert _rows(doomed) == (0, 0) and _rows(kept) == (5, 5)
        assert db.session.scalar(select(func.count()).select_from(Event).where(Event.store_link_id.is_(None))) == 5
        assert _orphans() == (0, 0)


def _blocked(session: Session) -> bool:
    """Whether ``session``'s PostgreSQL backend waits for a lock (on SQLite: unknown, True)."""
    if not bulk.postgresql(db.session):
        return True
    pid = session.info["pid"]
    waiting = db.session.scalar(text("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = :pid"),
                                {"pid": pid})
    db.session.commit()
    return bool(waiting)


def _session() -> Session:
    session = Session(db.engine)
    if bulk.postgresql(session):
        session.info["pid"] = session.scalar(text("SELECT pg_backend_pid()"))
    return session


def test_a_store_link_deleted_while_a_page_is_written_takes_the_page_with_it(app):
    with app.app_context():
        link_id = _link()
        page, deleting = _session(), _session()
        try:
            _write_page(page, link_id)  # not committed yet
            thread = threading.Thread(target=lambda: (deleting.execute(delete(StoreLink).where(
                StoreLink.id == link_id)), deleting.commit()))
            thread.start()
            assert wait_until(lambda: _blocked(deleting))  # the deletion waits for the page
            page.commit()
            thread.join(30)
            assert not thread.is_alive()
        finally:
            page.close()
            deleting.close()
        assert db.session.get(StoreLink, link_id) is None
        assert _rows(link_id) == (0, 0) and _orphans() == (0, 0)


def test_a_page_written_while_its_store_link_is_deleted_is_refused(app):
    with app.app_context():
        link_id = _link()
        page, deleting = _session(), _session()
        failures = []

        def write() -> None:
            try:
                _write_page(page, link_id)
                page.commit()
            except IntegrityError as exc:
                failures.append(exc)
                page.rollback()

        try:
            page.scalar(select(func.count()).select_from(StoreLink))  # the page's transaction began before
            deleting.execute(delete(StoreLink).where(StoreLink.id == link_id))  # not committed yet
            thread = threading.Thread(target=write)
            thread.start()
            assert wait_until(lambda: _blocked(page))  # the page waits for the deletion
            deleting.commit()
            thread.join(30)
            assert not thread.is_alive()
        finally:
            page.close()
            deleting.close()
        assert len(failures) == 1
        assert _rows(link_id) == (0, 0) and _orphans() == (0, 0)


def test_a_store_deleted_during_its_first_pass_leaves_no_row_behind(app, linked, sandbox):
    link_id, _ = linked
    app.config.update(SYNC_PAGE_SIZE=5, STORE_CONCURRENCY=2)
    sandbox.state.latency = 0.05
    thread = threading.Thread(target=lambda: _quietly(app, link_id))
    thread.start()
    assert wait_until(lambda: types(app)["product.created"] >= 15)
    with app.app_context():
        db.session.execute(delete(StoreLink).where(StoreLink.id == link_id))
        db.session.commit()
    thread.join(60)
    assert not thread.is_alive()
    with app.app_context():
        assert _rows(link_id) == (0, 0) and _orphans() == (0, 0)
        assert types(app)["product.created"] < 60  # it was deleted mid-pass


def _quietly(app, link_id: int) -> None:
    """The pass, however it ends once its store is gone."""
    with app.app_context():
        try:
            sync.sync(link_id, "products")
        except Exception:  # noqa: BLE001 - its job went with the store
            db.session.rollback()
