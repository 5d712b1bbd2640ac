"""Receiving a store's own events: store the raw body, verify it, queue the work; then, on a
worker, turn it into the same record event the polled feed would emit, once.

Receiving (the store waits on us): the raw body is committed first, then verified, then the
work is queued; the answer leaves within milliseconds and never waits on our processing.

Merging with the feed: a pushed event is a *trigger*. The worker reads the record from the
store exactly as the poll reads it (the entity's search endpoint, filtered on its id) and hands
it to the feed's own emitting step (``feeds.sync._emit``): same fingerprint, same rule that an
older ``updated_at`` never moves a record back, same per-record row. So a push followed by the
poll emits once; a push of a state already emitted emits nothing; pushes arriving out of order
cannot send an older state (the record read is the store's current one). The pushed payload
itself never becomes event data: a module's payload shape (aligent's service output, Adobe's
observer data) differs from the REST search item, and would not fingerprint alike.

Replays: aligent's body is ``{"data": …}`` with no id or timestamp, Adobe's has none either,
so a replay is recognised by the body: a verified body whose SHA-256 was already accepted for
that source (within ``INTAKE_KEEP_HOURS``, as long as bodies are kept) is refused with 401.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from .. import stores
from ..extensions import db
from ..magento import errors
from ..magento.search import SearchCriteria
from ..models import StoreLink, User, audit, utcnow
from ..text import neutralised
from . import verify
from .models import IntakeMessage, IntakeSource

log = logging.getLogger("integration.intake")

DEFAULTS = {
    "INTAKE_MAX_BYTES": 256 * 1024,
    "INTAKE_KEEP_HOURS": 72.0,          # accepted bodies kept (replay window, operator replay)
    "INTAKE_QUARANTINE_HOURS": 24.0,
    "INTAKE_QUARANTINE_MAX": 200,       # refused requests kept per store
}
#: Of a refused body, only this much is kept for the operator to look at.
QUARANTINE_BODY_BYTES = 2048
#: Record ids are Magento's entity ids.
RECORD_ID = re.compile(r"^[0-9]{1,20}$")
EVENT_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
#: Which entity an event is about, by a word in its name (aligent's names are the store's own,
#: e.g. ``sales.order.created``; Adobe's are ``observer.catalog_product_save_after``…).
ENTITY_WORDS = (("product", "products"), ("order", "orders"), ("customer", "customers"))
SINGULAR = {"products": "product", "orders": "order", "customers": "customer"}
_DUMMY_HASH = hashlib.sha256(b"no source").hexdigest()


def setting(name: str):
    return current_app.config.get(name, DEFAULTS[name])


@dataclass(frozen=True)
class Answer:
    status: int
    text: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


# --- receiving -------------------------------------------------------------------------------

def receive(link_id: int, source_name: str, token: str, body: bytes | None, headers, *,
            event_name: str | None, remote_addr: str | None) -> Answer:
    """One request at the intake endpoint. ``body`` is ``None`` when it was over the limit."""
    link = db.session.get(StoreLink, link_id)
    source = db.session.scalar(select(IntakeSource).where(IntakeSource.store_link_id == link_id,
                                                          IntakeSource.source == source_name))
    expected = source.path_token_hash if source is not None else _DUMMY_HASH
    if not hmac.compare_digest(token_hash(token), expected) or source is None or link is None:
        # Not the address we gave the store, so not the store: one answer whether or not the store
        # exists, and nothing written (a flood of guesses must not push real refusals out of the
        # quarantine, which keeps what came with the right address and failed its signature).
        log.info("intake: refused a request to a wrong address (store %s, source %s) from %s",
                 link_id, source_name, remote_addr)
        return Answer(401, "refused: unknown store, source or path token")
    if body is None:
        return _refuse(link, source, source_name, None, remote_addr, event_name,
                       f"body over {setting('INTAKE_MAX_BYTES')} bytes", 413)
    if link.status != StoreLink.LINKED:
        return _refuse(link, source, source_name, body, remote_addr, event_name,
                       f"the store is {link.status}, not linked", 410)
    name = event_name if event_name and EVENT_NAME.fullmatch(event_name) else None
    message = IntakeMessage(store_link_id=link.id, source_id=source.id, source=source.source, body=body,
                            body_size=len(body), remote_addr=remote_addr, event_name=name)
    db.session.add(message)
    db.session.commit()  # the raw body is kept before anything can fail
    try:
        _verify(source, body, headers)
    except verify.Refused as exc:
        message.state, message.reason = IntakeMessage.REFUSED, str(exc)[:255]
        message.body = body[:QUARANTINE_BODY_BYTES]
        _count(source, refused=1)
        db.session.commit()
        prune_quarantine(link.id)
        return Answer(401, f"refused: {exc}")
    digest = hashlib.sha256(body).hexdigest()
    message.state, message.accepted_hash = IntakeMessage.ACCEPTED, digest
    try:
        db.session.flush()  # the unique (source, body hash): a replay fails here, even a simultaneous one
        _count(source, verified=1, last_event_at=utcnow())
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        message = db.session.get(IntakeMessage, message.id)
        message.state, message.reason = IntakeMessage.REFUSED, "replayed: this signed body was already accepted"
        message.body = body[:QUARANTINE_BODY_BYTES]
        _count(source, duplicates=1)
        db.session.commit()
        prune_quarantine(link.id)
        return Answer(401, "refused: replayed (this signed body was already accepted)")
    _queue(message.id)
    return Answer(200, "accepted")


def _queue(message_id: int) -> None:
    """Queue the work; if the queue is down the message is stored all the same, and the
    periodic sweep (``housekeeping``) queues it: the store is answered either way."""
    from .. import jobs

    try:
        jobs.enqueue(process, message_id, retries=2)
    except Exception:  # noqa: BLE001 - Redis down or similar
        log.warning("could not queue intake message %s; the sweep will", message_id, exc_info=True)


def _verify(source: IntakeSource, body: bytes, headers) -> None:
    if source.source == verify.ALIGENT:
        verify.verify_aligent(body, headers, source.secret or "")
    elif source.source == verify.ADOBE:
        verify.verify_adobe(body, headers, source.public_key or "")
    elif source.source == verify.SECRET:
        verify.verify_secret(headers, source.header_name or verify.DEFAULT_SECRET_HEADER, source.secret or "")
    else:
        raise verify.Refused(f"unknown source {source.source!r}")


def _count(source: IntakeSource, **changes) -> None:
    """Counters as one UPDATE each, so concurrent requests never lose a count."""
    values = {name: getattr(IntakeSource, name) + by for name, by in changes.items() if name != "last_event_at"}
    if "last_event_at" in changes:
        values["last_event_at"] = changes["last_event_at"]
    db.session.execute(update(IntakeSource).where(IntakeSource.id == source.id).values(**values)
                       .execution_options(synchronize_session=False))


def _refuse(link: StoreLink, source: IntakeSource | None, source_name: str, body: bytes | None,
            remote_addr: str | None, event_name: str | None, reason: str, status: int) -> Answer:
    db.session.add(IntakeMessage(
        store_link_id=link.id, source_id=source.id if source else None, source=source_name[:16],
        body=None if body is None else body[:QUARANTINE_BODY_BYTES], body_size=len(body or b""),
        remote_addr=remote_addr, state=IntakeMessage.REFUSED, reason=reason[:255],
        event_name=event_name if event_name and EVENT_NAME.fullmatch(event_name) else None))
    if source is not None:
        _count(source, refused=1)
    db.session.commit()
    prune_quarantine(link.id)
    return Answer(status, f"refused: {reason}")


# --- processing (a worker) -------------------------------------------------------------------

def reference(event_name: str | None, payload) -> tuple[str, str]:
    """``(entity, record id)`` an event is about, or ``ValueError`` saying why not."""
    if not isinstance(payload, dict):
        raise ValueError("the body is not a JSON object")
    name = event_name or payload.get("eventName") or payload.get("event_name") or payload.get("event")
    entity = None
    if isinstance(name, str):
        entity = next((e for word, e in ENTITY_WORDS if word in name.lower()), None)
    if entity is None and payload.get("entity") in SINGULAR:
        entity = payload["entity"]
    if entity is None:
        raise ValueError(f"not about a product, order or customer (event {str(name)[:60]!r})")
    data = payload.get("data", payload)
    if isinstance(data, dict) and isinstance(data.get(SINGULAR[entity]), dict):
        data = data[SINGULAR[entity]]  # Adobe's observer data: {"data": {"product": {…}}}
    if not isinstance(data, dict):
        raise ValueError("no record in the body")
    raw = next((data[k] for k in ("entity_id", "id") if data.get(k) is not None), None)
    record_id = str(raw) if isinstance(raw, (int, str)) and not isinstance(raw, bool) else ""
    if not RECORD_ID.fullmatch(record_id):
        raise ValueError(f"no {SINGULAR[entity]} id in the body")
    return entity, record_id


def fetch(client, spec, record_id: str) -> dict | None:
    """The record as the poll reads it: the entity's search endpoint, filtered on its id."""
    answer = client.search(spec.path, SearchCriteria().where(spec.filter_field, record_id).page(1, 1))
    items = answer.get("items") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        raise errors.BadStoreResponse(f"{spec.path} did not answer with a search result")
    return next((i for i in items if isinstance(i, dict) and str(i.get(spec.id_field)) == record_id), None)


