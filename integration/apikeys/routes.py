"""Admins manage API keys in the dashboard: create (the key is shown once), list, revoke."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import SelectField, SelectMultipleField, StringField, SubmitField, widgets
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from ..dashboard.routes import admin_required
from ..extensions import db
from ..models import ApiKey, User
from . import service

bp = Blueprint("apikeys", __name__, url_prefix="/api-keys")

SCOPE_HELP = {
    "stores:read": "list and read stores",
    "stores:call": "call stores through the signing proxy, test connections",
    "events:read": "read the events feed",
}


class CreateForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=64)], render_kw={"placeholder": "erp-sync"})
    owner = SelectField("Acts for (members' keys see only that member's stores)")
    scopes = SelectMultipleField("Scopes", choices=[SelectChoice(s, f"{s} — {h}") for s, h in SCOPE_HELP.items()],
                                 default=["stores:read"], option_widget=widgets.CheckboxInput(),
                                 widget=widgets.ListWidget(prefix_label=False))
    submit = SubmitField("Create key")


class RevokeForm(FlaskForm):
    submit = SubmitField("Revoke")


def _owner_choices() -> list[SelectChoice]:
    users = db.session.scalars(select(User).where(User.active.is_(True)).order_by(User.email))
    return [SelectChoice("", "all stores (a service key)")] + [SelectChoice(str(u.id), f"{u.email} ({u.role})")
                                                              for u in users]


@bp.route("/", methods=["GET", "POST"])
@login_required
@admin_required
def index():
    form = CreateForm()
    form.owner.choices = _owner_choices()
    created, status = None, 200
    if form.validate_on_submit():
        owner = db.session.get(User, int(form.owner.data)) if form.owner.data else None
        try:
            key, plain = service.create(form.name.data, form.scopes.data, owner=owner, by=current_user,
                                        remote_addr=request.remote_addr)
        except service.ApiKeyError as exc:
            form.name.errors = [str(exc)]
            status = 400
        else:
            # Shown in this answer only: never in a redirect's flash message (the session
            # cookie is signed, not encrypted) and never again.
            created = {"key": key, "plain": plain}
            form = CreateForm(formdata=None)
            form.owner.choices = _owner_choices()
            status = 201
    elif form.is_submitted():
        status = 400
    page = render_template("apikeys/index.html", form=form, keys=service.all_keys(), created=created,
                           revoke=RevokeForm())
    return page, status, {"Cache-Control": "no-store"}


@bp.post("/<int:key_id>/revoke")
@login_required
@admin_required
def revoke(key_id: int):
    key = db.session.get(ApiKey, key_id) or abort(404)
    if not RevokeForm().validate_on_submit():
        abort(400)
    try:
        service.revoke(key, by=current_user, remote_addr=request.remote_addr)
    except service.ApiKeyError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Key {key.name} ({key.prefix}) revoked: calls with it now get 401.", "info")
    return redirect(url_for("apikeys.index"))
