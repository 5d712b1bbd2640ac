"""One pass of one store's feed of one entity: read what changed since the cursor, emit an
event for each record that is new or different, move the cursor; now and then, find deleted
records by reading ids only.

Reading: ``updated_at >= cursor - overlap`` in ``(updated_at, entity_id)`` order, page 1 each
time from the last record seen (keyset paging). Page numbers would shift under a record that
is edited during the pass (it moves to the end) and a record could slip between two pages
with the cursor already past it. Only when more than a page of records share one second is
that second read by page numbers (counted from ``total_count``: Magento answers a page past
the end with the last page again). A pass that finds nothing new is one small request.

Emitting: each record's fingerprint (sha256 of its canonical JSON without volatile fields)
is kept with the ``updated_at`` it had. The overlap window re-reads records already emitted;
an unchanged fingerprint emits nothing, and an older ``updated_at`` than the one kept (data
arriving out of order) never moves the record backwards. Events, fingerprints, the cursor and
the job's progress of one page commit in one transaction, after the lease is renewed: a
worker that dies mid-pass loses at most its current page, which the next pass reads again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from .. import events, probe, stores
from ..extensions import db
from ..magento import errors
from ..magento.client import StoreClient, segment
from ..magento.search import SearchCriteria
from ..models import StoreLink, utcnow
from ..text import neutralised
from .models import FeedRecord, FeedState, Job

log = logging.getLogger("integration.feeds")

#: Magento answers at most this many records per page.
MAX_PAGE_SIZE = 300
#: Fields that change without the record changing (re-indexing, stock timestamps).
VOLATILE = frozenset({"updated_at"})
MAGENTO_TIME = "%Y-%m-%d %H:%M:%S"

DEFAULTS = {
    "SYNC_INTERVAL": 300.0,          # seconds between passes of one feed
    "SYNC_PAGE_SIZE": 100,
    "SYNC_OVERLAP": 120.0,           # seconds re-read before the cursor
    "SYNC_RECONCILE_INTERVAL": 3600.0,
    "SYNC_LEASE": 600.0,             # a sync not heard of for this long is taken over
    "SYNC_BACKOFF_BASE": 60.0,
    "SYNC_BACKOFF_CAP": 6 * 3600.0,
    "SYNC_RECORD_MAX_KB": 64,
}


def setting(name: str):
    return current_app.config.get(name, DEFAULTS[name])


def _page_size(feed: FeedState) -> int:
    """SYNC_PAGE_SIZE, within Magento's usual maximum and the store's own (input limits)."""
    return probe.page_size_for(feed.store_link, max(1, min(int(setting("SYNC_PAGE_SIZE")), MAX_PAGE_SIZE)))


@dataclass(frozen=True)
class FeedEntity:
    name: str          # products
    path: str          # the search endpoint
    id_field: str      # the key in each record
    event: str         # product -> product.created ...
    deletions: bool    # reconciled by ids (Magento never deletes orders)
    filter_field: str = "entity_id"

    def rest_path(self, record: dict) -> str:
        """Where one record is fetched, for an event that carries a reference instead."""
        if self.name == "products":
            return f"products/{segment(record.get('sku', ''))}"
        if self.name == "customers":
            return f"customers/{segment(record[self.id_field])}"
        return f"{self.name}/{segment(record[self.id_field])}"


ENTITIES = {
    "products": FeedEntity("products", "products", "id", "product", True),
    "orders": FeedEntity("orders", "orders", "entity_id", "order", False),
    "customers": FeedEntity("customers", "customers/search", "id", "customer", True),
}
#: Stock has no ``updated_at``: MSI source items are compared by fingerprint, all of them.
STOCK = "stock"
ALL = (*ENTITIES, STOCK)


class FeedError(Exception):
    """Base of the refusals of this package."""


class UnknownEntity(FeedError):
    pass


class LeaseLost(FeedError):
    """Another worker took over this feed (ours expired): stop without committing."""


class Cancelled(FeedError):
    pass


class FeedBusy(FeedError):
    """Another sync of this feed holds the lease."""


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    seen: int = 0


# --- fingerprints ----------------------------------------------------------------------------

def fingerprint(record: dict) -> str:
    content = {k: v for k, v in record.items() if k not in VOLATILE}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def store_time(value) -> dt.datetime | None:
    """Magento's ``updated_at`` (UTC, ``YYYY-MM-DD HH:MM:SS``) as a naive datetime."""
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.strptime(value[:19], MAGENTO_TIME)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return when.astimezone(dt.UTC).replace(tzinfo=None) if when.tzinfo else when


