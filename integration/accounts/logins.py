"""Logging in, for ``/auth/login`` and the identity pop-up alike: one failure budget per account, and
device cookies (OWASP's defence against online guessing) so that guessing cannot lock the owner out.

Only failures count. A browser that logged in to an account before holds a signed *device cookie* naming
it; its failures count against that browser alone. Every other attempt (any new browser, any address)
shares the account's *untrusted* budget; when that is spent, only untrusted attempts are refused, so the
owner's own browser still gets in while somebody guesses. An unknown address gets an untrusted budget of
its own, exactly as a known one, so a refusal tells nothing about who has an account. The counts live in
the rate-limit storage (Redis when configured): every worker shares them.

Two steps, so that a second factor can go between them: :func:`verify_password` (counts a failure, refuses
a spent budget) and :func:`complete_login` (the session, the device cookie, the audit entry).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass

import redis
from flask import after_this_request, current_app, g, request, session
from flask_login import login_user, logout_user
from itsdangerous import BadSignature, URLSafeSerializer
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from .. import password_hashing
from ..errors import when_to_retry
from ..extensions import db, limiter
from ..models import User, audit
from . import sessions

log = logging.getLogger("integration.accounts")

DEVICE_COOKIE = "device"
DEVICE_COOKIE_AGE = dt.timedelta(days=365)
DEVICES_PER_BROWSER = 5  # accounts one browser is remembered for
# Checked against when the account does not exist, so both cases cost one hash (and the same time).
_DUMMY_HASH = User(password_hash="$argon2id$v=19$m=19456,t=2,p=1$ZHVtbXlzYWx0ZHVtbXlzYQ$" + "A" * 43)
# While the shared storage is unreachable, count in this process rather than not at all.
_FALLBACK = MovingWindowRateLimiter(MemoryStorage())


class LoginRefused(Exception):
    """The login did not happen; ``str()`` is what the person is told."""


class WrongCredentials(LoginRefused):
    def __init__(self) -> None:
        super().__init__("Wrong email or password.")


class TooManyFailures(LoginRefused):
    def __init__(self, retry_after: int, *, trusted: bool) -> None:
        self.retry_after = retry_after
        if trusted:
            why = "Too many wrong passwords from this browser."
        else:
            why = ("Too many wrong passwords for this account from browsers it has not logged in from. "
                   "A browser that has logged in to it before can still log in.")
        super().__init__(f"{why} {when_to_retry(retry_after)}")


def answer(refused: LoginRefused) -> tuple[int, dict[str, str]]:
    """HTTP status and headers for a refusal: 429 with ``Retry-After`` for a spent budget, else 401."""
    if isinstance(refused, TooManyFailures):
        return 429, {"Retry-After": str(refused.retry_after)}
    return 401, {}


def verify_password(email: str, password: str) -> User:
    """The account these credentials open, or :class:`LoginRefused` (a failure is counted and audited)."""
    attempted = email.strip().lower()[:254]
    user = User.by_email(attempted)
    budget = _budget(user, attempted)
    budget.check()
    if user is None:
        _DUMMY_HASH.check_password(password)
    if user is None or not user.check_password(password) or not user.active:
        budget.spend()
        # The attempted name, unless it is not an email: people type passwords into the wrong field.
        audit("login.failed", user=user, remote_addr=request.remote_addr,
              detail=attempted if "@" in attempted else "(not an email address)")
        db.session.commit()
        raise WrongCredentials()
    if password_hashing.needs_rehash(user.password_hash):
        # An account from before Argon2id: a login that proves the password is our one chance to
        # upgrade its hash. Committed now, whether or not a second factor follows.
        user.set_password(password)
        db.session.commit()
    return user


def complete_login(user: User) -> None:
    """A new session (nothing carried over from before: no fixation) and a new device cookie."""
    keep = {k: session[k] for k in ("_flashes",) if k in session}
    session.clear()
    session.update(keep)
    # Flask-WTF keeps this request's CSRF token in g; it belonged to the session just cleared, so a
    # form drawn after the login (the pop-up's refusal page) would carry a token nothing can check.
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)
    sessions.start(user)
    login_user(user)
    _remember_device(user)
    audit("login", user=user, remote_addr=request.remote_addr)
    db.session.commit()


def log_out() -> None:
    sessions.end_current()
    db.session.commit()
    logout_user()
    session.clear()


# --- budgets ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Budget:
    limit: RateLimitItem
    key: tuple[str, str]
    trusted: bool

    def check(self) -> None:
        strategy = _strategy()
        try:
            allowed = strategy.test(self.limit, *self.key)
            reset_at = None if allowed else strategy.get_window_stats(self.limit, *self.key).reset_time
        except (StorageError, redis.RedisError, OSError):
            log.warning("rate-limit storage unreachable: counting login failures in this process")
            allowed = _FALLBACK.test(self.limit, *self.key)
            reset_at = None if allowed else _FALLBACK.get_window_stats(self.limit, *self.key).reset_time
        if not allowed:
            raise TooManyFailures(max(1, math.ceil(reset_at - time.time())), trusted=self.trusted)

    def spend(self) -> None:
        try:
            _strategy().hit(self.limit, *self.key)
        except (StorageError, redis.RedisError, OSError):
            _FALLBACK.hit(self.limit, *self.key)


def _strategy() -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(limiter.storage)


def budget_for(user: User) -> _Budget:
    """The account's budget as this browser sees it: the second step spends the password's."""
    return _budget(user, user.email)


def _budget(user: User | None, attempted: str) -> _Budget:
    config = current_app.config
    nonce = _devices().get(str(user.id)) if user is not None else None
    if nonce:
        return _Budget(parse(config["DEVICE_RATE_LIMIT"]), ("login-failures-device", _digest(nonce)), True)
    return _Budget(parse(config["ACCOUNT_RATE_LIMIT"]), ("login-failures-untrusted", _digest(attempted)), False)


def _digest(value: str) -> str:  # fixed-length storage keys, and no addresses in Redis
    return hashlib.sha256(value.encode()).hexdigest()[:32]


# --- device cookies --------------------------------------------------------------------

def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="device-cookie")


def _devices() -> dict[str, str]:
    """Account id -> nonce, for the accounts this browser has logged in to (empty if forged or absent)."""
    raw = request.cookies.get(DEVICE_COOKIE, "")
    try:
        devices = _serializer().loads(raw) if raw else {}
    except BadSignature:
        return {}
    if not isinstance(devices, dict):
        return {}
    return {k: v for k, v in devices.items() if isinstance(k, str) and isinstance(v, str)}


def _remember_device(user: User) -> None:
    """A fresh nonce for this account in this browser's device cookie (its old failures do not follow it)."""
    devices = {k: v for k, v in _devices().items() if k != str(user.id)}
    devices[str(user.id)] = secrets.token_urlsafe(16)
    value = _serializer().dumps(dict(list(devices.items())[-DEVICES_PER_BROWSER:]))
    secure = bool(current_app.config.get("SESSION_COOKIE_SECURE"))

    @after_this_request
    def _set(response):
        response.set_cookie(DEVICE_COOKIE, value, max_age=int(DEVICE_COOKIE_AGE.total_seconds()), httponly=True,
                            samesite="Lax", secure=secure)
        return response
