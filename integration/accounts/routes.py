"""Admins manage accounts: create, disable or enable, reset a password. Everyone sees their own sessions."""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import EmailField, HiddenField, PasswordField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Length

from ..dashboard.routes import admin_required
from ..extensions import db
from ..models import User
from . import second_factor, service, sessions

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


class TotpConfirmForm(FlaskForm):
    code = StringField("Code the app shows now", validators=[DataRequired(), Length(max=16)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"})
    submit = SubmitField("Turn on")


class PasskeyAddForm(FlaskForm):
    name = StringField("Name (which device or key)", validators=[Length(max=100)], default="Passkey")
    passkey = HiddenField(validators=[DataRequired(), Length(max=65536)])


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
                           password_form=PasswordForm(formdata=None),
                           with_passkeys=second_factor.accounts_with_passkeys()), status


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


@bp.post("/<int:user_id>/second-factor/reset")
@login_required
@admin_required
def reset_second_factor(user_id: int):
    user = db.session.get(User, user_id) or abort(404)
    if not ToggleForm().validate_on_submit():
        abort(400)
    second_factor.reset(user, by=current_user, remote_addr=request.remote_addr)
    flash(f"{user.email} has no second factor now and is logged out everywhere.", "info")
    return redirect(url_for("accounts.index"))


@bp.get("/me")
@login_required
def me():
    user = current_user._get_current_object()
    return render_template("accounts/me.html", sessions=sessions.open_sessions(user),
                           current=sessions.current_id(), end_form=ToggleForm(),
                           passkeys=second_factor.passkeys(user), codes_left=second_factor.recovery_codes_left(user),
                           passkey_form=PasskeyAddForm(formdata=None), must_enrol=_must_enrol(user))


def _must_enrol(user: User) -> bool:
    return second_factor.required(user) and not second_factor.has_second_factor(user)


@bp.route("/me/totp", methods=["GET", "POST"])
@login_required
def totp():
    """Set up an authenticator app: a new secret as a QR code, then a typed code to confirm it."""
    user = current_user._get_current_object()
    form = TotpConfirmForm()
    if form.validate_on_submit():
        try:
            codes = second_factor.confirm_totp(user, form.code.data)
        except second_factor.SecondFactorError as exc:
            form.code.errors = [str(exc)]
        else:
            return render_template("accounts/recovery_codes.html", codes=codes), 200, _NOT_KEPT
    try:
        qr, secret = second_factor.start_totp(user, fresh=not form.is_submitted())
    except second_factor.SecondFactorError as exc:
        flash(str(exc), "error")
        return redirect(url_for("accounts.me"))
    return render_template("accounts/totp.html", form=form, qr=qr, secret=secret), \
        400 if form.is_submitted() else 200, _NOT_KEPT


# The secret and the recovery codes are shown once: no cache (or back button) keeps a copy.
_NOT_KEPT = {"Cache-Control": "no-store"}


@bp.post("/me/totp/remove")
@login_required
def remove_totp():
    if not ToggleForm().validate_on_submit():
        abort(400)
    second_factor.remove_totp(current_user._get_current_object())
    flash("The authenticator app and its recovery codes no longer work for this account.", "info")
    return redirect(url_for("accounts.me"))


@bp.post("/me/passkeys/options")
@login_required
def passkey_options():
    return Response(second_factor.registration_options(current_user._get_current_object()),
                    mimetype="application/json")


@bp.post("/me/passkeys")
@login_required
def add_passkey():
    form = PasskeyAddForm()
    if not form.validate_on_submit():
        abort(400)
    try:
        passkey = second_factor.register_passkey(current_user._get_current_object(), form.passkey.data,
                                                 form.name.data)
    except second_factor.SecondFactorError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Passkey \u201c{passkey.name}\u201d added.", "success")
    return redirect(url_for("accounts.me"))


@bp.post("/me/passkeys/<int:passkey_id>/remove")
@login_required
def remove_passkey(passkey_id: int):
    if not ToggleForm().validate_on_submit():
        abort(400)
    if not second_factor.remove_passkey(current_user._get_current_object(), passkey_id):
        abort(404)
    flash("That passkey no longer works for this account.", "info")
    return redirect(url_for("accounts.me"))


# What an account that must enrol may still reach (everything else sends it to enrol).
ENROLMENT_ENDPOINTS = frozenset({"static", "accounts.me", "accounts.totp", "accounts.passkey_options",
                                 "accounts.add_passkey", "auth.logout"})


@bp.before_app_request
def _enrol_first():
    """``INTEGRATION_REQUIRE_2FA``: an account it covers can do nothing but enrol until it has.
    Not for the service API, which authenticates keys, never an account's browser session
    (loading the session's user cost every proxied call a SHA-512 of its address and agent)."""
    if request.blueprint == "api" or request.endpoint in ENROLMENT_ENDPOINTS or not current_user.is_authenticated:
        return None
    if _must_enrol(current_user._get_current_object()):
        flash("Set up a second factor (an authenticator app or a passkey) before anything else.", "error")
        return redirect(url_for("accounts.me", _anchor="second-factor"))
    return None


@bp.post("/me/sessions/<session_id>/end")
@login_required
def end_session(session_id: str):
    if not ToggleForm().validate_on_submit():
        abort(400)
    if not sessions.end(current_user, session_id[:64], remote_addr=request.remote_addr):
        abort(404)
    flash("That session has ended: its browser must log in again.", "info")
    return redirect(url_for("accounts.me"))