def process(message_id: int) -> None:
    """What a worker runs for an accepted message; runs once (the state is claimed first)."""
    from ..feeds import sync

    taken = db.session.execute(update(IntakeMessage).where(IntakeMessage.id == message_id,
                                                           IntakeMessage.state == IntakeMessage.ACCEPTED)
                               .values(state=IntakeMessage.RECEIVED).execution_options(synchronize_session=False))
    db.session.commit()
    if taken.rowcount != 1:
        return
    try:
        _process(message_id)
    except Exception as exc:
        # A database hiccup: hand the message back, so the job's retry (or the sweep) runs it
        # instead of leaving it claimed for ever. Anything else would fail again: say so, once.
        db.session.rollback()
        transient = isinstance(exc, OperationalError)
        db.session.execute(update(IntakeMessage).where(IntakeMessage.id == message_id,
                                                       IntakeMessage.state == IntakeMessage.RECEIVED)
                           .values(state=IntakeMessage.ACCEPTED if transient else IntakeMessage.FAILED,
                                   reason=None if transient else f"internal error ({type(exc).__name__})",
                                   processed_at=None if transient else utcnow())
                           .execution_options(synchronize_session=False))
        db.session.commit()
        if transient:
            raise
        log.exception("intake message %s failed", message_id)


def _process(message_id: int) -> None:
    from ..feeds import sync

    message = db.session.get(IntakeMessage, message_id)
    link = db.session.get(StoreLink, message.store_link_id)
    try:
        entity, record_id = reference(message.event_name, json.loads(message.body or b"null"))
    except ValueError as exc:  # JSONDecodeError included
        return _done(message, IntakeMessage.SKIPPED, str(exc))
    except RecursionError:
        return _done(message, IntakeMessage.SKIPPED, "the body is nested deeper than it is read")
    message.entity, message.record_id = entity, record_id
    if link.status != StoreLink.LINKED or not link.has_token:
        return _done(message, IntakeMessage.SKIPPED, "the store is not linked")
    spec = sync.ENTITIES[entity]
    try:
        with stores.contact(link, "store.event_fetched",
                            f"{SINGULAR[entity]} {record_id}, pushed by the store") as client:
            record = fetch(client, spec, record_id)
    except errors.MagentoError as exc:
        return _done(message, IntakeMessage.FAILED, f"reading it from the store failed: {exc.message}")
    if record is None:
        return _done(message, IntakeMessage.SKIPPED, "not on the store any more (the feed reconciles deletions)")
    for attempt in (1, 2):
        feed = sync.feed_for(link.id, entity)
        counts = sync.Counts()
        try:
            with _record_lock(link.id, entity, record_id):
                _emit_one(feed, spec, record, counts, message_id)
            return
        except IntegrityError:  # the poll added this record's row at the same moment: compare again
            db.session.rollback()
            if attempt == 2:
                raise


