"""Creating and managing accounts; one place for the rules the UI and the CLI share."""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import User, audit
from ..text import has_controls
from . import sessions

MIN_PASSWORD = 10
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


class AccountError(ValueError):
    pass


def normalise_email(email: str) -> str:
    email = (email or "").strip().lower()
    if has_controls(email):
        raise AccountError("the email address contains control characters")
    if len(email) > 254 or not _EMAIL.match(email):
        raise AccountError("not an email address")
    return email


def check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise AccountError(f"use at least {MIN_PASSWORD} characters for the password")


def create(email: str, password: str, *, role: str = "member", by: User | None = None,
           remote_addr: str | None = None) -> User:
    email = normalise_email(email)
    check_password(password)
    if role not in ("member", "admin"):
        raise AccountError("role must be member or admin")
    if User.by_email(email):
        raise AccountError(f"an account for {email} already exists")
    user = User(email=email, role=role)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit("account.created", user=by or user, remote_addr=remote_addr, detail=f"{email} ({role})")
    db.session.commit()
    return user


def sign_up(email: str, password: str, *, remote_addr: str | None = None) -> str:
    """Self-registration. A taken address is left alone, after the same work (one password hash), and the
    caller hears the same either way: sign-up must not tell who has an account here. Returns the address."""
    email = normalise_email(email)
    check_password(password)
    if User.by_email(email) is None:
        try:
            return create(email, password, remote_addr=remote_addr).email
        except IntegrityError:  # the same address signed up a moment ago
            db.session.rollback()
    User().set_password(password)
    audit("account.sign_up_taken", remote_addr=remote_addr, detail=email)
    db.session.commit()
    return email


def set_active(user: User, active: bool, *, by: User | None = None, remote_addr: str | None = None) -> None:
    if by is not None and by.id == user.id and not active:
        raise AccountError("you cannot disable your own account")
    user.active = active
    if not active:
        sessions.end_all(user)
    audit("account.enabled" if active else "account.disabled", user=by, remote_addr=remote_addr, detail=user.email)
    db.session.commit()


def reset_password(user: User, password: str, *, by: User | None = None, remote_addr: str | None = None,
                   keep_session: str | None = None) -> None:
    """A new password ends every session of the account (but ``keep_session``, the one setting it)."""
    check_password(password)
    user.set_password(password)
    sessions.end_all(user, keep=keep_session)
    audit("account.password_reset", user=by, remote_addr=remote_addr, detail=user.email)
    db.session.commit()
