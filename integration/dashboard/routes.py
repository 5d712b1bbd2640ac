"""The operators' view of linked stores."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import func, select

from ..extensions import db
from ..models import AuditEvent, StoreLink

bp = Blueprint("dashboard", __name__)

PAGE_SIZE = 50
STATUSES = (StoreLink.PENDING, StoreLink.LINKED, StoreLink.FAILED, StoreLink.REVOKED)


def visible_links():
    query = select(StoreLink)
    if not current_user.is_admin:
        query = query.where(StoreLink.owner_id == current_user.id)
    return query


@bp.get("/")
@login_required
def index():
    query = visible_links()
    status = request.args.get("status", "")
    if status in STATUSES:
        query = query.where(StoreLink.status == status)
    term = request.args.get("q", "").strip()[:200]
    if term:
        query = query.where(StoreLink.base_url.contains(term, autoescape=True))
    page = max(request.args.get("page", 1, type=int), 1)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    links = db.session.scalars(
        query.order_by(StoreLink.updated_at.desc(), StoreLink.id.desc()).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    return render_template("dashboard/index.html", links=links, total=total, page=page,
                           pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1), status=status, q=term,
                           statuses=STATUSES)


@bp.get("/stores/<int:link_id>")
@login_required
def store(link_id: int):
    link = db.session.scalar(visible_links().where(StoreLink.id == link_id)) or abort(404)
    events = db.session.scalars(
        select(AuditEvent).where(AuditEvent.store_link_id == link.id).order_by(AuditEvent.id.desc()).limit(100)
    ).all()
    return render_template("dashboard/store.html", link=link, events=events)