# --- the lease -------------------------------------------------------------------------------

def worker_name() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"


def claim(feed_id: int, owner: str, *, ignore_backoff: bool = False) -> bool:
    """Take the feed's lease if nobody holds a live one (and the store is not backed off);
    one conditional UPDATE, so two workers never both win."""
    now = utcnow()
    free = (FeedState.lease_owner.is_(None)) | (FeedState.lease_expires_at < now)
    query = update(FeedState).where(FeedState.id == feed_id, free)
    if not ignore_backoff:
        query = query.where((FeedState.backoff_until.is_(None)) | (FeedState.backoff_until <= now))
    result = db.session.execute(
        query.values(lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=setting("SYNC_LEASE")))
        .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount == 1


def renew(feed_id: int, owner: str) -> None:
    """Part of each page's transaction: raises ``LeaseLost`` if the lease is no longer ours."""
    result = db.session.execute(
        update(FeedState).where(FeedState.id == feed_id, FeedState.lease_owner == owner)
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=setting("SYNC_LEASE")))
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        db.session.rollback()
        raise LeaseLost("this sync's lease expired and another worker took the feed over")


def release(feed_id: int, owner: str) -> None:
    db.session.rollback()
    db.session.execute(update(FeedState).where(FeedState.id == feed_id, FeedState.lease_owner == owner)
                       .values(lease_owner=None, lease_expires_at=None)
                       .execution_options(synchronize_session=False))
    db.session.commit()


# --- feeds and jobs --------------------------------------------------------------------------

def feed_for(link_id: int, entity: str) -> FeedState:
    if entity not in ALL:
        raise UnknownEntity(f"unknown entity {entity!r}; choose one of {', '.join(ALL)}")
    feed = db.session.scalar(select(FeedState).where(FeedState.store_link_id == link_id, FeedState.entity == entity))
    if feed is None:
        feed = FeedState(store_link_id=link_id, entity=entity)
        db.session.add(feed)
        try:
            db.session.commit()
        except IntegrityError:  # created by another worker at the same moment
            db.session.rollback()
            feed = db.session.scalar(select(FeedState).where(FeedState.store_link_id == link_id,
                                                             FeedState.entity == entity))
            if feed is None:
                raise
    return feed


def run_job(job_id: int) -> None:
    """What a worker runs for a queued sync job."""
    # Taken with a conditional UPDATE: a Cancel arriving at this moment wins or loses cleanly.
    taken = db.session.execute(update(Job).where(Job.id == job_id, Job.state == Job.QUEUED)
                               .values(state=Job.RUNNING, started_at=utcnow())
                               .execution_options(synchronize_session=False))
    db.session.commit()
    if taken.rowcount != 1:
        return  # cancelled while queued, or already taken
    job = db.session.get(Job, job_id)
    sync(job.store_link_id, job.entity, full=job.full, job=job)


def sync(link_id: int, entity: str, *, full: bool = False, job: Job | None = None,
         ignore_backoff: bool = False) -> Job:
    """One pass of the feed (and a reconciliation of deletions when due, or ``full``).
    Never raises for a store's failure: the job says what happened."""
    feed = feed_for(link_id, entity)
    if job is None:
        job = Job(kind="sync", store_link_id=link_id, entity=entity, full=full)
        db.session.add(job)
    job.state, job.started_at = Job.RUNNING, utcnow()
    db.session.commit()
    owner = worker_name()
    if not claim(feed.id, owner, ignore_backoff=ignore_backoff):
        db.session.refresh(feed)
        if feed.backoff_until and feed.backoff_until > utcnow():
            why = f"the store is backed off after failures until {feed.backoff_until:%H:%M:%S} UTC"
        else:
            why = "another sync of this feed is running"
        return _end(job, Job.CANCELLED, why)
    try:
        return _run(feed, job, owner, full)
    except Exception as exc:
        _end(job, Job.FAILED, f"stopped by an internal error ({type(exc).__name__}); see the worker's log")
        raise
    finally:
        release(feed.id, owner)


