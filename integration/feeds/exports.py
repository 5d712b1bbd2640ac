"""Exports of a store's products, orders or customers: ``flask --app app stores export`` and
the dashboard's *Export* run the same function (``export_store``: the store contacted and
audited once, every request under the store's concurrency cap, ``magento.export`` doing the
paging and the file). From the dashboard it runs as a job: progress on the Jobs page, a file
under the instance folder's ``exports/`` (named by the job and a random token, never by
anything from outside), downloadable by whoever sees the job (the store's owner and admins)
until ``INTEGRATION_EXPORT_RETENTION_HOURS`` have passed, then deleted.

A running export holds a lease on its job, renewed with every page. A worker that dies lets it
expire and the tick queues the job again: it goes on with its file (``magento.export`` resumes
an interrupted file after its last complete page), a few times at most. A run also stops after
``SYNC_SLICE`` seconds of pages and queues its job again, so no run nears the runner's limit.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import time
from collections.abc import Callable
from typing import IO

from flask import current_app
from sqlalchemy import select

from .. import stores
from ..extensions import db
from ..magento import errors
from ..magento import export as paged_export
from ..magento.export import ENTITIES, FORMATS, ExportError, parse_since
from ..models import StoreLink, User, utcnow
from . import lease
from .lease import LeaseLost
from .models import Job
from .sync import Cancelled, enqueue, setting, store_slot, take_job, worker_name

FOLDER = "exports"
DEFAULT_RETENTION_HOURS = 24
#: Pages fetched at once by a dashboard export (the store's cap still bounds it).
CONCURRENCY = 4
PAGE_SIZE = 100  # INTEGRATION_EXPORT_PAGE_SIZE
MEDIA_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}


def export_store(link: StoreLink, entity: str, output: str | None, *, fmt: str | None = None,
                 since: str | None = None, concurrency: int = CONCURRENCY, page_size: int = PAGE_SIZE,
                 stdout: IO[str] | None = None, user: User | None = None, remote_addr: str | None = None,
                 on_total: Callable[[int], None] | None = None,
                 on_record: Callable[[], None] | None = None,
                 on_resume: Callable[[int], None] | None = None) -> int:
    """Every record of ``entity`` to ``output`` (or ``stdout``); one audit entry; returns how
    many were fetched. Raises ``MagentoError`` or ``ExportError``."""
    from .. import probe  # probe → stores → feeds: imported when used

    purpose = f"{entity}{f' since {since}' if since else ''}"
    page_size = probe.page_size_for(link, page_size)  # a store with input limits on refuses more
    with stores.contact(link, "store.exported", purpose, user=user, remote_addr=remote_addr,
                        pool_size=max(concurrency, 4), slot=store_slot(link.id),
                        deadline=None) as client:  # a deadline per page, not for the whole export
        count = paged_export.export(client, entity, output, fmt=fmt, since=since, concurrency=concurrency,
                                    page_size=page_size, stdout=stdout, on_total=on_total, on_record=on_record,
                                    on_resume=on_resume)
        if client.page_size_limit:  # learnt from a refusal: the next run asks for that at once
            probe.note_page_size_limit(link.id, client.page_size_limit)
        return count


def folder() -> str:
    path = os.path.join(current_app.instance_path, FOLDER)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def retention() -> dt.timedelta:
    return dt.timedelta(hours=float(current_app.config.get("EXPORT_RETENTION_HOURS", DEFAULT_RETENTION_HOURS)))


def queue_export(link: StoreLink, entity: str, fmt: str, since: str | None) -> Job:
    """Check what was asked (``ExportError`` says what is wrong) and queue the job."""
    if entity not in ENTITIES:
        raise ExportError(f"unknown entity {entity!r}; choose one of {', '.join(ENTITIES)}")
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose {' or '.join(FORMATS)}")
    since = parse_since(since) if since else None
    if link.status != StoreLink.LINKED:
        raise ExportError("only a linked store can be exported")
    job = Job(kind="export", store_link_id=link.id, entity=entity, export_format=fmt, export_since=since)
    db.session.add(job)
    enqueue(job)
    return job


def again(job: Job) -> Job:
    """*Retry* of a failed or cancelled export: the same export, as a new job."""
    fresh = Job(kind="export", store_link_id=job.store_link_id, entity=job.entity,
                export_format=job.export_format, export_since=job.export_since)
    db.session.add(fresh)
    enqueue(fresh)
    return fresh


class _SliceOver(Exception):
    """This run has read pages for long enough: the job goes on in a fresh run."""


def run_export_job(job_id: int) -> None:
    """What a worker runs for a queued export (new, going on, or taken up again)."""
    until = time.monotonic() + float(setting("SYNC_SLICE"))
    owner = worker_name()
    job = take_job(job_id, owner)
    if job is None:
        return  # cancelled while queued, or already taken
    link = db.session.get(StoreLink, job.store_link_id)
    if link is None or link.status != StoreLink.LINKED or not link.has_token:
        return give_up(job, "the store is not linked (revoked or unlinked)", Job.CANCELLED)
    if job.file_name is None:  # named once: a run taking the job up again goes on with this file
        job.file_name = f"{job.id}-{secrets.token_hex(8)}.{job.export_format}"
        db.session.commit()
    page_size = int(current_app.config.get("EXPORT_PAGE_SIZE", PAGE_SIZE))
    path = os.path.join(folder(), job.file_name)
    before = fetched = 0

    def on_resume(records: int) -> None:
        nonlocal before
        before = records

    def on_total(total: int) -> None:
        job.total = before + total
        db.session.commit()

    def on_record() -> None:
        nonlocal fetched
        fetched += 1
        if fetched % page_size == 0:  # progress, the lease and a cancel check once a page
            job.done = before + fetched
            lease.renew(Job, job.id, owner, setting("SYNC_LEASE"))
            db.session.commit()
            if db.session.scalar(select(Job.cancel_requested).where(Job.id == job.id)):
                raise Cancelled()
            if time.monotonic() >= until and (job.total is None or job.done < job.total):
                raise _SliceOver()  # the page is in the file: a fresh run goes on after it

    try:
        export_store(link, job.entity, path, fmt=job.export_format, since=job.export_since,
                     page_size=page_size, on_total=on_total, on_record=on_record, on_resume=on_resume)
    except LeaseLost:
        db.session.rollback()
        return  # taken up by another worker meanwhile: the job and its file are its now
    except _SliceOver:
        job.lease_owner = job.lease_expires_at = None
        return enqueue(job)
    except Cancelled:
        return give_up(job, "cancelled", Job.CANCELLED)
    except (errors.MagentoError, ExportError) as exc:
        return give_up(job, exc.message if isinstance(exc, errors.MagentoError) else str(exc))
    except Exception as exc:
        give_up(job, f"stopped by an internal error ({type(exc).__name__}); see the worker's log")
        raise
    job.done = before + fetched
    job.file_size = os.path.getsize(path)
    job.file_expires_at = utcnow() + retention()
    job.lease_owner = job.lease_expires_at = None
    _end(job, Job.FINISHED, None)


def give_up(job: Job, error: str, state: str = Job.FAILED) -> None:
    """End an export that will not finish, and delete what it wrote."""
    db.session.rollback()
    if job.file_name:
        _remove(os.path.join(folder(), job.file_name))
    job.file_name = job.lease_owner = job.lease_expires_at = None
    _end(job, state, error)


def _end(job: Job, state: str, error: str | None) -> None:
    job.state, job.error, job.finished_at = state, error, utcnow()
    db.session.commit()


def _remove(path: str) -> None:
    for leftover in (path, path + ".state.json", path + ".part.jsonl", path + ".tmp"):
        try:
            os.unlink(leftover)
        except FileNotFoundError:
            pass


def file_of(job: Job) -> str | None:
    """The export's file, if it can still be downloaded."""
    if not job.downloadable or os.path.basename(job.file_name) != job.file_name:
        return None
    path = os.path.join(folder(), job.file_name)
    return path if os.path.isfile(path) else None


def download_name(job: Job) -> str:
    return f"store-{job.store_link_id}-{job.entity}-{job.id}.{job.export_format}"


def purge_expired() -> int:
    """Delete export files past their retention (and any file no job knows); run by the tick."""
    now = utcnow()
    expired = db.session.scalars(select(Job).where(Job.kind == "export", Job.file_name.is_not(None),
                                                   Job.file_expires_at <= now)).all()
    for job in expired:
        _remove(os.path.join(folder(), job.file_name))
        job.file_name = None
    db.session.commit()
    known = set(db.session.scalars(select(Job.file_name).where(Job.file_name.is_not(None))))
    running = {str(i) for i in db.session.scalars(select(Job.id).where(Job.kind == "export",
                                                                        Job.state.in_((Job.QUEUED, Job.RUNNING))))}
    for name in os.listdir(folder()):
        if name not in known and name.split("-", 1)[0] not in running:
            _remove(os.path.join(folder(), name))
    return len(expired)