def _emit_one(feed, spec, record: dict, counts, message_id: int) -> None:
    from ..feeds import sync

    sync._emit(feed, spec, [record], counts)
    emitted = counts.created + counts.updated
    message = db.session.get(IntakeMessage, message_id)
    message.state = IntakeMessage.EMITTED if emitted else IntakeMessage.DUPLICATE
    message.reason = None if emitted else "this state of the record was already sent"
    message.processed_at = utcnow()
    _count(message.intake_source, **({"emitted": 1} if emitted else {"duplicates": 1}))
    db.session.commit()


#: Two pushes of one record (two sources, a module's duplicate) are compared one after the
#: other: in this process by a striped lock, across processes by a PostgreSQL advisory lock
#: held until the commit. (The poll takes neither: a push and a poll reading the same record
#: within the same instant can both emit it; see the README.)
_LOCAL_LOCKS = [threading.Lock() for _ in range(64)]


@contextmanager
def _record_lock(link_id: int, entity: str, record_id: str) -> Iterator[None]:
    digest = hashlib.sha256(f"intake:{link_id}:{entity}:{record_id}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    with _LOCAL_LOCKS[key % len(_LOCAL_LOCKS)]:
        if db.session.get_bind().dialect.name == "postgresql":
            # Only this record's lock: the feed's own writer (called next) takes the events' order lock
            # after the page's fingerprint rows, as the poll does, so both take locks in one order.
            db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        yield


def _done(message: IntakeMessage, state: str, reason: str) -> None:
    message.state, message.reason, message.processed_at = state, reason[:255], utcnow()
    db.session.commit()


# --- setup, replay, housekeeping -------------------------------------------------------------

class IntakeSetupError(ValueError):
    """A source that cannot be set up as asked (the message says why)."""


HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}$")