def _run(feed: FeedState, job: Job, owner: str, full: bool, *, limit_learnt: bool = False) -> Job:
    link = db.session.get(StoreLink, feed.store_link_id)
    if link is None or link.status != StoreLink.LINKED or not link.has_token:
        return _end(job, Job.CANCELLED, "the store is not linked (revoked or unlinked): its feeds are stopped")
    feed.last_run_at = utcnow()
    db.session.commit()
    counts = Counts()
    try:
        with stores.contact(link, "store.synced", f"{feed.entity} feed", deadline=None) as client:
            if feed.entity == STOCK:
                _stock_pass(client, feed, job, owner, counts)
            else:
                _pass(client, feed, job, owner, full, counts)
                spec = ENTITIES[feed.entity]
                due = feed.last_reconcile_at is None or utcnow() - feed.last_reconcile_at >= dt.timedelta(
                    seconds=setting("SYNC_RECONCILE_INTERVAL"))
                if spec.deletions and (full or due):
                    _reconcile(client, feed, job, owner, counts)
    except errors.PageSizeTooLarge as exc:
        # Input limits switched on since the probe: keep the maximum the store stated and pass again.
        probe.note_page_size_limit(link.id, exc.limit)
        if limit_learnt:
            _failed(feed, exc)
            return _end(job, Job.FAILED, exc.message)
        return _run(feed, job, owner, full, limit_learnt=True)
    except errors.MagentoError as exc:
        if not isinstance(exc, errors.TokenRevoked):
            _failed(feed, exc)
        return _end(job, Job.FAILED, exc.message)
    except Cancelled:
        return _end(job, Job.CANCELLED, "cancelled")
    except LeaseLost as exc:
        return _end(job, Job.FAILED, str(exc))
    _succeeded(feed)
    return _end(job, Job.FINISHED, None)


def _end(job: Job, state: str, error: str | None) -> Job:
    db.session.rollback()
    job.state, job.error, job.finished_at = state, error, utcnow()
    db.session.commit()
    return job


def _succeeded(feed: FeedState) -> None:
    now = utcnow()
    db.session.execute(update(FeedState).where(FeedState.store_link_id == feed.store_link_id)
                       .values(failures=0, backoff_until=None).execution_options(synchronize_session=False))
    feed.last_success_at, feed.last_error = now, None
    feed.next_run_at = now + dt.timedelta(seconds=setting("SYNC_INTERVAL"))
    db.session.commit()


def _failed(feed: FeedState, exc: errors.MagentoError) -> None:
    """Back off the whole store, exponentially; say ``store.check_failed`` once per bout."""
    db.session.rollback()
    link = db.session.get(StoreLink, feed.store_link_id)
    failures = db.session.scalar(select(func.max(FeedState.failures))
                                 .where(FeedState.store_link_id == feed.store_link_id)) or 0
    delay = min(setting("SYNC_BACKOFF_BASE") * 2 ** failures, setting("SYNC_BACKOFF_CAP"))
    until = utcnow() + dt.timedelta(seconds=delay)
    db.session.execute(update(FeedState).where(FeedState.store_link_id == feed.store_link_id)
                       .values(failures=failures + 1, backoff_until=until,
                               next_run_at=func.coalesce(FeedState.next_run_at, until))
                       .execution_options(synchronize_session=False))
    feed.last_error, feed.next_run_at = exc.message, until
    # Once per bout, by the rule of every call (the link's last error, cleared by a success).
    # A failure that breaks the link was already announced by ``stores.contact``; for the others
    # the claim is a conditional UPDATE, since the store's feeds may fail at the same moment.
    if not stores.breaks_the_link(exc):
        first = db.session.execute(
            update(StoreLink).where(StoreLink.id == link.id, StoreLink.last_error.is_(None))
            .values(last_error=neutralised(exc.message, multiline=True)[:2000])
            .execution_options(synchronize_session=False))
        if first.rowcount == 1:
            events.record(db.session, events.STORE_CHECK_FAILED, link, reason=exc.message)
    db.session.commit()


# --- reading changes -------------------------------------------------------------------------

def _key(record: dict, spec: FeedEntity) -> tuple[str, int]:
    raw = record.get(spec.id_field)
    try:
        number = int(raw)
    except (TypeError, ValueError):
        number = 0
    return str(record.get("updated_at") or ""), number


def _count(answer: dict) -> int:
    try:
        return max(0, int(answer.get("total_count") or 0))
    except (TypeError, ValueError):
        raise errors.BadStoreResponse("the store's total_count is not a number") from None


