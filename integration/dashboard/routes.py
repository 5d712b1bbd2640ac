"""The operators' view of linked stores: list, details, test, unlink, API console, manual link."""

from __future__ import annotations

import json
import time

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from .. import doctor, stores
from ..activation import expired, unclaimed
from ..extensions import db, limiter
from ..magento.client import Credentials
from ..magento.errors import MagentoError
from ..models import AuditEvent, StoreLink
from .forms import ActionForm, ConsoleForm, LabelForm, ManualLinkForm

bp = Blueprint("dashboard", __name__)

PAGE_SIZE = 50
#: Past this, the offset would not fit the database's integers; nobody pages this far.
MAX_PAGE = 100_000
STATUSES = (StoreLink.PENDING, StoreLink.LINKED, StoreLink.FAILED, StoreLink.REVOKED, StoreLink.UNLINKED)
#: Store ids are the database's 32-bit integers; a larger one is simply not a store (404).
STORE = "/stores/<int(max=2147483647):link_id>"


def visible_links():
    return stores.visible_to(current_user)


def _page() -> int:
    page = request.args.get("page", 1, type=int)
    if not 1 <= page <= MAX_PAGE:
        abort(400, description=f"The page must be a number from 1 to {MAX_PAGE:,}.")
    return page


def admin_required(view):
    from functools import wraps

    @wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated or not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapped


@bp.get("/")
@login_required
def index():
    query = visible_links()
    # Callbacks nobody has claimed (anyone can post one) wait under "pending", not in the list;
    # expired ones are nowhere, whether or not a purge has deleted them yet.
    waiting = query.where(unclaimed(), ~expired())
    status = request.args.get("status", "")
    if status == StoreLink.PENDING:
        query = query.where(StoreLink.status == status, ~expired())
    elif status in STATUSES:
        query = query.where(StoreLink.status == status)
    else:
        status = ""
    term = request.args.get("q", "").strip()[:200]
    if term:
        # Case-insensitive on both databases (LIKE is not, on PostgreSQL).
        query = query.where(StoreLink.base_url.icontains(term, autoescape=True)
                            | StoreLink.label.icontains(term, autoescape=True))
    page = _page()
    # One query per page: the page's rows, their owners joined, and the totals as uncorrelated
    # subqueries (evaluated once, from the indexes: the unclaimed are few and all pending, so
    # "all but the unclaimed" is counted as a difference, not row by row).
    total = _count(query)
    if not status:
        total = total - _count(query.where(unclaimed()))
        query = query.where(~unclaimed())
    totals = (total.label("total"), _count(waiting).label("waiting"))
    rows = db.session.execute(
        query.add_columns(*totals)
        .options(joinedload(StoreLink.owner))
        .order_by(StoreLink.updated_at.desc(), StoreLink.id.desc())
        .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    links = [row[0] for row in rows]
    # A page past the end has no row to carry the totals; only then are they asked for alone.
    counts = rows[0] if rows else db.session.execute(select(*totals)).one()
    return render_template("dashboard/index.html", links=links, total=counts.total, page=page,
                           pages=max((counts.total + PAGE_SIZE - 1) // PAGE_SIZE, 1), status=status, q=term,
                           statuses=STATUSES, unclaimed=counts.waiting,
                           expiry_hours=current_app.config["PENDING_EXPIRY_HOURS"])


def _count(query):
    return select(func.count()).select_from(query.with_only_columns(StoreLink.id).subquery()).scalar_subquery()


def _visible(link_id: int) -> StoreLink:
    return db.session.scalar(visible_links().where(StoreLink.id == link_id, ~expired())) or abort(404)


@bp.get(STORE)
@login_required
def store(link_id: int):
    link = _visible(link_id)
    return _store_page(link, ConsoleForm(formdata=None))


def _store_page(link: StoreLink, console: ConsoleForm, result: dict | None = None, status: int = 200,
                label: LabelForm | None = None):
    events = db.session.scalars(
        select(AuditEvent).options(joinedload(AuditEvent.user))
        .where(AuditEvent.store_link_id == link.id).order_by(AuditEvent.id.desc()).limit(100)
    ).all()
    label = label or LabelForm(formdata=None, data={"label": link.label or ""})
    from ..feeds.routes import ExportForm, feeds_of, lag
    from ..probe import capabilities_of

    return render_template("dashboard/store.html", link=link, events=events, action=ActionForm(),
                           console=console, result=result, label=label, feeds=feeds_of(link),
                           feed_lag=lag, capabilities=capabilities_of(link),
                           export=ExportForm(formdata=None)), status


@bp.post(STORE + "/test")
@login_required
def test_connection(link_id: int):
    link = _visible(link_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        result = stores.check(link, user=current_user, remote_addr=request.remote_addr)
    except MagentoError as exc:
        flash(f"Test failed: {exc.message} {exc.hint}", "error")
    else:
        code = result["store_configs"][0].get("code", "?")
        flash(f"Connection works: {result['magento_version'] or 'Magento (version hidden)'}, store view {code}.",
              "success")
    return redirect(url_for("dashboard.store", link_id=link.id))


@bp.post(STORE + "/unlink")
@login_required
def unlink(link_id: int):
    link = _visible(link_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    stores.unlink(link, user=current_user, remote_addr=request.remote_addr)
    flash("Store unlinked: its tokens are deleted; the history is kept. Reauthorize in Magento to link it again.",
          "info")
    return redirect(url_for("dashboard.store", link_id=link.id))


@bp.post(STORE + "/label")
@login_required
def label(link_id: int):
    link = _visible(link_id)
    form = LabelForm()
    if not form.validate_on_submit():
        return _store_page(link, ConsoleForm(formdata=None), label=form, status=400)
    try:
        stores.set_label(link, form.label.data or "", user=current_user, remote_addr=request.remote_addr)
    except stores.InvalidLabel as exc:
        form.label.errors = [str(exc)]
        return _store_page(link, ConsoleForm(formdata=None), label=form, status=400)
    flash("Label saved.", "success")
    return redirect(url_for("dashboard.store", link_id=link.id))


@bp.post(STORE + "/console")
@login_required
@admin_required
def console(link_id: int):
    link = _visible(link_id)
    form = ConsoleForm()
    if not form.validate_on_submit():
        return _store_page(link, form, status=400)
    result = console_call(link, form)
    if result["ok"]:
        result["body"] = json.dumps(result.pop("payload"), indent=2, ensure_ascii=False)
    else:
        result["body"] = result.pop("message")
    return _store_page(link, form, result)


def console_call(link: StoreLink, form: ConsoleForm) -> dict:
    """A validated console request (the console's form, or the API explorer's *Try it*), signed
    and sent through ``stores.contact``: one audit entry per call, whoever asks."""
    method, path = form.method.data, form.path.data.strip()
    started = time.perf_counter()
    try:
        with stores.contact(link, "console.call", f"{method} {path[:300]}", user=current_user,
                            remote_addr=request.remote_addr) as client:
            payload = client.request(method, path, params=form.pairs() or None, json=form.json_body(),
                                     store_code=form.store_code.data)
        result = {"ok": True, "status": 200, "payload": payload}
    except (MagentoError, ValueError) as exc:
        result = {"ok": False, "status": getattr(exc, "status", None), "message": str(exc),
                  "hint": getattr(exc, "hint", "")}
    result["ms"] = (time.perf_counter() - started) * 1000
    return result


@bp.post(STORE + "/probe")
@login_required
def probe_now(link_id: int):
    from .. import probe

    link = _visible(link_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        found = probe.probe(link, user=current_user, remote_addr=request.remote_addr)
    except MagentoError as exc:
        flash(f"Probe failed: {exc.message} {exc.hint}", "error")
    else:
        flash(f"Probed: {len(found.operations)} operations granted"
              f"{', ' + str(len(found.missing())) + ' of our features lack a resource' if found.missing() else ''}.",
              "success")
    target = "explorer.page" if request.args.get("next") == "explorer" else "dashboard.store"
    return redirect(url_for(target, link_id=link.id))


@bp.get(STORE + "/doctor")
@login_required
def store_doctor(link_id: int):
    """The activation doctor for one store: each step of its activations, the cause, the fix."""
    link = _visible(link_id)
    return render_template("dashboard/doctor.html", link=link, diagnosis=doctor.diagnose(link),
                           checklist=doctor.checklist(), action=ActionForm(), window=doctor.window())


@bp.get("/doctor")
@login_required
@admin_required
def doctor_overview():
    """For a callback that never arrived there is no store yet: the checklist, the test POST and the
    pop-ups Magento opened for keys we never heard of."""
    return render_template("dashboard/doctor_overview.html", orphans=doctor.orphan_popups(),
                           checklist=doctor.checklist(), action=ActionForm())


@bp.post("/doctor/test-callback")
@bp.post(STORE + "/doctor/test-callback")
@login_required
@admin_required
@limiter.limit("6 per minute")
def doctor_test_callback(link_id: int | None = None):
    """The "send a test POST" button: our server POSTs to our own public callback URL."""
    link = _visible(link_id) if link_id is not None else None
    if not ActionForm().validate_on_submit():
        abort(400)
    result = doctor.send_test_post(user=current_user, remote_addr=request.remote_addr)
    flash(result.summary(), "success" if result.ok else "error")
    if link is not None:
        return redirect(url_for("dashboard.store_doctor", link_id=link.id) + "#callback")
    return redirect(url_for("dashboard.doctor_overview"))


@bp.route("/stores/new", methods=["GET", "POST"])
@login_required
def manual_link():
    form = ManualLinkForm()
    if form.validate_on_submit():
        creds = Credentials(form.consumer_key.data, form.consumer_secret.data, form.access_token.data,
                            form.access_token_secret.data)
        try:
            link = stores.add_manual(form.base_url.data, creds, owner=current_user, remote_addr=request.remote_addr)
        except (MagentoError, ValueError) as exc:
            flash(f"Not linked: {exc} {getattr(exc, 'hint', '')}", "error")
            return render_template("dashboard/manual_link.html", form=form), 400
        flash("Store linked: the test call succeeded.", "success")
        return redirect(url_for("dashboard.store", link_id=link.id))
    return render_template("dashboard/manual_link.html", form=form), (400 if form.is_submitted() else 200)


@bp.get("/audit")
@login_required
@admin_required
def audit_trail():
    page = _page()
    events = db.session.scalars(
        select(AuditEvent).options(joinedload(AuditEvent.user), joinedload(AuditEvent.store_link))
        .order_by(AuditEvent.id.desc()).limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)
    ).all()
    return render_template("dashboard/audit.html", events=events[:PAGE_SIZE], page=page,
                           more=len(events) > PAGE_SIZE)
