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
the job's progress of one page (on a pass from nothing, of the pages already in: see
``all_pages``) commit in one transaction, after the lease is renewed: a worker that dies
mid-pass loses at most what that transaction held, which the next pass reads again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import BigInteger, bindparam, cast, func, select, text, update
from sqlalchemy.exc import IntegrityError

from .. import bulk, events, jobs, json_text, probe, store_cap, stores
from ..extensions import db, kept_across_commits
from ..magento import errors
from ..magento.client import StoreClient, segment
from ..magento.search import SearchCriteria
from ..models import StoreLink, utcnow
from ..text import neutralised
from . import lease
from .lease import LeaseLost
from .models import FeedRecord, FeedState, Job, record_key

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
    "SYNC_SLICE": 120.0,             # seconds of pages a queued job reads before its next run goes on
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


class Cancelled(FeedError):
    pass


class FeedBusy(FeedError):
    """Another sync of this feed holds the lease."""


class StoreCapWait(errors.MagentoError):
    """The store's concurrency cap stayed full for longer than a job waits for a slot."""


#: How long a sync or export waits for one of the store's slots before it gives up (and the
#: store backs off like a failing one).
CAP_PATIENCE = 300.0


def store_slot(link_id: int, patience: float = CAP_PATIENCE) -> Callable:
    """A slot of the store's concurrency cap, for ``StoreClient(slot=...)``: every request of a
    sync or an export counts against the same per-store limit as the proxy's calls. A job waits
    its turn (the proxy answers 429 instead); the cap object is captured here so the client's
    page threads, which have no app context, can use it."""
    cap = store_cap.current()

    @contextmanager
    def slot():
        until = time.monotonic() + patience
        while True:
            try:
                release = cap.acquire(link_id)
                break
            except store_cap.StoreBusy:
                if time.monotonic() >= until:
                    raise StoreCapWait(f"every one of the store's {cap.limit} request slots stayed taken for "
                                       f"{patience:.0f} s") from None
        try:
            yield
        finally:
            release()

    return slot


#: Seconds between two writes of a job's progress, two looks for a Cancel, two loads of the
#: webhook endpoints during a pass: each is a round trip to the database, and a page should
#: cost as few as it can (they wait on a busy database server more than they work).
ROUND_TRIP_EVERY = 1.0


@dataclass
class Counts:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    seen: int = 0
    shown_at: float = 0.0
    asked_at: float = 0.0
    endpoints: list | None = None
    endpoints_at: float = 0.0
    store: dict | None = None
    store_at: float = 0.0
    #: A pass by page numbers (in id order): the highest record id of at most ``NUMBERED_DIGITS``
    #: digits the feed keeps a fingerprint of (-1: none), so that the records above it, which
    #: have none yet (every record of a new store's first pass), are not looked up. ``None``:
    #: every record is looked up.
    highest_kept: int | None = None


# --- fingerprints ----------------------------------------------------------------------------

def fingerprint(record: dict) -> str:
    """SHA-256 of the record's sorted, compact JSON (``json_text.canonical``: the standard
    encoder's bytes, which the fingerprints already kept were made of) less the volatile fields."""
    content = dict(record)  # a copy less the volatile fields: a quarter of a comprehension's cost
    for field in VOLATILE:
        content.pop(field, None)
    return hashlib.sha256(json_text.canonical(content)).hexdigest()


def store_time(value) -> dt.datetime | None:
    """Magento's ``updated_at`` (UTC, ``YYYY-MM-DD HH:MM:SS``) as a naive datetime."""
    if not isinstance(value, str):
        return None
    try:
        if len(value) >= 19 and value[10] == " ":  # strptime costs ten times as much, per record
            return dt.datetime.fromisoformat(value[:19])
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


def claim(feed_id: int, owner: str, *, ignore_backoff: bool = False, job: Job | None = None) -> bool:
    """Take the feed's lease if nobody holds a live one (or it was handed to ``job``) and the
    store is not backed off."""
    now = utcnow()
    where = () if ignore_backoff else ((FeedState.backoff_until.is_(None)) | (FeedState.backoff_until <= now),)
    return lease.take(FeedState, feed_id, owner, setting("SYNC_LEASE"), *where,
                      heir_=lease.heir(job.id) if job is not None and job.id else None)