def changed_pages(client: StoreClient, spec: FeedEntity, since: str | None, page_size: int,
                  on_total=None) -> Iterator[list[dict]]:
    """Pages of records updated at or after ``since`` (all when ``None``), oldest first.
    ``on_total`` hears the first answer's ``total_count``: how many records the pass reads."""
    at, condition, last = since, "gteq", None

    def search(criteria: SearchCriteria) -> dict:
        answer = client.search(spec.path, criteria)
        if not isinstance(answer, dict) or not isinstance(answer.get("items", []), list):
            raise errors.BadStoreResponse(f"{spec.path} did not answer with a search result")
        return answer

    while True:
        criteria = SearchCriteria()
        if at:
            criteria.where("updated_at", at, condition)
        criteria.order_by("updated_at").order_by(spec.filter_field).page(page_size, 1)
        answer = search(criteria)
        if on_total is not None:
            on_total(_count(answer))
            on_total = None
        items = answer.get("items") or []
        fresh = [r for r in items if isinstance(r, dict) and (last is None or _key(r, spec) > last)]
        if fresh:
            yield fresh
        if len(items) < page_size:
            return
        if fresh:
            last = _key(fresh[-1], spec)
            at, condition = last[0] or at, "gteq"
            continue
        # A full page of one second already passed: that second by page numbers, then on.
        same = SearchCriteria().where("updated_at", at).order_by(spec.filter_field)
        total, number = None, 1
        while total is None or (number - 1) * page_size < total:
            answer = search(same.copy().page(page_size, number))
            total = _count(answer)
            batch = [r for r in answer.get("items") or [] if isinstance(r, dict) and _key(r, spec) > last]
            if batch:
                yield batch
            number += 1
        condition, last = "gt", None


def _pass(client: StoreClient, feed: FeedState, job: Job, owner: str, full: bool, counts: Counts) -> None:
    spec = ENTITIES[feed.entity]
    since = None
    if feed.cursor is not None and not full:
        since = (feed.cursor - dt.timedelta(seconds=setting("SYNC_OVERLAP"))).strftime(MAGENTO_TIME)
    page_size = _page_size(feed)

    def total(count: int) -> None:
        job.total = count
        db.session.commit()

    for page in changed_pages(client, spec, since, page_size, on_total=total):
        _check_cancel(job)
        renew(feed.id, owner)
        _emit(feed, spec, page, counts)
        stamps = [t for t in (store_time(r.get("updated_at")) for r in page) if t is not None]
        if stamps and (feed.cursor is None or max(stamps) > feed.cursor):
            feed.cursor = max(stamps)
        feed.records_seen += len(page)
        _progress(job, counts, len(page))
        db.session.commit()


def _emit(feed: FeedState, spec: FeedEntity, page: list[dict], counts: Counts) -> None:
    if any(r.get(spec.id_field) is None for r in page):  # refused before anything of the page is written
        raise errors.BadStoreResponse(f"the store sent a {spec.event} without {spec.id_field!r}")
    ids = [str(r.get(spec.id_field)) for r in page]
    known = {row.record_id: row for row in db.session.scalars(
        select(FeedRecord).where(FeedRecord.store_link_id == feed.store_link_id, FeedRecord.entity == spec.name,
                                 FeedRecord.record_id.in_(ids)))}
    link = feed.store_link
    max_bytes = int(setting("SYNC_RECORD_MAX_KB")) * 1024
    endpoints = webhook_endpoints()
    for record_id, record in zip(ids, page):
        print_, updated_at = fingerprint(record), store_time(record.get("updated_at"))
        row = known.get(record_id)
        if row is not None:
            if row.updated_at and updated_at and updated_at < row.updated_at:
                continue  # an older version than the one already sent
            if row.fingerprint == print_:
                if updated_at and (row.updated_at is None or updated_at > row.updated_at):
                    row.updated_at = updated_at
                continue
            kind = "updated"
            counts.updated += 1
        else:
            row = FeedRecord(store_link_id=feed.store_link_id, entity=spec.name, record_id=record_id)
            db.session.add(row)
            known[record_id] = row
            kind = "created"
            counts.created += 1
        row.fingerprint, row.updated_at, row.seen_at = print_, updated_at, utcnow()
        events.record(db.session, f"{spec.event}.{kind}", link,
                      data=events.record_data(spec.name, record_id, record, rest_path=spec.rest_path(record),
                                              max_bytes=max_bytes), endpoints=endpoints)


def webhook_endpoints() -> list:
    from ..webhooks.models import WebhookEndpoint

    return list(db.session.scalars(select(WebhookEndpoint)))


def _progress(job: Job, counts: Counts, seen: int) -> None:
    counts.seen += seen
    job.done, job.created, job.updated, job.deleted = counts.seen, counts.created, counts.updated, counts.deleted


