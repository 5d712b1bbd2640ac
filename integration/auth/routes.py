"""Logging in and out of our app (the accounts that stores are linked to)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from ..accounts import logins
from ..extensions import limiter
from ..forms import LoginForm

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
            logins.log_in(form.email.data, form.password.data)
        except logins.LoginRefused as refused:
            return render_template("auth/login.html", form=form, error=str(refused)), *logins.answer(refused)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


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