_FEEDS = FeedState.__table__
#: Built once (each page renews): building an UPDATE costs more than the database's work on it.
_RENEW = (_FEEDS.update()
          .where(_FEEDS.c.id == bindparam("renew_feed"), _FEEDS.c.lease_owner == bindparam("renew_owner"))
          .values(lease_expires_at=bindparam("renew_until"),
                  records_seen=_FEEDS.c.records_seen + bindparam("renew_seen")))
_RENEW_AND_MOVE = _RENEW.values(cursor=bindparam("renew_cursor"))
#: A pass from nothing also writes where it stands, so a stopped or sliced one goes on from its next page.
_RENEW_AND_MARK = _RENEW.values(pass_offset=bindparam("pass_offset"), pass_started_at=bindparam("pass_started_at"),
                                pass_newest=bindparam("pass_newest"), pass_read=bindparam("pass_read"),
                                pass_total=bindparam("pass_total"))


def renew(feed_id: int, owner: str, *, seen: int = 0, cursor: dt.datetime | None = None,
          position: dict | None = None) -> None:
    """Part of each page's transaction: raises ``LeaseLost`` if the lease is no longer ours.
    The same UPDATE counts the page's ``seen`` records and moves the ``cursor`` (when given), or
    writes a first pass's ``position`` (``pass_offset``, ``pass_started_at``, ``pass_newest``,
    ``pass_read``, ``pass_total``)."""
    params = {"renew_feed": feed_id, "renew_owner": owner, "renew_seen": seen,
              "renew_until": utcnow() + dt.timedelta(seconds=setting("SYNC_LEASE"))}
    statement = _RENEW
    if cursor is not None:
        statement, params["renew_cursor"] = _RENEW_AND_MOVE, cursor
    elif position is not None:
        statement = _RENEW_AND_MARK
        params.update(position)
    result = db.session.execute(statement, params)
    if result.rowcount != 1:
        db.session.rollback()
        raise LeaseLost("this sync's lease expired and another worker took the feed over")


def release(feed_id: int, owner: str) -> None:
    db.session.rollback()
    lease.release(FeedState, owner, FeedState.id == feed_id)


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


def take_job(job_id: int, owner: str | None = None) -> Job | None:
    """Mark a queued job running (and take its lease for ``owner``), or None if it was cancelled
    while queued or already taken. A conditional UPDATE: a Cancel arriving at this moment wins
    or loses cleanly, and a job queued twice (its entry thought lost) runs once."""
    now = utcnow()
    values = {"state": Job.RUNNING, "started_at": func.coalesce(Job.started_at, now)}
    if owner is not None:
        values.update(lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=setting("SYNC_LEASE")))
    taken = db.session.execute(update(Job).where(Job.id == job_id, Job.state == Job.QUEUED).values(**values)
                               .execution_options(synchronize_session=False))
    db.session.commit()
    return db.session.get(Job, job_id) if taken.rowcount == 1 else None


def enqueue(job: Job) -> None:
    """Put a job (new, or going on, or found lost) in the runner's queue under a fresh key,
    committed with it: the tick compares the queued jobs' keys with what the runner holds. A
    runner that cannot be reached now (Redis down) leaves the job queued for the tick to retry."""
    job.state, job.queued_at, job.queue_key = Job.QUEUED, utcnow(), queue_key()
    db.session.commit()
    hand_over(job)


def queue_key() -> str:
    return f"feeds-job-{secrets.token_hex(8)}"


def hand_over(job: Job) -> None:
    """The queued job to the runner, under its ``queue_key``."""
    from .exports import run_export_job

    try:
        jobs.enqueue(run_export_job if job.kind == "export" else run_job, job.id, key=job.queue_key)
    except Exception:  # noqa: BLE001 - the job is queued in the database; the tick hands it over again
        log.warning("could not queue job %s; the next tick tries again", job.id, exc_info=True)


def run_job(job_id: int) -> None:
    """What a worker runs for a queued sync job: a pass from nothing stops after ``SYNC_SLICE``
    seconds of pages and the same job goes on in a fresh run (queued again), so no run comes
    near the runner's time limit and a run that dies costs at most its slice."""
    job = take_job(job_id)
    if job is not None:
        sync(job.store_link_id, job.entity, full=job.full, job=job, slice_seconds=float(setting("SYNC_SLICE")))


