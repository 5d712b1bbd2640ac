"""The one lease of background work: who runs a thing, until when. A feed's lease keeps two syncs
of it apart; an export's lease (on its job) says its worker is alive. Taken with a conditional
UPDATE (two workers never both win), renewed with every page in that page's transaction, and left
to expire by a worker that dies: the tick then takes the work up again (``schedule``).

A lease can be handed to a job rather than a worker (``heir``): a first pass cut into several
jobs keeps its feed between them, and the job's next run takes the feed back from it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from ..extensions import db
from ..models import utcnow


class LeaseLost(Exception):
    """Another worker took this over (our lease expired): stop without committing."""


def heir(job_id: int) -> str:
    """The owner a lease is handed to between two runs of one job."""
    return f"job:{job_id}"


def free(model, now: dt.datetime, *, heir_: str | None = None):
    """Nobody holds a live lease (or it was handed to ``heir_``)."""
    clause = model.lease_owner.is_(None) | (model.lease_expires_at < now)
    return clause | (model.lease_owner == heir_) if heir_ else clause


def held(model, now: dt.datetime):
    return model.lease_owner.is_not(None) & (model.lease_expires_at >= now)


def take(model, row_id: int, owner: str, seconds: float, *where, heir_: str | None = None, **values) -> bool:
    """Take the lease of one row if it is free (and ``where`` holds), setting ``values`` too; commits."""
    now = utcnow()
    result = db.session.execute(
        update(model).where(model.id == row_id, free(model, now, heir_=heir_), *where)
        .values(lease_owner=owner, lease_expires_at=now + dt.timedelta(seconds=seconds), **values)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount == 1


def renew(model, row_id: int, owner: str, seconds: float, *, to: str | None = None, **values) -> None:
    """Part of the caller's transaction: raises ``LeaseLost`` if the lease is no longer ours.
    ``to``: hand it over instead (to a job's next run). ``values``: written by the same UPDATE."""
    result = db.session.execute(
        update(model).where(model.id == row_id, model.lease_owner == owner)
        .values(lease_owner=to or owner, lease_expires_at=utcnow() + dt.timedelta(seconds=seconds), **values)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        db.session.rollback()
        raise LeaseLost("this job's lease expired and another worker took it over")


def release(model, owner: str, *where) -> None:
    """Give up the leases ``owner`` holds among the rows ``where`` selects; commits."""
    db.session.execute(update(model).where(model.lease_owner == owner, *where)
                       .values(lease_owner=None, lease_expires_at=None)
                       .execution_options(synchronize_session=False))
    db.session.commit()
