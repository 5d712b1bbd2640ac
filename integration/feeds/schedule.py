"""When feeds run: a periodic tick (on the job runner, once per interval across all hosts with
RQ, in every process with the embedded runner) queues a sync job for each feed that is due.

Queueing is itself claimed in the database (a conditional UPDATE moving ``next_run_at``), so
two ticks in two processes never queue the same feed twice; running is claimed again by the
job's lease (``sync.claim``). A job lost with its worker leaves the feed to fall due again.
"""

from __future__ import annotations

import datetime as dt

from flask import current_app
from sqlalchemy import delete, select, update

from .. import jobs
from . import exports
from ..extensions import db
from ..models import StoreLink, utcnow
from .models import FeedState, Job
from .sync import ALL, FeedError, UnknownEntity, feed_for, run_job, setting

TASK = "feeds.tick"
#: Finished and cancelled sync jobs are kept this long for the Jobs page.
KEEP_FINISHED = dt.timedelta(days=1)


class JobStateError(FeedError):
    """Cancel or retry asked of a job in a state that does not allow it."""


class NoSuchJob(FeedError):
    pass


def entities() -> tuple[str, ...]:
    return tuple(current_app.config.get("SYNC_ENTITIES") or ALL)


def tick() -> int:
    """Queue every due feed of every linked store; returns how many were queued."""
    now = utcnow()
    linked = db.session.scalars(select(StoreLink.id).where(StoreLink.status == StoreLink.LINKED)).all()
    have = {tuple(row) for row in db.session.execute(select(FeedState.store_link_id, FeedState.entity)
                                  .where(FeedState.store_link_id.in_(linked)))}
    for link_id in linked:
        for entity in entities():
            if (link_id, entity) not in have:
                feed_for(link_id, entity)
    due = db.session.scalars(
        select(FeedState.id).join(StoreLink, StoreLink.id == FeedState.store_link_id)
        .where(StoreLink.status == StoreLink.LINKED, FeedState.entity.in_(entities()),
               (FeedState.next_run_at.is_(None)) | (FeedState.next_run_at <= now),
               (FeedState.lease_owner.is_(None)) | (FeedState.lease_expires_at < now),
               (FeedState.backoff_until.is_(None)) | (FeedState.backoff_until <= now))
        .order_by(FeedState.next_run_at.is_not(None), FeedState.next_run_at)).all()
    queued = 0
    interval = dt.timedelta(seconds=setting("SYNC_INTERVAL"))
    for feed_id in due:
        claimed = db.session.execute(
            update(FeedState).where(FeedState.id == feed_id,
                                    (FeedState.next_run_at.is_(None)) | (FeedState.next_run_at <= now))
            .values(next_run_at=now + interval).execution_options(synchronize_session=False))
        db.session.commit()
        if claimed.rowcount == 1:
            feed = db.session.get(FeedState, feed_id)
            _queue(feed.store_link_id, feed.entity, full=False)
            queued += 1
    _abandoned(now)
    exports.purge_expired()
    db.session.execute(delete(Job).where(Job.state.in_((Job.FINISHED, Job.CANCELLED)), Job.file_name.is_(None),
                                         Job.finished_at < now - KEEP_FINISHED))
    db.session.commit()
    return queued


def _abandoned(now: dt.datetime) -> None:
    """A job still "running" while nobody holds its feed's lease any more: its worker died."""
    lease = dt.timedelta(seconds=setting("SYNC_LEASE"))
    held = select(FeedState.id).where(FeedState.store_link_id == Job.store_link_id, FeedState.entity == Job.entity,
                                      FeedState.lease_owner.is_not(None), FeedState.lease_expires_at >= now)
    db.session.execute(update(Job).where(Job.kind == "sync", Job.state == Job.RUNNING, Job.started_at < now - lease,
                                         ~held.exists())
                       .values(state=Job.FAILED, finished_at=now,
                               error="the worker running it stopped; the feed goes on from its last page")
                       .execution_options(synchronize_session=False))


def _queue(link_id: int, entity: str, *, full: bool) -> Job:
    job = Job(kind="sync", store_link_id=link_id, entity=entity, full=full)
    db.session.add(job)
    db.session.commit()
    jobs.enqueue(run_job, job.id)
    return job


def sync_soon(link_id: int, entities_: list[str] | None = None, *, full: bool = False) -> list[Job]:
    """*Sync now*: a job per entity, queued at once."""
    chosen = entities_ or list(entities())
    for entity in chosen:
        if entity not in ALL:
            raise UnknownEntity(f"unknown entity {entity!r}; choose one of {', '.join(ALL)}")
    return [_queue(link_id, entity, full=full) for entity in chosen]


def _job(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise NoSuchJob(f"no job {job_id}")
    return job


def cancel(job_id: int) -> Job:
    """A queued job is cancelled at once; a running one stops after its current page."""
    job = _job(job_id)
    if job.state == Job.QUEUED:
        job.state, job.finished_at, job.error = Job.CANCELLED, utcnow(), "cancelled"
    elif job.state == Job.RUNNING:
        job.cancel_requested = True
    else:
        raise JobStateError(f"job {job_id} is {job.state}: only queued or running jobs can be cancelled")
    db.session.commit()
    return job


def retry(job_id: int) -> Job:
    """A failed or cancelled job again, as a new job."""
    job = _job(job_id)
    if job.state not in (Job.FAILED, Job.CANCELLED):
        raise JobStateError(f"job {job_id} is {job.state}: only failed or cancelled jobs can be retried")
    if job.kind == "export":
        return exports.again(job)
    return _queue(job.store_link_id, job.entity, full=job.full)
