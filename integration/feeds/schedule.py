"""When feeds run: a periodic tick (on the job runner, once per interval across all hosts with
RQ, in every process with the embedded runner) queues a sync job for each feed that is due.

Queueing is itself claimed in the database (a conditional UPDATE moving ``next_run_at``), so
two ticks in two processes never queue the same feed twice; running is claimed again by the
job's lease (``sync.claim``). A job lost with its worker leaves the feed to fall due again.

The database is the source of truth for every job: the tick also takes up an export whose
worker died (its lease expired) and queues again a job the runner no longer holds (a Redis
that restarted keeps nothing).
"""

from __future__ import annotations

import datetime as dt
import logging

from flask import current_app
from sqlalchemy import delete, select, update

from .. import jobs
from . import exports, lease
from ..extensions import db
from ..models import StoreLink, utcnow
from .models import FeedState, Job
from .sync import ALL, FeedError, UnknownEntity, enqueue, feed_for, hand_over, queue_key, setting

log = logging.getLogger("integration.feeds")

TASK = "feeds.tick"
#: Finished and cancelled sync jobs are kept this long for the Jobs page.
KEEP_FINISHED = dt.timedelta(days=1)
#: An export whose worker died is taken up again this often, then fails (it may be what kills them).
TAKEOVERS = 3
#: A queued job is looked for in the runner's queue once it has been queued this long (seconds;
#: ``JOBS_REQUEUE_AFTER``): the moment between its commit and its entry is not a loss.
REQUEUE_AFTER = 30.0


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
    _lost(now)
    exports.purge_expired()
    db.session.execute(delete(Job).where(Job.state.in_((Job.FINISHED, Job.CANCELLED)), Job.file_name.is_(None),
                                         Job.finished_at < now - KEEP_FINISHED))
    db.session.commit()
    return queued


def _abandoned(now: dt.datetime) -> None:
    """A job still "running" while nobody holds its lease any more: its worker died. A sync's
    lease is its feed's, and the feed goes on from its last page with the next job; an export's
    is its own, and the same job is queued again to go on with its file."""
    period = dt.timedelta(seconds=setting("SYNC_LEASE"))
    held = select(FeedState.id).where(FeedState.store_link_id == Job.store_link_id, FeedState.entity == Job.entity,
                                      lease.held(FeedState, now))
    db.session.execute(update(Job).where(Job.kind == "sync", Job.state == Job.RUNNING, Job.started_at < now - period,
                                         ~held.exists())
                       .values(state=Job.FAILED, finished_at=now,
                               error="the worker running it stopped; the feed goes on from its last page")
                       .execution_options(synchronize_session=False))
    dead = db.session.scalars(select(Job).where(Job.kind == "export", Job.state == Job.RUNNING,
                                                ~lease.held(Job, now))).all()
    for job in dead:
        # Claimed like a lease, so two ticks take a dead export up once.
        taken = db.session.execute(
            update(Job).where(Job.id == job.id, Job.state == Job.RUNNING, lease.free(Job, now))
            .values(lease_owner=None, lease_expires_at=None, takeovers=Job.takeovers + 1)
            .execution_options(synchronize_session=False))
        db.session.commit()
        if taken.rowcount != 1:
            continue
        db.session.refresh(job)
        if job.takeovers > TAKEOVERS:
            exports.give_up(job, f"the worker running it stopped {TAKEOVERS + 1} times; Retry starts it again")
        else:
            enqueue(job)  # it goes on with the part of its file already written


def _lost(now: dt.datetime) -> None:
    """Queued jobs whose entry the runner no longer holds (Redis restarted): queued again. A
    job queued twice runs once (``take_job``)."""
    after = dt.timedelta(seconds=float(current_app.config.get("JOBS_REQUEUE_AFTER", REQUEUE_AFTER)))
    waiting = db.session.scalars(select(Job).where(Job.state == Job.QUEUED,
                                                   (Job.queued_at.is_(None)) | (Job.queued_at <= now - after))).all()
    if not waiting:
        return
    held = jobs.pending({job.queue_key for job in waiting if job.queue_key})
    for job in waiting:
        if job.queue_key in held:
            continue
        # A new key in a conditional UPDATE: two ticks seeing the same lost entry queue it once.
        same = Job.queue_key.is_(None) if job.queue_key is None else Job.queue_key == job.queue_key
        key = queue_key()
        mine = db.session.execute(update(Job).where(Job.id == job.id, Job.state == Job.QUEUED, same)
                                  .values(queue_key=key, queued_at=now).execution_options(synchronize_session=False))
        db.session.commit()
        if mine.rowcount == 1:
            log.warning("job %s was queued but the runner no longer had it (Redis restarted?): queued again", job.id)
            db.session.refresh(job)
            hand_over(job)


def _queue(link_id: int, entity: str, *, full: bool) -> Job:
    job = Job(kind="sync", store_link_id=link_id, entity=entity, full=full)
    db.session.add(job)
    enqueue(job)
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
        # A pass cut into slices holds its feed for this job's next run: the feed is free again
        # (the next job goes on from the pass's last page).
        lease.release(FeedState, lease.heir(job.id))
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
