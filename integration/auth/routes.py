"""Logging in and out of our app (the accounts that stores are linked to)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from ..accounts import logins, second_factor
from ..extensions import limiter
from ..forms import LoginForm, PasskeySignInForm, SecondStepForm

bp = Blueprint("auth", __name__, url_prefix="/auth")


def login_limits(view):
    """Attempts per address, on POST only (Flask-Limiter, shared storage). The per-account budgets count
    failures only and live in ``accounts.logins``."""
    return limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])(view)


@bp.route("/login", methods=["GET", "POST"])
@login_limits
def login():
    form = LoginForm()
    if form.validate_on_submit():
        try:
            done = second_factor.log_in(form.email.data, form.password.data,
                                        resume={"next": _safe_next(request.args.get("next"))})
        except logins.LoginRefused as refused:
            return render_template("auth/login.html", form=form, passkey_form=PasskeySignInForm(formdata=None),
                                   error=str(refused)), *logins.answer(refused)
        return redirect(_safe_next(request.args.get("next")) if done else url_for("auth.second_step"))
    return render_template("auth/login.html", form=form, passkey_form=PasskeySignInForm(formdata=None))


@bp.route("/second-step", methods=["GET", "POST"])
@login_limits
def second_step():
    if second_factor.pending() is None:
        return redirect(url_for("auth.login"))
    form = SecondStepForm()
    if form.validate_on_submit():
        try:
            resume = second_factor.finish(form.code.data, form.passkey.data)
        except logins.LoginRefused as refused:
            return render_template("auth/second_step.html", form=SecondStepForm(formdata=None), error=str(refused),
                                   offer_passkey=second_factor.pending_has_passkey()), *logins.answer(refused)
        return redirect(_safe_next(resume.get("next")))
    return render_template("auth/second_step.html", form=form, offer_passkey=second_factor.pending_has_passkey()), \
        400 if form.is_submitted() else 200


@bp.post("/passkey/options")
@login_limits
def passkey_options():
    """Challenge for a passkey: the pending login's account, or any account (sign-in without password)."""
    return Response(second_factor.authentication_options(), mimetype="application/json")


@bp.post("/passkey")
@login_limits
def passkey_sign_in():
    form = PasskeySignInForm()
    if not form.validate_on_submit():
        return redirect(url_for("auth.login"))
    try:
        second_factor.sign_in_with_passkey(form.passkey.data)
    except logins.LoginRefused as refused:
        return render_template("auth/login.html", form=LoginForm(formdata=None), passkey_form=form,
                               error=str(refused)), *logins.answer(refused)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
@login_required
def logout():
    logins.log_out()
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))


def _safe_next(target: str | None) -> str:
    """Only same-site paths: ``//evil.example`` and absolute URLs fall back to the dashboard."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("dashboard.index")


@bp.app_context_processor
def _user():
    return {"current_user": current_user}
