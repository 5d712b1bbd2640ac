"""The Webhooks page (admins): add, list, delete endpoints, rotate a secret, read the delivery
log and replay a delivery. A new secret is shown in the answer to the POST that made it,
never put in the session (the session cookie is signed, not encrypted)."""

from __future__ import annotations


from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import SelectMultipleField, StringField, SubmitField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from ..dashboard.routes import admin_required
from ..events import TYPES
from . import service

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


class EndpointForm(FlaskForm):
    url = StringField("Endpoint URL", validators=[DataRequired(), Length(max=2048)],
                      render_kw={"placeholder": "https://erp.example.com/hooks/magento"})
    types = SelectMultipleField("Events (none ticked: all, including types added later)",
                                choices=list(TYPES), widget=ListWidget(prefix_label=False),
                                option_widget=CheckboxInput(), validate_choice=True)
    submit = SubmitField("Add endpoint")


#: These pages may show a signing secret (once): no browser or proxy keeps a copy.
_NO_STORE = {"Cache-Control": "no-store"}


class ActionForm(FlaskForm):
    submit = SubmitField("Go")


def _index(form: EndpointForm, status: int = 200, created=None, secret: str | None = None):
    return render_template("webhooks/index.html", form=form, endpoints=service.endpoints(), action=ActionForm(),
                           created=created, secret=secret), status, _NO_STORE


@bp.get("/")
@login_required
@admin_required
def index():
    return _index(EndpointForm(formdata=None))


@bp.post("/")
@login_required
@admin_required
def add():
    form = EndpointForm()
    if not form.validate_on_submit():
        return _index(form, 400)
    try:
        endpoint, secret = service.add(form.url.data, form.types.data or [], user=current_user,
                                       remote_addr=request.remote_addr)
    except service.WebhookError as exc:
        form.url.errors = [str(exc)]
        return _index(form, 400)
    return _index(EndpointForm(formdata=None), 201, created=endpoint, secret=secret)


def _endpoint_page(endpoint_id: int, secret: str | None = None, status: int = 200):
    try:
        endpoint = service.get(endpoint_id)
    except service.NotFound:
        abort(404)
    return render_template("webhooks/endpoint.html", endpoint=endpoint, action=ActionForm(),
                           deliveries=service.deliveries(endpoint.id), secret=secret), status, _NO_STORE


@bp.get("/<int:endpoint_id>")
@login_required
@admin_required
def endpoint(endpoint_id: int):
    return _endpoint_page(endpoint_id)


@bp.post("/<int:endpoint_id>/rotate")
@login_required
@admin_required
def rotate(endpoint_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        _, secret = service.rotate_secret(endpoint_id, service.ROTATION_GRACE, user=current_user,
                                          remote_addr=request.remote_addr)
    except service.NotFound:
        abort(404)
    return _endpoint_page(endpoint_id, secret=secret)


@bp.post("/<int:endpoint_id>/delete")
@login_required
@admin_required
def delete(endpoint_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        service.remove(endpoint_id, user=current_user, remote_addr=request.remote_addr)
    except service.NotFound:
        abort(404)
    flash("Endpoint deleted with its delivery log.", "info")
    return redirect(url_for("webhooks.index"))


@bp.post("/<int:endpoint_id>/deliveries/<int:delivery_id>/replay")
@login_required
@admin_required
def replay(endpoint_id: int, delivery_id: int):
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        delivery = service.replay(delivery_id, endpoint_id=endpoint_id, user=current_user,
                                  remote_addr=request.remote_addr)
    except service.NotFound:
        abort(404)
    flash(f"{delivery.event.type} {delivery.event.public_id} is being sent again.", "success")
    return redirect(url_for("webhooks.endpoint", endpoint_id=endpoint_id))