def enable(link: StoreLink, source_name: str, *, secret: str | None = None, public_key: str | None = None,
           header_name: str | None = None, user: User | None = None, remote_addr: str | None = None
           ) -> tuple[IntakeSource, str]:
    """Create (or set up again) a store's source; returns it and its new path token, which is
    shown once (only its hash is kept)."""
    if source_name not in verify.SOURCES:
        raise IntakeSetupError(f"unknown source {source_name!r}")
    source = db.session.scalar(select(IntakeSource).where(IntakeSource.store_link_id == link.id,
                                                          IntakeSource.source == source_name))
    if source is None:
        source = IntakeSource(store_link_id=link.id, source=source_name)
        db.session.add(source)
    if source_name == verify.ADOBE:
        # A browser's textarea sends CRLF line ends; the database keeps no control characters.
        pem = "\n".join(line.strip() for line in (public_key or "").strip().splitlines())
        try:
            source.key_fingerprint = verify.key_fingerprint(pem)
        except verify.BadKey as exc:
            raise IntakeSetupError(str(exc)) from None
        source.public_key = pem
    elif source_name == verify.SECRET:
        if not secret or len(secret) < 24 or len(secret) > 256 or not secret.isascii() or not secret.isprintable():
            raise IntakeSetupError("the shared secret must be 24 to 256 printable ASCII characters")
        header_name = (header_name or verify.DEFAULT_SECRET_HEADER).strip()
        if not HEADER_NAME.fullmatch(header_name):
            raise IntakeSetupError("the header name is letters, digits and dashes")
        source.secret, source.header_name = secret, header_name
        source.key_fingerprint = verify.secret_fingerprint(secret)
    else:
        secret = secret or new_token()
        source.secret, source.key_fingerprint = secret, verify.secret_fingerprint(secret)
    token = new_token()
    source.path_token_hash = token_hash(token)
    audit("intake.enabled", user=user, store_link=link, remote_addr=remote_addr,
          detail=f"{source_name} (key {source.key_fingerprint[:16]})")
    db.session.commit()
    return source, token