def _check_cancel(job: Job) -> None:
    requested = db.session.scalar(select(Job.cancel_requested).where(Job.id == job.id))
    if requested:
        raise Cancelled()


# --- deletions -------------------------------------------------------------------------------

def remote_ids(client: StoreClient, spec: FeedEntity, page_size: int = MAX_PAGE_SIZE) -> Iterator[list[str]]:
    """Every id the store has, a page at a time, asking for ids only. Keyset on the id: a
    record deleted meanwhile cannot shift a page and hide another id (which would read as a
    deletion)."""
    last = None
    while True:
        criteria = SearchCriteria()
        if last is not None:
            criteria.where(spec.filter_field, last, "gt")
        criteria.order_by(spec.filter_field).page(page_size, 1)
        answer = client.get(spec.path, params=[*criteria.params(), ("fields", f"items[{spec.id_field}],total_count")])
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise errors.BadStoreResponse(f"{spec.path} did not answer with a search result")
        ids = [str(i.get(spec.id_field)) for i in items if isinstance(i, dict) and i.get(spec.id_field) is not None]
        if ids:
            yield ids
        if len(items) < page_size or not ids:
            return
        last = max(int(i) for i in ids)


def _reconcile(client: StoreClient, feed: FeedState, job: Job, owner: str, counts: Counts) -> None:
    spec = ENTITIES[feed.entity]
    present: set[str] = set()
    for ids in remote_ids(client, spec, probe.page_size_for(feed.store_link, MAX_PAGE_SIZE)):
        _check_cancel(job)
        present.update(ids)
    renew(feed.id, owner)
    gone = db.session.scalars(select(FeedRecord).where(
        FeedRecord.store_link_id == feed.store_link_id, FeedRecord.entity == spec.name)).all()
    link = feed.store_link
    for row in gone:
        if row.record_id in present:
            continue
        events.record(db.session, f"{spec.event}.deleted", link,
                      data=events.record_data(spec.name, row.record_id, None, rest_path="", max_bytes=0))
        db.session.delete(row)
        counts.deleted += 1
    feed.last_reconcile_at = utcnow()
    _progress(job, counts, 0)
    db.session.commit()


# --- stock -----------------------------------------------------------------------------------

STOCK_PATH = "inventory/source-items"


def _stock_pass(client: StoreClient, feed: FeedState, job: Job, owner: str, counts: Counts) -> None:
    """MSI source items carry no ``updated_at``: every pass reads them all and emits
    ``stock.updated`` for each whose quantity or status changed. A store without MSI answers
    404: the feed notes it and does nothing."""
    try:
        pages = client.iter_search(STOCK_PATH, SearchCriteria().order_by("source_item_id"),
                                   page_size=_page_size(feed))
        first = True
        batch: list[dict] = []
        for item in pages:
            first = False
            batch.append(item)
            if len(batch) >= 100:
                _stock_batch(feed, job, owner, batch, counts)
                batch = []
        if batch or first:
            _stock_batch(feed, job, owner, batch, counts)
        feed.note = None
    except errors.NotFound:
        db.session.rollback()
        feed.note = "no MSI source items on this store (inventory/source-items answered 404): stock is not fed"
    db.session.commit()


def _stock_batch(feed: FeedState, job: Job, owner: str, items: list[dict], counts: Counts) -> None:
    _check_cancel(job)
    renew(feed.id, owner)
    keyed = {f"{i.get('sku')}@{i.get('source_code')}": i for i in items if isinstance(i, dict)}
    known = {row.record_id: row for row in db.session.scalars(
        select(FeedRecord).where(FeedRecord.store_link_id == feed.store_link_id, FeedRecord.entity == STOCK,
                                 FeedRecord.record_id.in_(list(keyed))))}
    for record_id, item in keyed.items():
        print_ = fingerprint(item)
        row = known.get(record_id)
        if row is not None and row.fingerprint == print_:
            continue
        if row is None:
            row = FeedRecord(store_link_id=feed.store_link_id, entity=STOCK, record_id=record_id)
            db.session.add(row)
        row.fingerprint, row.seen_at = print_, utcnow()
        counts.updated += 1
        events.record(db.session, "stock.updated", feed.store_link,
                      data=events.record_data(STOCK, record_id, item, rest_path=STOCK_PATH,
                                              max_bytes=int(setting("SYNC_RECORD_MAX_KB")) * 1024))
    feed.records_seen += len(keyed)
    _progress(job, counts, len(keyed))
    db.session.commit()
