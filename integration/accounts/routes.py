"""Admins manage accounts: create, disable or enable, reset a password. Everyone sees their own sessions."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import EmailField, PasswordField, SelectField, SubmitField
from wtforms.validators import DataRequired, Length

from ..dashboard.routes import admin_required
from ..extensions import db
from ..models import User
from . import service, sessions

bp = Blueprint("accounts", __name__, url_prefix="/accounts")


class CreateForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Initial password", validators=[DataRequired(), Length(max=1024)])
    role = SelectField("Role (members see the stores they linked; admins see all and manage accounts)",
                       choices=["member", "admin"])
    submit = SubmitField("Create account")


class PasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    submit = SubmitField("Set password")


class ToggleForm(FlaskForm):
    submit = SubmitField("Toggle")


@bp.route("/", methods=["GET", "POST"])
@login_required
@admin_required
def index():
    form = CreateForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = service.create(form.email.data, form.password.data, role=form.role.data, by=current_user,
                                  remote_addr=request.remote_addr)
        except service.AccountError as exc:
            form.email.errors = [str(exc)] if "email" in str(exc) or "exists" in str(exc) else []
            form.password.errors = [] if form.email.errors else [str(exc)]
            status = 400
        else:
            flash(f"Account {user.email} created.", "success")
            return redirect(url_for("accounts.index"))
    elif form.is_submitted():
        status = 400
    users = db.session.scalars(select(User).order_by(User.email)).all()
    return render_template("accounts/index.html", form=form, users=users, toggle=ToggleForm(),
                           password_form=PasswordForm(formdata=None)), status


@bp.post("/<int:user_id>/toggle")
@login_required
@admin_required
def toggle(user_id: int):
    user = db.session.get(User, user_id) or abort(404)
    if not ToggleForm().validate_on_submit():
        abort(400)
    try:
        service.set_active(user, not user.active, by=current_user, remote_addr=request.remote_addr)
    except service.AccountError as exc:
        flash(str(exc), "error")
    else:
        flash(f"{user.email} is now {'enabled' if user.active else 'disabled'}.", "info")
    return redirect(url_for("accounts.index"))


@bp.post("/<int:user_id>/password")
@login_required
@admin_required
def password(user_id: int):
    user = db.session.get(User, user_id) or abort(404)
    form = PasswordForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        service.reset_password(user, form.password.data, by=current_user, remote_addr=request.remote_addr,
                               keep_session=sessions.current_id() if user.id == current_user.id else None)
    except service.AccountError as exc:
        flash(str(exc), "error")
    else:
        flash(f"New password set for {user.email}.", "success")
    return redirect(url_for("accounts.index"))


@bp.get("/me")
@login_required
def me():
    return render_template("accounts/me.html", sessions=sessions.open_sessions(current_user),
                           current=sessions.current_id(), end_form=ToggleForm())


@bp.post("/me/sessions/<session_id>/end")
@login_required
def end_session(session_id: str):
    if not ToggleForm().validate_on_submit():
        abort(400)
    if not sessions.end(current_user, session_id[:64], remote_addr=request.remote_addr):
        abort(404)
    flash("That session has ended: its browser must log in again.", "info")
    return redirect(url_for("accounts.me"))
