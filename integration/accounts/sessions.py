"""Server-side sessions: a row per login, checked on every request through Flask-Login's user loader.

The signed cookie alone cannot be taken back once copied; the row can. The cookie carries a random token,
the database its hash, so a copy of the table does not log anyone in. Works the same on every worker and
host, since all they share is the database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from flask import request, session
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value

from ..extensions import db
from ..models import User, UserSession, audit, utcnow

TOKEN_KEY = "session_token"
# A session nobody has used for this long is over (and its row is deleted at the account's next login).
IDLE = dt.timedelta(days=14)
# "Last seen" is written at most this often per session: not a database write on every page.
TOUCH_EVERY = dt.timedelta(minutes=1)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def current_id() -> str | None:
    token = session.get(TOKEN_KEY)
    return _digest(token) if isinstance(token, str) else None


def start(user: User) -> UserSession:
    """A new session for ``user`` in this browser (the caller has cleared the old cookie session)."""
    now = utcnow()
    db.session.execute(delete(UserSession).where(
        UserSession.user_id == user.id,
        or_(UserSession.revoked_at.is_not(None), UserSession.last_seen_at < now - IDLE)))
    token = secrets.token_urlsafe(32)
    row = UserSession(id=_digest(token), user_id=user.id, created_at=now, last_seen_at=now,
                      remote_addr=request.remote_addr, user_agent=request.user_agent.string[:255] or None)
    db.session.add(row)
    session[TOKEN_KEY] = token
    return row


def user_for(user_id: str) -> User | None:
    """Flask-Login's user loader: the account, if this browser's session is still open."""
    session_id = current_id()
    row = db.session.get(UserSession, session_id, options=[joinedload(UserSession.user)]) if session_id else None
    now = utcnow()
    if row is None or row.revoked_at is not None or str(row.user_id) != user_id or now - row.last_seen_at > IDLE:
        return None
    if now - row.last_seen_at > TOUCH_EVERY:
        # On a connection of its own: the user is loaded mid-request, and the view's work must not be
        # committed (or rolled back) with it.
        with db.engine.begin() as connection:
            connection.execute(update(UserSession).where(UserSession.id == row.id).values(last_seen_at=now))
        set_committed_value(row, "last_seen_at", now)
    return row.user if row.user.active else None


def open_sessions(user: User) -> list[UserSession]:
    return list(db.session.scalars(
        select(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None),
                                  UserSession.last_seen_at >= utcnow() - IDLE)
        .order_by(UserSession.last_seen_at.desc())))


def end_current() -> None:
    """Log out: this browser's session ends (the caller commits)."""
    session_id = current_id()
    if session_id:
        db.session.execute(update(UserSession).where(UserSession.id == session_id, UserSession.revoked_at.is_(None))
                           .values(revoked_at=utcnow()))


def end(user: User, session_id: str, *, remote_addr: str | None = None) -> bool:
    """The account ends one of its own sessions; ``False`` if it has no such open session."""
    ended = db.session.execute(
        update(UserSession).where(UserSession.id == session_id, UserSession.user_id == user.id,
                                  UserSession.revoked_at.is_(None)).values(revoked_at=utcnow())).rowcount
    if ended:
        audit("session.ended", user=user, remote_addr=remote_addr)
    db.session.commit()
    return bool(ended)


def end_all(user: User, *, keep: str | None = None) -> None:
    """Every session of ``user`` ends, except ``keep`` (the caller commits)."""
    query = update(UserSession).where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
    if keep:
        query = query.where(UserSession.id != keep)
    db.session.execute(query.values(revoked_at=utcnow()))