def sync(link_id: int, entity: str, *, full: bool = False, job: Job | None = None,
         ignore_backoff: bool = False, slice_seconds: float | None = None) -> Job:
    """One pass of the feed (and a reconciliation of deletions when due, or ``full``).
    Never raises for a store's failure: the job says what happened. ``slice_seconds``: a pass
    by page numbers stops asking for pages after that long and the job is queued to go on.
    Returns the job (queued again, when it goes on)."""
    with kept_across_commits():
        return _sync(link_id, entity, full=full, job=job, ignore_backoff=ignore_backoff, slice_seconds=slice_seconds)


def _sync(link_id: int, entity: str, *, full: bool, job: Job | None, ignore_backoff: bool,
          slice_seconds: float | None) -> Job:
    feed = feed_for(link_id, entity)
    if job is None:
        job = Job(kind="sync", store_link_id=link_id, entity=entity, full=full)
        db.session.add(job)
    job.state, job.started_at = Job.RUNNING, job.started_at or utcnow()
    db.session.commit()
    owner = worker_name()
    if not claim(feed.id, owner, ignore_backoff=ignore_backoff, job=job):
        db.session.refresh(feed)
        if feed.backoff_until and feed.backoff_until > utcnow():
            why = f"the store is backed off after failures until {feed.backoff_until:%H:%M:%S} UTC"
        else:
            why = "another sync of this feed is running"
        return _end(job, Job.CANCELLED, why)
    try:
        until = time.monotonic() + slice_seconds if slice_seconds is not None else None
        return _run(feed, job, owner, full, until=until)
    except Exception as exc:
        _end(job, Job.FAILED, f"stopped by an internal error ({type(exc).__name__}); see the worker's log")
        raise
    finally:
        release(feed.id, owner)


def _run(feed: FeedState, job: Job, owner: str, full: bool, *, limit_learnt: bool = False,
         until: float | None = None) -> Job:
    link = db.session.get(StoreLink, feed.store_link_id)
    if link is None or link.status != StoreLink.LINKED or not link.has_token:
        return _end(job, Job.CANCELLED, "the store is not linked (revoked or unlinked): its feeds are stopped")
    feed.last_run_at = utcnow()
    db.session.commit()
    # A job going on from its last run counts on from there.
    counts = Counts(created=job.created, updated=job.updated, deleted=job.deleted, seen=job.done)
    try:
        concurrency = int(current_app.config.get("STORE_CONCURRENCY") or 8)
        with stores.contact(link, "store.synced", f"{feed.entity} feed", deadline=None,
                            pool_size=max(concurrency, 4), slot=store_slot(link.id)) as client:
            if feed.entity == STOCK:
                _stock_pass(client, feed, job, owner, counts)
            else:
                whole = _pass(client, feed, job, owner, full, counts, concurrency, until=until)
                if whole is None:
                    return _go_on(feed, job, owner, counts)
                spec = ENTITIES[feed.entity]
                if whole and feed.last_reconcile_at is None:
                    # A first pass that read every record of an unchanging catalogue has
                    # nothing to reconcile yet: the first sweep of ids waits its interval.
                    feed.last_reconcile_at = utcnow()
                    db.session.commit()
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
        return _run(feed, job, owner, full, limit_learnt=True, until=until)
    except errors.NotAuthorized as exc:
        _not_granted(feed, exc)
        return _end(job, Job.FAILED, f"{exc.message} {exc.hint}")
    except errors.MagentoError as exc:
        if not isinstance(exc, errors.TokenRevoked):
            _failed(feed, exc)
        return _end(job, Job.FAILED, exc.message)
    except Cancelled:
        return _end(job, Job.CANCELLED, "cancelled")
    except LeaseLost as exc:
        return _end(job, Job.FAILED, str(exc))
    _progress(job, counts, 0, now=True)
    db.session.commit()
    _succeeded(feed)
    return _end(job, Job.FINISHED, None)


def _go_on(feed: FeedState, job: Job, owner: str, counts: Counts) -> Job:
    """The slice is over with pages left: the feed's lease goes to the job, which is queued to
    go on (no other sync takes the feed meanwhile; a Cancel while queued hands it back)."""
    _progress(job, counts, 0, now=True)
    lease.renew(FeedState, feed.id, owner, setting("SYNC_LEASE"), to=lease.heir(job.id))
    enqueue(job)
    return job


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


