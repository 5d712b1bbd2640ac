"""What happened to a store (linked, reauthorized, revoked, unlinked, failing), recorded in
the same transaction as the change itself: the outbox for webhooks and the events feed.

    events.record(db.session, "store.linked", link)   # just before the change's commit

Recording takes a transaction-level lock on PostgreSQL (SQLite serialises writers anyway),
so events commit in the order of their ids and a reader of the feed that has seen event N
never finds an N-1 appearing later. Call it last, right before the commit.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import String, Text, delete, event as sa_event, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from . import bulk, json_text
from .extensions import db
from .models import StoreLink, User, store_link_key, utcnow

STORE_LINKED = "store.linked"
STORE_REAUTHORIZED = "store.reauthorized"
STORE_REVOKED = "store.revoked"
STORE_UNLINKED = "store.unlinked"
STORE_CHECK_FAILED = "store.check_failed"
#: Changes a store's change feed found (see ``integration.feeds``).
RECORD_TYPES = ("product.created", "product.updated", "product.deleted", "order.created", "order.updated",
                "customer.created", "customer.updated", "customer.deleted", "stock.updated")
TYPES = (STORE_LINKED, STORE_REAUTHORIZED, STORE_REVOKED, STORE_UNLINKED, STORE_CHECK_FAILED, *RECORD_TYPES)
#: A record larger than this (JSON bytes) is sent as a reference to fetch instead.
RECORD_MAX_BYTES = 64 * 1024

#: Any constant works; it only has to be the same in every process.
_ORDER_LOCK = 0x6D69635F657674  # "mic_evt"
#: Set on a session that recorded an event, so its commit wakes the webhook dispatcher.
_WAKE = "integration.events.wake"


class UnknownEventType(LookupError):
    """Not one of ``TYPES``."""


class NoSuchEvent(LookupError):
    """A feed cursor that is not the id of an event (a typo, or an event of another install)."""


class Event(db.Model):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)  # the feed's order
    public_id: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(40))
    store_link_id: Mapped[int | None] = mapped_column(store_link_key("SET NULL"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    #: The JSON body exactly as delivered, so a replay sends the same bytes.
    payload: Mapped[str] = mapped_column(Text)

    store_link: Mapped[StoreLink | None] = relationship()


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def store_summary(link: StoreLink) -> dict:
    """What an event says about a store. Never a credential."""
    return {"id": link.id, "base_url": link.base_url, "status": link.status,
            "signature_profile": link.signature_profile, "magento_version": link.magento_version}


def record(session: Session, type_: str, link: StoreLink, *, reason: str | None = None,
           data: dict | None = None, endpoints: list | None = None) -> Event:
    """Add the event and one pending delivery per subscribed webhook endpoint to ``session``'s
    transaction; the caller commits. ``reason``: why (for revoked/check_failed); ``data``:
    more members of the body (a change feed's record events go through ``record_many``);
    ``endpoints``: the webhook endpoints, when the caller records many events in one
    transaction (loaded once, and the events are then inserted together rather than one flush
    per event)."""
    from .webhooks.models import WebhookDelivery, WebhookEndpoint, retry_window

    if type_ not in TYPES:
        raise UnknownEventType(f"{type_!r} is not one of {', '.join(TYPES)}")
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ORDER_LOCK})
    if link.id is None:
        session.flush()
    now = utcnow()
    body = {"id": new_event_id(), "type": type_, "created_at": now.isoformat(timespec="seconds") + "Z",
            "store": store_summary(link)}
    if reason:
        body["reason"] = reason[:500]
    if data:
        body.update(data)
    event = Event(public_id=body["id"], type=type_, store_link_id=link.id, created_at=now,
                  payload=json.dumps(body, separators=(",", ":"), ensure_ascii=False))
    session.add(event)
    for endpoint in endpoints if endpoints is not None else session.scalars(select(WebhookEndpoint)):
        if endpoint.wants(type_):
            session.add(WebhookDelivery(event=event, endpoint_id=endpoint.id, next_attempt_at=now,
                                        created_at=now, expires_at=now + retry_window()))
            session.info[_WAKE] = True
    return event


@dataclass(slots=True)
class RecordChange:
    """One record event of a change feed: ``record`` None for a deletion; ``rest_path`` (or a
    function giving it, worked out only for a record too large to send) is where the record
    is fetched when the event carries a reference instead."""

    type: str
    entity: str
    record_id: str
    record: dict | None
    rest_path: str | Callable[[], str] = ""


def record_many(session: Session, store: dict, changes: list[RecordChange], *, endpoints: list,
                max_bytes: int = RECORD_MAX_BYTES) -> int:
    """``record`` for a batch of record events of one store (a page of a change feed): one
    ordering lock, one INSERT of the events, one of their deliveries; the caller commits.
    ``store``: ``store_summary`` of the store. A record whose JSON is over ``max_bytes`` is sent
    as ``record_ref`` (``rest_path`` and its size) instead. Returns how many were recorded."""
    from .webhooks.models import WebhookDelivery, retry_window

    if not changes:
        return 0
    unknown = {change.type for change in changes} - set(TYPES)
    if unknown:
        raise UnknownEventType(f"{sorted(unknown)!r} are not in {', '.join(TYPES)}")
    # Taken before anything of the batch is written and held to the commit, as ``record`` does.
    if bulk.postgresql(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ORDER_LOCK})
    now = utcnow()
    stamp = now.isoformat(timespec="seconds") + "Z"
    # The body is {"id", "type", "created_at", "store", "entity", "record_id", then "record" or
    # "record_ref"}, as ``record`` writes it: the record is serialised once, both to weigh it and
    # as the body's last member.
    store_json = json_text.compact(store)
    ids = secrets.token_hex(12 * len(changes))  # one read of the system's randomness a batch
    rows = []
    for n, change in enumerate(changes):
        public_id = "evt_" + ids[24 * n:24 * n + 24]
        head = (f'{{"id":"{public_id}","type":"{change.type}","created_at":"{stamp}","store":{store_json},'
                f'"entity":{json_text.compact(change.entity)},"record_id":{json_text.compact(change.record_id)}')
        if change.record is None:
            payload = head + "}"
        else:
            record_json = json_text.compact_utf8(change.record)
            size = len(record_json)  # UTF-8 bytes
            if size <= max_bytes:
                payload = f'{head},"record":{record_json.decode()}}}'
            else:
                path = change.rest_path() if callable(change.rest_path) else change.rest_path
                payload = f'{head},"record_ref":{json_text.compact({"rest_path": path, "bytes": size})}}}'
        rows.append({"public_id": public_id, "type": change.type, "store_link_id": store["id"], "created_at": now,
                     "payload": payload})
    table = Event.__table__
    bulk.insert_rows(session, table, rows)
    wanted = [(row["public_id"], [e.id for e in endpoints if e.wants(row["type"])]) for row in rows]
    if any(endpoint_ids for _, endpoint_ids in wanted):
        event_ids = dict(session.execute(select(table.c.public_id, table.c.id).where(
            bulk.among(table.c.public_id, [public_id for public_id, endpoint_ids in wanted if endpoint_ids],
                       session))).all())
        expires = now + retry_window()
        bulk.insert_rows(session, WebhookDelivery.__table__, [
            {"event_id": event_ids[public_id], "endpoint_id": endpoint_id, "state": WebhookDelivery.PENDING,
             "attempts": 0, "next_attempt_at": now, "created_at": now, "expires_at": expires}
            for public_id, endpoint_ids in wanted for endpoint_id in endpoint_ids])
        session.info[_WAKE] = True  # as in ``record``: with no delivery, the dispatcher has nothing new
    return len(rows)


def events_after(after_id: str | None, *, user: User | None, limit: int = 100) -> list[Event]:
    """Events after the one with public id ``after_id`` (from the start when ``None``), oldest
    first, at most ``limit``: all of them for admins and for ``None`` (the deployment itself:
    the CLI, a service key without an owner), those of their own stores for members.
    ``NoSuchEvent`` if ``after_id`` is not an event id."""
    query = select(Event).order_by(Event.id).limit(max(1, min(limit, 1000)))
    if after_id:
        position = db.session.scalar(select(Event.id).where(Event.public_id == after_id))
        if position is None:
            raise NoSuchEvent(f"no event {after_id!r}")
        query = query.where(Event.id > position)
    if user is not None and not user.is_admin:
        query = query.join(StoreLink, StoreLink.id == Event.store_link_id).where(StoreLink.owner_id == user.id)
    return list(db.session.scalars(query))


# --- retention ---------------------------------------------------------------------------

#: Days an event (with its deliveries and their attempts) is kept; 0 keeps everything.
RETENTION_DAYS = 30
PURGE_BATCH = 500


def retention_days() -> float:
    return float(current_app.config.get("EVENT_RETENTION_DAYS", RETENTION_DAYS))


def purge_expired(now: dt.datetime | None = None, *, batch: int = PURGE_BATCH) -> int:
    """Periodic: delete events older than the retention, a batch per transaction, with their
    webhook deliveries and attempts; returns how many events went. An event with a delivery
    still pending stays until that delivery ends (delivered, or failed when its retry window
    closes): retention never drops a delivery the receiver has not had its chances at."""
    from .webhooks.models import WebhookDelivery

    days = retention_days()
    if days <= 0:
        return 0
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    pending = select(WebhookDelivery.id).where(WebhookDelivery.event_id == Event.id,
                                               WebhookDelivery.state == WebhookDelivery.PENDING)
    purged = 0
    while True:
        ids = db.session.scalars(select(Event.id).where(Event.created_at < cutoff, ~pending.exists())
                                 .order_by(Event.id).limit(batch)).all()
        if not ids:
            return purged
        # Their deliveries and attempts go by the foreign keys' ON DELETE CASCADE (SQLite too:
        # the app turns foreign keys on for every connection).
        db.session.execute(delete(Event).where(Event.id.in_(ids)))
        db.session.commit()
        purged += len(ids)
        if len(ids) < batch:
            return purged


@sa_event.listens_for(Session, "after_commit")
def _wake_dispatcher(session: Session) -> None:
    if session.info.pop(_WAKE, False):
        from . import jobs
        from .webhooks.dispatch import TASK

        jobs.wake(TASK)


@sa_event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_WAKE, None)
