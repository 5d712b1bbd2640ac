"""The Jobs page (live progress), cancel and retry, and *Sync now* on a store's page."""

from __future__ import annotations

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, send_file, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField, StringField, SubmitField
from wtforms.validators import Length, Optional

from ..dashboard.forms import ActionForm
from ..dashboard.routes import STORE, _visible
from ..extensions import db
from ..models import StoreLink, utcnow
from ..magento.export import ExportError
from . import exports, schedule
from .models import FeedState, Job
from .sync import FeedError

bp = Blueprint("feeds", __name__)

SHOWN = 100
JOB = "/jobs/<int(max=2147483647):job_id>"


class ExportForm(FlaskForm):
    entity = SelectField("Records", choices=["products", "orders", "customers"])
    format = SelectField("Format (csv, or jsonl: JSON Lines)", choices=["csv", "jsonl"])
    since = StringField("Updated since (optional)", validators=[Optional(), Length(max=40)],
                        render_kw={"type": "date"})
    submit = SubmitField("Export")


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


@bp.post(STORE + "/export")
@login_required
def export(link_id: int):
    link = _visible(link_id)
    form = ExportForm()
    if not form.validate_on_submit():
        if form.csrf_token.errors:
            abort(400)
        flash("Export: " + "; ".join(f"{form[name].label.text}: {', '.join(errs)}"
                                     for name, errs in form.errors.items()), "error")
        return redirect(url_for("dashboard.store", link_id=link.id))
    try:
        job = exports.queue_export(link, form.entity.data, form.format.data, form.since.data or None)
    except ExportError as exc:
        flash(f"Export: {exc}", "error")
        return redirect(url_for("dashboard.store", link_id=link.id))
    flash(f"Export queued as job {job.id}: its file can be downloaded here when it is done.", "success")
    return redirect(url_for("feeds.index"))


@bp.get(JOB + "/download")
@login_required
def download(job_id: int):
    job = _job(job_id)  # the store's owner and admins only
    path = exports.file_of(job)
    if path is None:
        abort(404)
    return send_file(path, mimetype=exports.MEDIA_TYPES[job.export_format], as_attachment=True,
                     download_name=exports.download_name(job), max_age=0)


def feeds_of(link: StoreLink) -> list[FeedState]:
    """For the store's page."""
    return db.session.scalars(select(FeedState).where(FeedState.store_link_id == link.id)
                              .order_by(FeedState.entity)).all()


def lag(feed: FeedState) -> str:
    if feed.last_success_at is None:
        return "never synced"
    seconds = int((utcnow() - feed.last_success_at).total_seconds())
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