def _not_granted(feed: FeedState, exc: errors.NotAuthorized) -> None:
    """A resource the integration was not given: the store answered, so nothing is failing. This
    feed says what to tick and tries again at its interval; the store's other feeds go on, and
    no ``store.check_failed`` is sent (the probe's warning on the store page says it already)."""
    db.session.rollback()
    feed.last_error = f"{exc.message} {exc.hint}"[:2000]
    feed.next_run_at = utcnow() + dt.timedelta(seconds=setting("SYNC_INTERVAL"))
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


def all_pages(client: StoreClient, spec: FeedEntity, page_size: int, concurrency: int,
              on_total=None, totals: list[int] | None = None, first: int = 1,
              more: Callable[[], bool] | None = None) -> Iterator[tuple[int, int, list[dict]]]:
    """Every record from page ``first`` on, in ``entity_id`` order by page numbers, as
    ``(number of the batch's last page, last page number, records)``: a batch is the next
    ``concurrency`` pages (the first batch also the first page, which says how many there are),
    so that the caller writes them in one transaction
    (one lease renewal, fingerprint lookup, ``COPY`` of each table and commit for them all, not
    for each page) while the pages after them come in: ``concurrency`` requests stay in flight
    whatever the caller does, and at most twice that many pages are held besides the batch.
    ``more()`` false: ask for no further page, hand over those already asked for, and stop. For
    a pass from nothing: what a deletion during the pass shifts past us, the reconciliation's
    id sweep finds and fetches (``_fetch_missing``); what is edited or created meanwhile is newer
    than the pass's start, which the cursor goes back to. ``totals`` collects every page's
    ``total_count``: all alike, nothing was created or deleted while the pages were read."""
    base = SearchCriteria().order_by(spec.filter_field)
    totals = totals if totals is not None else []

    def page(number: int) -> dict:
        answer = client.search(spec.path, base.copy().page(page_size, number))
        if not isinstance(answer, dict) or not isinstance(answer.get("items", []), list):
            raise errors.BadStoreResponse(f"{spec.path} did not answer with a search result")
        totals.append(_count(answer))
        return answer

    def records(answer: dict) -> list[dict]:
        return [r for r in answer.get("items") or [] if isinstance(r, dict)]

    answer = page(first)
    total = _count(answer)
    if on_total is not None:
        on_total(total)
    pages = max(-(-total // page_size), 1)
    held = records(answer)  # the first page goes with the next batch: one transaction less a pass
    if first >= pages:
        yield first, pages, held
        return
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, pages - first)),
                            thread_name_prefix="feed-page") as pool:
        pending: deque = deque()  # asked for, in page order: in flight or in, not handed over yet
        number = first + 1

        def ask() -> None:
            nonlocal number
            while (number <= pages and len(pending) < 2 * concurrency
                   and sum(not future.done() for _, future in pending) < concurrency
                   and (more is None or more())):
                pending.append((number, pool.submit(page, number)))
                number += 1

        try:
            ask()
            asked = first
            while pending:
                batch, count = held or [], 0
                while pending and count < concurrency:
                    at, future = pending[0]
                    if (count or held is not None) and future.exception() is not None:
                        break  # the pages before a failed one are written first; it raises next time
                    pending.popleft()
                    batch += records(future.result())
                    asked, count = at, count + 1
                    ask()
                held = None
                yield asked, pages, batch
            if held is not None:  # stopped before a second page was asked for
                yield first, pages, held
        finally:
            for _, future in pending:  # stopped early (cancelled, lease lost): do not fetch the rest
                future.cancel()


