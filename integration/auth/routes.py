"""Logging in and out of our app (the accounts that stores are linked to)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..accounts import sessions
from ..extensions import db, limiter
from ..forms import LoginForm
from ..models import User, audit

bp = Blueprint("auth", __name__, url_prefix="/auth")

GENERIC_FAILURE = "Wrong email or password."
# Checked against when the account does not exist, so both cases take the same time.
_DUMMY_HASH = User(password_hash="scrypt:32768:8:1$dummysaltdummysa$" + "0" * 128)


def account_key() -> str:
    return "account:" + (request.form.get("email", "").strip().lower() or request.remote_addr or "")


def login_limits(view):
    """Per address and per account, on POST only (Flask-Limiter, shared storage)."""
    from flask import current_app

    view = limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])(view)
    return limiter.limit(lambda: current_app.config["ACCOUNT_RATE_LIMIT"], key_func=account_key,
                         methods=["POST"])(view)


def authenticate(email: str, password: str) -> User | None:
    """The account for these credentials, logged in (session renewed), or ``None``."""
    user = User.by_email(email)
    if user is None:
        _DUMMY_HASH.check_password(password)
    if user is None or not user.check_password(password) or not user.active:
        # The attempted name, unless it is not an email: people type passwords into the wrong field.
        attempted = email.strip().lower()[:254]
        audit("login.failed", user=user, remote_addr=request.remote_addr,
              detail=attempted if "@" in attempted else "(not an email address)")
        db.session.commit()
        return None
    keep = {k: session[k] for k in ("_flashes",) if k in session}
    session.clear()  # a new session at login: no fixation
    session.update(keep)
    sessions.start(user)
    login_user(user)
    audit("login", user=user, remote_addr=request.remote_addr)
    db.session.commit()
    return user


@bp.route("/login", methods=["GET", "POST"])
@login_limits
def login():
    form = LoginForm()
    if form.validate_on_submit():
        if authenticate(form.email.data, form.password.data):
            return redirect(_safe_next(request.args.get("next")))
        flash(GENERIC_FAILURE, "error")
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout():
    sessions.end_current()
    db.session.commit()
    logout_user()
    session.clear()
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
