"""The Jobs page (live progress), cancel and retry, and *Sync now* on a store's page."""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from ..dashboard.forms import ActionForm
from ..dashboard.routes import STORE, _visible
from ..extensions import db
from ..models import StoreLink, utcnow
from . import schedule
from .models import FeedState, Job
from .sync import FeedError

bp = Blueprint("feeds", __name__)

SHOWN = 100
JOB = "/jobs/<int(max=2147483647):job_id>"


def visible_jobs():
    query = select(Job).order_by(Job.id.desc()).limit(SHOWN)
    if not current_user.is_admin:
        query = query.join(StoreLink, StoreLink.id == Job.store_link_id).where(StoreLink.owner_id == current_user.id)
    return query


def _job(job_id: int) -> Job:
    return db.session.scalar(visible_jobs().where(Job.id == job_id)) or abort(404)


@bp.get("/jobs")
@login_required
def index():
    return render_template("feeds/jobs.html", jobs=db.session.scalars(visible_jobs()).all(), action=ActionForm())


@bp.get("/jobs.json")
@login_required
def index_json():
    return jsonify(jobs=[job.as_dict() for job in db.session.scalars(visible_jobs())])


@bp.post(JOB + "/cancel")
@login_required
def cancel(job_id: int):
    return _act(job_id, schedule.cancel, "Job {id} cancelled.")


@bp.post(JOB + "/retry")
@login_required
def retry(job_id: int):
    return _act(job_id, schedule.retry, "Queued again as job {id}.")


def _act(job_id: int, action, message: str):
    _job(job_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        job = action(job_id)
    except FeedError as exc:
        flash(str(exc), "error")
    else:
        flash(message.format(id=job.id), "success")
    return redirect(url_for("feeds.index"))


@bp.post(STORE + "/sync")
@login_required
def sync_now(link_id: int):
    link = _visible(link_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    if link.status != StoreLink.LINKED:
        flash("Only a linked store can be synced.", "error")
        return redirect(url_for("dashboard.store", link_id=link.id))
    queued = schedule.sync_soon(link.id)
    flash(f"Queued {len(queued)} sync jobs.", "success")
    return redirect(url_for("feeds.index"))


def feeds_of(link: StoreLink) -> list[FeedState]:
    """For the store's page."""
    return db.session.scalars(select(FeedState).where(FeedState.store_link_id == link.id)
                              .order_by(FeedState.entity)).all()


def lag(feed: FeedState) -> str:
    if feed.last_success_at is None:
        return "never synced"
    seconds = int((utcnow() - feed.last_success_at).total_seconds())
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
