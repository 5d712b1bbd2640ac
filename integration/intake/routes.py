"""``POST /magento/events/<store>/<source>/<path token>`` (the store's pushes) and the intake
panel's actions on a store's page."""

from __future__ import annotations

from flask import (Blueprint, Response, abort, current_app, flash, jsonify, redirect, render_template, request,
                   url_for)
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from ..dashboard.forms import ActionForm
from ..dashboard.routes import STORE, _visible, admin_required
from ..extensions import csrf, limiter
from ..web import body_within
from . import public_base, service, subscriptions, verify

bp = Blueprint("intake", __name__)


@bp.post("/magento/events/<int:link_id>/<source>/<token>")
@csrf.exempt
@limiter.limit(lambda: current_app.config.get("INTAKE_RATE_LIMIT", "1200 per minute"))
def receive(link_id: int, source: str, token: str):
    if source not in verify.SOURCES or len(token) > 64:
        abort(404)
    try:
        body = body_within(int(service.setting("INTAKE_MAX_BYTES")))
    except RequestEntityTooLarge:
        body = None
    answer = service.receive(link_id, source, token, body, request.headers,
                             event_name=request.args.get("event", "")[:200] or None, remote_addr=request.remote_addr)
    if answer.status == 200:
        # Adobe Commerce webhooks read the answer as operations: "success" changes nothing.
        return jsonify(op="success")
    return Response(answer.text + "\n", answer.status, content_type="text/plain; charset=utf-8")


def _form_ok() -> None:
    if not ActionForm().validate_on_submit():
        abort(400)


@bp.post(STORE + "/intake/<source>")
@login_required
@admin_required
def enable(link_id: int, source: str):
    link = _visible(link_id)
    _form_ok()
    try:
        made, token = service.enable(link, source, secret=request.form.get("secret") or None,
                                     public_key=request.form.get("public_key") or None,
                                     header_name=request.form.get("header_name") or None,
                                     user=current_user, remote_addr=request.remote_addr)
    except service.IntakeSetupError as exc:
        flash(f"Not set up: {exc}", "error")
        return redirect(url_for("dashboard.store", link_id=link.id) + "#intake")
    base = public_base()
    url = subscriptions.endpoint_url(base, link.id, source, token)
    return render_template("intake/enabled.html", link=link, source=made, url=url)


@bp.post(STORE + "/intake/<source>/disable")
@login_required
@admin_required
def disable(link_id: int, source: str):
    link = _visible(link_id)
    _form_ok()
    if service.disable(link, source, user=current_user, remote_addr=request.remote_addr):
        flash(f"Events from {source} are no longer accepted for this store.", "info")
    return redirect(url_for("dashboard.store", link_id=link.id) + "#intake")


@bp.post(STORE + "/intake/subscribe")
@login_required
@admin_required
def subscribe(link_id: int):
    from .. import jobs

    link = _visible(link_id)
    _form_ok()
    jobs.enqueue(subscriptions.after_link, link.id, public_base())
    flash("Looking for the asynchronous events module on the store; subscriptions follow if it is there.", "info")
    return redirect(url_for("dashboard.store", link_id=link.id) + "#intake")


@bp.post(STORE + "/intake/messages/<int:message_id>/replay")
@login_required
def replay(link_id: int, message_id: int):
    link = _visible(link_id)
    _form_ok()
    try:
        service.replay(link, message_id, user=current_user, remote_addr=request.remote_addr)
    except service.IntakeSetupError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Event {message_id} queued again.", "info")
    return redirect(url_for("dashboard.store", link_id=link.id) + "#intake")