def disable(link: StoreLink, source_name: str, *, user: User | None = None, remote_addr: str | None = None) -> bool:
    source = db.session.scalar(select(IntakeSource).where(IntakeSource.store_link_id == link.id,
                                                          IntakeSource.source == source_name))
    if source is None:
        return False
    db.session.delete(source)
    audit("intake.disabled", user=user, store_link=link, remote_addr=remote_addr, detail=source_name)
    db.session.commit()
    return True


def replay(link: StoreLink, message_id: int, *, user: User | None = None, remote_addr: str | None = None) -> None:
    """Process a stored, verified event again (the feed's fingerprints still apply)."""
    message = db.session.scalar(select(IntakeMessage).where(IntakeMessage.id == message_id,
                                                            IntakeMessage.store_link_id == link.id))
    if message is None or message.accepted_hash is None:
        raise IntakeSetupError("only a stored, verified event can be replayed")
    message.state, message.reason, message.processed_at = IntakeMessage.ACCEPTED, None, None
    audit("intake.replayed", user=user, store_link=link, remote_addr=remote_addr, detail=f"message {message.id}")
    db.session.commit()
    _queue(message.id)


def prune_quarantine(link_id: int) -> None:
    """At most ``INTAKE_QUARANTINE_MAX`` refused requests per store: the newest."""
    keep = int(setting("INTAKE_QUARANTINE_MAX"))
    cutoff = db.session.scalar(select(IntakeMessage.id).where(IntakeMessage.store_link_id == link_id,
                                                              IntakeMessage.state == IntakeMessage.REFUSED)
                               .order_by(IntakeMessage.id.desc()).offset(keep).limit(1))
    if cutoff is not None:
        db.session.execute(delete(IntakeMessage).where(IntakeMessage.store_link_id == link_id,
                                                       IntakeMessage.state == IntakeMessage.REFUSED,
                                                       IntakeMessage.id <= cutoff))
        db.session.commit()


#: An accepted message not taken by a worker after this long is queued again (its job was lost).
STALE_AFTER = dt.timedelta(seconds=60)


def housekeeping() -> None:
    """Periodic: queue accepted messages whose job was lost, then prune."""
    stale = db.session.scalars(select(IntakeMessage.id).where(
        IntakeMessage.state == IntakeMessage.ACCEPTED, IntakeMessage.received_at < utcnow() - STALE_AFTER)
        .order_by(IntakeMessage.id).limit(500)).all()
    db.session.commit()
    for message_id in stale:
        _queue(message_id)
    prune()


def prune() -> None:
    """Periodic: refused requests after ``INTAKE_QUARANTINE_HOURS``, the rest after ``INTAKE_KEEP_HOURS``."""
    now = utcnow()
    db.session.execute(delete(IntakeMessage).where(
        IntakeMessage.state == IntakeMessage.REFUSED,
        IntakeMessage.received_at < now - dt.timedelta(hours=float(setting("INTAKE_QUARANTINE_HOURS")))))
    db.session.execute(delete(IntakeMessage).where(
        IntakeMessage.received_at < now - dt.timedelta(hours=float(setting("INTAKE_KEEP_HOURS")))))
    db.session.commit()


def panel(link: StoreLink) -> dict:
    """What the store page shows: sources, counts, recent events, the quarantine."""
    sources = list(db.session.scalars(select(IntakeSource).where(IntakeSource.store_link_id == link.id)
                                      .order_by(IntakeSource.source)))
    recent = list(db.session.scalars(select(IntakeMessage).where(
        IntakeMessage.store_link_id == link.id, IntakeMessage.state != IntakeMessage.REFUSED)
        .order_by(IntakeMessage.id.desc()).limit(20)))
    quarantine = list(db.session.scalars(select(IntakeMessage).where(
        IntakeMessage.store_link_id == link.id, IntakeMessage.state == IntakeMessage.REFUSED)
        .order_by(IntakeMessage.id.desc()).limit(20)))
    return {"sources": sources, "recent": recent, "quarantine": quarantine}


def preview(message: IntakeMessage, limit: int = 300) -> str:
    """A refused body's first characters, as text safe to show."""
    return neutralised((message.body or b"")[:limit].decode("utf-8", "replace"), multiline=False)