def _pass(client: StoreClient, feed: FeedState, job: Job, owner: str, full: bool, counts: Counts,
          concurrency: int = 1, until: float | None = None) -> bool | None:
    """Returns whether the pass read every record of a catalogue that did not change meanwhile,
    or None when it stopped at ``until`` (monotonic) with pages left, kept on the feed."""
    spec = ENTITIES[feed.entity]
    since = None
    if feed.cursor is not None and not full:
        since = (feed.cursor - dt.timedelta(seconds=setting("SYNC_OVERLAP"))).strftime(MAGENTO_TIME)
    page_size = _page_size(feed)

    def total(count: int) -> None:
        job.total = count
        db.session.commit()

    # Read once: every commit expires the ORM objects, and reading one after it is a query.
    feed_id, cursor = feed.id, feed.cursor
    if since is not None:
        for page in changed_pages(client, spec, since, page_size, on_total=total):
            _check_cancel(job, counts)
            stamps = [store_time(r.get("updated_at")) for r in page]
            latest, moved = max(filter(None, stamps), default=None), None
            if latest is not None and (cursor is None or latest > cursor):
                cursor = moved = latest
            renew(feed_id, owner, seen=len(page), cursor=moved)
            _emit(feed, spec, page, counts, stamps=stamps)
            _progress(job, counts, len(page))
            db.session.commit()
        return False

    # From nothing: pages in parallel, the cursor set only once every page is in. Where the pass
    # stands is written with each page's lease renewal (one UPDATE, in the page's transaction),
    # so a pass stopped half-way, or cut into slices, goes on from its next page; the
    # fingerprints keep a page read again from re-emitting.
    offset, started = feed.pass_offset, feed.pass_started_at
    if offset is None:
        offset, started, newest, read, reported = 0, utcnow(), None, 0, None
    else:
        newest, read, reported = feed.pass_newest, feed.pass_read, feed.pass_total
    counts.seen = read  # the progress bar counts the pass, whichever job read its pages
    counts.highest_kept = _highest_kept(feed.store_link_id, spec.name)
    totals: list[int] = []
    more = (lambda: time.monotonic() < until) if until is not None else None
    done = False
    for number, last, page in all_pages(client, spec, page_size, concurrency, on_total=total, totals=totals,
                                        first=offset // page_size + 1, more=more):
        _check_cancel(job, counts)
        stamps = [store_time(r.get("updated_at")) for r in page]
        latest = max(filter(None, stamps), default=None)
        if latest is not None and (newest is None or latest > newest):
            newest = latest
        found = set(totals) | ({reported} if reported is not None else set())  # pages in flight add theirs too
        reported = found.pop() if len(found) == 1 else -1
        offset, read, done = number * page_size, read + len(page), number >= last
        renew(feed_id, owner, seen=len(page), position={
            "pass_offset": offset, "pass_started_at": started, "pass_newest": newest, "pass_read": read,
            "pass_total": reported})
        if page:
            _emit(feed, spec, page, counts, stamps=stamps)
        _progress(job, counts, len(page))
        db.session.commit()
    if not done:
        return None
    if newest is not None:
        # A record edited while the pages were read is newer than the pass's start, which is at
        # most this long before the newest stamp seen (the store's clock runs as fast as ours).
        newest -= utcnow() - started
        feed.cursor = max(newest, feed.cursor) if feed.cursor and not full else newest
    feed.pass_offset = feed.pass_started_at = feed.pass_newest = feed.pass_total = None
    feed.pass_read = 0
    db.session.commit()
    return reported == read


#: One lookup of the unique key per record id, whatever the statistics say. As ``record_id
#: IN (...)``, PostgreSQL plans from statistics taken before the pass (or before the store was
#: linked) that the store has hardly any rows, and scans all of the store's rows for every page
#: (a first pass then costs the server the square of the catalogue); ``OFFSET 0`` keeps the
#: subquery from being merged into a join that could be planned so again.
_KEPT_POSTGRESQL = text(
    "SELECT kept.id, kept.record_id, kept.fingerprint, kept.updated_at"
    " FROM unnest(CAST(:record_ids AS VARCHAR[])) AS wanted(record_id)"
    " CROSS JOIN LATERAL (SELECT id, record_id, fingerprint, updated_at FROM feed_records"
    " WHERE store_link_id = :link_id AND entity = :entity AND record_id = wanted.record_id OFFSET 0) AS kept")


#: Record ids of up to this many digits are compared as numbers with the highest one kept (both
#: databases cast them to a 64-bit integer).
NUMBERED_DIGITS = 18


def _numbered(record_id: str) -> bool:
    return record_id.isascii() and record_id.isdigit() and len(record_id) <= NUMBERED_DIGITS


def _highest_kept(link_id: int, entity: str) -> int:
    """The highest record id of at most ``NUMBERED_DIGITS`` digits kept for the feed, -1 if none
    (a new store's: one query a run, not one lookup a page). Any record id kept that could be
    equal to one of them counts, so it is never below one that is kept."""
    table = FeedRecord.__table__
    highest = db.session.scalar(select(func.max(cast(table.c.record_id, BigInteger))).where(
        table.c.store_link_id == link_id, table.c.entity == entity,
        table.c.record_id.regexp_match(f"^[0-9]{{1,{NUMBERED_DIGITS}}}$")))
    return -1 if highest is None else int(highest)


def _kept(link_id: int, entity: str, record_ids: list[str]):
    """The fingerprint rows kept for these records (id, record_id, fingerprint, updated_at)."""
    if bulk.postgresql(db.session):
        return db.session.execute(_KEPT_POSTGRESQL, {"record_ids": record_ids, "link_id": link_id,
                                                     "entity": entity})
    table = FeedRecord.__table__
    return db.session.execute(select(table.c.id, table.c.record_id, table.c.fingerprint, table.c.updated_at)
                              .where(table.c.store_link_id == link_id, table.c.entity == entity,
                                     table.c.record_id.in_(record_ids)))


@dataclass
class _Known:
    id: int | None
    fingerprint: str
    updated_at: dt.datetime | None


def _emit(feed: FeedState, spec: FeedEntity, page: list[dict], counts: Counts, *,
          stamps: list[dt.datetime | None] | None = None) -> None:
    """One page: fingerprints read with one query, written with one INSERT and one UPDATE, the
    events with ``events.record_many`` (last: it holds the events' ordering lock to the commit).
    ``stamps``: each record's ``updated_at`` already parsed, if the caller did."""
    if any(r.get(spec.id_field) is None for r in page):  # refused before anything of the page is written
        raise errors.BadStoreResponse(f"the store sent a {spec.event} without {spec.id_field!r}")
    keyed = [(str(r.get(spec.id_field)), r) for r in page]
    if stamps is None:
        stamps = [store_time(r.get("updated_at")) for r in page]

    def event(record_id: str, record: dict, kind: str) -> events.RecordChange:
        return events.RecordChange(f"{spec.event}.{kind}", spec.name, record_id, record,
                                   lambda: spec.rest_path(record))

    _write(feed, spec.name, keyed, event, counts, stamps=stamps)


def _write(feed: FeedState, entity: str, keyed: list[tuple[str, dict]], event, counts: Counts, *,
           stamps: list[dt.datetime | None] | None) -> None:
    """Compare ``keyed`` (record id, record) with the fingerprints kept and write what changed.
    ``stamps``: each record's ``updated_at``, for records that carry one: an older one than
    kept is never sent (``None``: stock, compared by fingerprint only)."""
    keyed = [(record_key(record_id), record) for record_id, record in keyed]
    store = _store(feed, counts)
    link_id, table = store["id"], FeedRecord.__table__
    wanted = {record_id for record_id, _ in keyed}
    highest = counts.highest_kept
    if highest is not None:  # ids above the highest kept have no fingerprint: not looked up
        numbered = [int(record_id) for record_id in wanted if _numbered(record_id)]
        wanted = {record_id for record_id in wanted if not _numbered(record_id) or int(record_id) <= highest}
        counts.highest_kept = max(highest, *numbered) if numbered else highest  # each kept after this write
    known = {row.record_id: _Known(row.id, row.fingerprint, row.updated_at)
             for row in _kept(link_id, entity, list(wanted))} if wanted else {}
    now = utcnow()
    ordered = stamps is not None
    fresh: dict[str, dict] = {}      # new rows, by record id (a record twice in a page: its last version)
    changed: dict[int, dict] = {}    # rows to update, by primary key
    found: list[events.RecordChange] = []
    for n, (record_id, record) in enumerate(keyed):
        print_ = fingerprint(record)
        updated_at = stamps[n] if ordered else None
        row = known.get(record_id)
        if row is not None:
            if ordered and row.updated_at and updated_at and updated_at < row.updated_at:
                continue  # an older version than the one already sent
            if row.fingerprint == print_:
                if updated_at and (row.updated_at is None or updated_at > row.updated_at):
                    row.updated_at = updated_at
                    if row.id is None:
                        fresh[record_id]["updated_at"] = updated_at
                    else:
                        changed.setdefault(row.id, {"row_id": row.id})["updated_at"] = updated_at
                continue
            kind = "updated"
            counts.updated += 1
        else:
            kind = "created"
            counts.created += 1
        values = {"fingerprint": print_, "updated_at": updated_at, "seen_at": now}
        if row is not None and row.id is not None:
            changed[row.id] = {"row_id": row.id, **values}
        else:
            fresh[record_id] = {"store_link_id": link_id, "entity": entity, "record_id": record_id, **values}
        known[record_id] = _Known(row.id if row else None, print_, updated_at)
        found.append(event(record_id, record, kind))
    # Core statements: the ORM's bulk paths cost more per row than the database does.
    bulk.insert_rows(db.session, table, list(fresh.values()))
    if changed:
        by_columns: dict[tuple, list[dict]] = {}
        for values in changed.values():
            by_columns.setdefault(tuple(sorted(values)), []).append(values)
        for columns, rows in by_columns.items():
            db.session.execute(table.update().where(table.c.id == bindparam("row_id"))
                               .values({c: bindparam(c) for c in columns if c != "row_id"}), rows)
    events.record_many(db.session, store, found, endpoints=_endpoints(counts),
                       max_bytes=int(setting("SYNC_RECORD_MAX_KB")) * 1024)


def webhook_endpoints() -> list:
    from ..webhooks.models import WebhookEndpoint

    return list(db.session.scalars(select(WebhookEndpoint)))


def _progress(job: Job, counts: Counts, seen: int, *, now: bool = False) -> None:
    """Count ``seen``; write the counts to the job once a second (``now``: at once)."""
    counts.seen += seen
    if now or time.monotonic() - counts.shown_at >= ROUND_TRIP_EVERY:
        counts.shown_at = time.monotonic()
        job.done, job.created, job.updated, job.deleted = counts.seen, counts.created, counts.updated, counts.deleted


def _check_cancel(job: Job, counts: Counts) -> None:
    """Stop if someone asked to cancel (looked up at most once a second)."""
    if time.monotonic() - counts.asked_at < ROUND_TRIP_EVERY:
        return
    counts.asked_at = time.monotonic()
    if db.session.scalar(select(Job.cancel_requested).where(Job.id == job.id)):
        raise Cancelled()


def _endpoints(counts: Counts) -> list:
    if counts.endpoints is None or time.monotonic() - counts.endpoints_at >= ROUND_TRIP_EVERY:
        counts.endpoints, counts.endpoints_at = webhook_endpoints(), time.monotonic()
    return counts.endpoints


def _store(feed: FeedState, counts: Counts) -> dict:
    """What the pass's events say about the store (read again once a second, not once a page:
    after each page's commit, reading the feed or the store is a query)."""
    if counts.store is None or time.monotonic() - counts.store_at >= ROUND_TRIP_EVERY:
        counts.store, counts.store_at = events.store_summary(feed.store_link), time.monotonic()
    return counts.store


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
        try:  # Magento's entity ids are integers; a store's that are not cannot be paged by
            numbers = [int(i.get(spec.id_field)) for i in items if isinstance(i, dict) and i.get(spec.id_field) is not None]
        except (TypeError, ValueError):
            raise errors.BadStoreResponse(f"{spec.path} answered an {spec.id_field!r} that is not a number") from None
        if numbers:
            yield [str(n) for n in numbers]
        if len(items) < page_size or not numbers:
            return
        last = max(numbers)


def _reconcile(client: StoreClient, feed: FeedState, job: Job, owner: str, counts: Counts) -> None:
    """Every id the store has against every id emitted: the ones gone become ``deleted``
    events; ones never emitted (moved past a page-numbered pass by a deletion) are fetched
    and emitted. Only ids are held, never records."""
    spec = ENTITIES[feed.entity]
    present: set[str] = set()
    for ids in remote_ids(client, spec, probe.page_size_for(feed.store_link, MAX_PAGE_SIZE)):
        _check_cancel(job, counts)
        present.update(ids)
    renew(feed.id, owner)
    emitted = set(db.session.scalars(select(FeedRecord.record_id).where(
        FeedRecord.store_link_id == feed.store_link_id, FeedRecord.entity == spec.name)))
    gone = sorted(emitted - present)
    _fetch_missing(client, feed, spec, job, owner, sorted(present - emitted), counts)
    max_batch = 500
    for start in range(0, len(gone), max_batch):
        batch = gone[start:start + max_batch]
        db.session.execute(FeedRecord.__table__.delete().where(
            FeedRecord.store_link_id == feed.store_link_id, FeedRecord.entity == spec.name,
            FeedRecord.record_id.in_(batch)))
        events.record_many(db.session, _store(feed, counts), [
            events.RecordChange(f"{spec.event}.deleted", spec.name, record_id, None) for record_id in batch],
            endpoints=_endpoints(counts))
        counts.deleted += len(batch)
        db.session.commit()
        renew(feed.id, owner)
    feed.last_reconcile_at = utcnow()
    _progress(job, counts, 0)
    db.session.commit()


def _fetch_missing(client: StoreClient, feed: FeedState, spec: FeedEntity, job: Job, owner: str,
                   missing: list[str], counts: Counts) -> None:
    page_size = _page_size(feed)
    for start in range(0, len(missing), page_size):
        _check_cancel(job, counts)
        batch = missing[start:start + page_size]
        answer = client.search(spec.path, SearchCriteria().where(spec.filter_field, ",".join(batch), "in")
                               .order_by(spec.filter_field).page(page_size, 1))
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise errors.BadStoreResponse(f"{spec.path} did not answer with a search result")
        page = [r for r in items if isinstance(r, dict)]
        renew(feed.id, owner, seen=len(page))
        if page:
            _emit(feed, spec, page, counts)
            _progress(job, counts, len(page))
        db.session.commit()


# --- stock -----------------------------------------------------------------------------------

STOCK_PATH = "inventory/source-items"
#: CatalogInventory's list of stock items (stores without MSI): Magento's only list endpoint
#: for them, ``StockRegistryInterface::getLowStockItems($scopeId, $qty, $currentPage, $pageSize)``,
#: asked with a ceiling no quantity reaches so that every item is "low".
LEGACY_STOCK_PATH = "stockItems/lowStock"
LEGACY_QTY_CEILING = "999999999"


def _stock_pass(client: StoreClient, feed: FeedState, job: Job, owner: str, counts: Counts) -> None:
    """Stock carries no ``updated_at``: every pass reads every item and emits ``stock.updated``
    for each whose quantity or status changed. MSI source items where the store has them
    (``sku@source``), else CatalogInventory's stock items (``product_id@stock``)."""
    page_size = _page_size(feed)
    try:
        pages = _source_item_pages(client, page_size)
        first = next(pages)
        feed.note = None
    except errors.NotFound:
        db.session.rollback()
        pages = _legacy_stock_pages(client, page_size)
        first = next(pages)
        feed.note = "no MSI on this store: stock is read from CatalogInventory's stock items"
    feed_id = feed.id
    for keyed in _chain(first, pages):
        _check_cancel(job, counts)
        renew(feed_id, owner, seen=len(keyed))
        _write(feed, STOCK, keyed, _stock_event, counts, stamps=None)
        _progress(job, counts, len(keyed))
        db.session.commit()
    db.session.commit()


def _chain(first, rest):
    yield first
    yield from rest


def _stock_event(record_id: str, item: dict, kind: str) -> events.RecordChange:
    return events.RecordChange("stock.updated", STOCK, record_id, item,
                               STOCK_PATH if "source_code" in item else LEGACY_STOCK_PATH)


def _source_item_pages(client: StoreClient, page_size: int) -> Iterator[list[tuple[str, dict]]]:
    """Pages of MSI source items; always yields at least one (maybe empty) page."""
    batch: list[tuple[str, dict]] = []
    for item in client.iter_search(STOCK_PATH, SearchCriteria().order_by("source_item_id"), page_size=page_size):
        if isinstance(item, dict):
            batch.append((f"{item.get('sku')}@{item.get('source_code')}", item))
        if len(batch) >= page_size:
            yield batch
            batch = []
    yield batch


def _legacy_stock_pages(client: StoreClient, page_size: int) -> Iterator[list[tuple[str, dict]]]:
    """Pages of CatalogInventory stock items, counted from the first answer's ``total_count``;
    always yields at least one (maybe empty) page."""
    number, pages = 1, 1
    while number <= pages:
        answer = client.get(LEGACY_STOCK_PATH, params=[("scopeId", "0"), ("qty", LEGACY_QTY_CEILING),
                                                       ("currentPage", str(number)), ("pageSize", str(page_size))])
        items = answer.get("items") if isinstance(answer, dict) else None
        if not isinstance(items, list):
            raise errors.BadStoreResponse(f"{LEGACY_STOCK_PATH} did not answer with a list of stock items")
        if number == 1:
            pages = max(-(-_count(answer) // page_size), 1)
        yield [(f"{i.get('product_id')}@{i.get('stock_id')}", i) for i in items
               if isinstance(i, dict) and i.get("product_id") is not None]
        number += 1
