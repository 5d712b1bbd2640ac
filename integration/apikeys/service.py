"""API keys: made and shown once, kept as a hash, checked per request, every use audited.

A key is ``mic_<12 hex digits>_<43 url-safe characters>``: the first part (the *prefix*) is
not secret and names the key in lists, logs and the audit trail; the second carries 256
random bits. Only SHA-256 of the whole key is stored. A slow password hash (scrypt) guards
guessable secrets; a 256-bit random one cannot be guessed, so a fast hash loses nothing
and keeps the check to microseconds on every API request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..models import ApiKey, AuditEvent, User, audit, utcnow
from ..text import neutralised
from . import usage

KEY_PREFIX = "mic_"
KEY_SHAPE = re.compile(r"^(mic_[0-9a-f]{12})_[A-Za-z0-9_-]{43}$")
#: A key anywhere in a text (a URL, a log line): the prefix part may be shown, the rest never.
KEY_IN_TEXT = re.compile(r"(mic_[0-9a-f]{12})_[A-Za-z0-9_-]+")
NAME_SHAPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ApiKeyError(Exception):
    """A key cannot be made or changed as asked; the message says why."""


class KeyRefused(Exception):
    """A presented key does not authenticate. ``reason``: malformed, unknown, revoked,
    owner_disabled; ``key`` is the row its prefix named, if any."""

    def __init__(self, reason: str, message: str, key: ApiKey | None = None):
        super().__init__(message)
        self.reason, self.message, self.key = reason, message, key


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def mask(text: str) -> str:
    """``text`` with every key's secret part replaced (the prefix stays, to tell keys apart)."""
    return KEY_IN_TEXT.sub(lambda m: f"{m.group(1)}_[redacted]", text)


def create(name: str, scopes: list[str] | tuple[str, ...], *, owner: User | None = None, by: User | None = None,
           remote_addr: str | None = None) -> tuple[ApiKey, str]:
    """A new key and its plain text, which exists only in this return value."""
    name = (name or "").strip()
    if not NAME_SHAPE.match(name):
        raise ApiKeyError("a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    scopes = list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in ApiKey.SCOPES]
    if unknown or not scopes:
        raise ApiKeyError(f"scopes must be among {', '.join(ApiKey.SCOPES)} (got {', '.join(unknown) or 'none'})")
    if owner is not None and not owner.active:
        raise ApiKeyError(f"{owner.email} is disabled")
    if db.session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
        raise ApiKeyError(f"a key named {name} already exists (names stay taken after revocation)")
    for _ in range(3):  # a clash of 48-bit prefixes is unlikely; a second one vanishingly so
        prefix = KEY_PREFIX + secrets.token_hex(6)
        plain = f"{prefix}_{secrets.token_urlsafe(32)}"
        key = ApiKey(name=name, prefix=prefix, secret_hash=digest(plain), scopes=" ".join(scopes), owner=owner,
                     created_by=by)
        db.session.add(key)
        audit("apikey.created", user=by, remote_addr=remote_addr,
              detail=f"{prefix} ({name}) for {owner.email if owner else 'all stores'}: {' '.join(scopes)}")
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            if db.session.scalar(select(ApiKey.id).where(ApiKey.name == name)) is not None:
                raise ApiKeyError(f"a key named {name} already exists") from None
            continue
        return key, plain
    raise ApiKeyError("could not pick a unique key prefix; try again")


def by_name(name: str) -> ApiKey | None:
    return db.session.scalar(select(ApiKey).where(ApiKey.name == name))


def all_keys() -> list[ApiKey]:
    return list(db.session.scalars(
        select(ApiKey).options(joinedload(ApiKey.owner)).order_by(ApiKey.revoked_at.is_not(None), ApiKey.name)))


def revoke(key: ApiKey, *, by: User | None = None, remote_addr: str | None = None) -> None:
    if key.revoked_at is not None:
        raise ApiKeyError(f"key {key.name} is already revoked")
    key.revoked_at = utcnow()
    audit("apikey.revoked", user=by, remote_addr=remote_addr, detail=f"{key.prefix} ({key.name})")
    db.session.commit()


def authenticate(presented: str) -> ApiKey:
    """The key ``presented`` is, if it may be used; ``KeyRefused`` otherwise."""
    match = KEY_SHAPE.match(presented or "")
    if not match:
        raise KeyRefused("malformed", "this is not an API key of this service (mic_…)")
    key = db.session.scalar(select(ApiKey).options(joinedload(ApiKey.owner)).where(ApiKey.prefix == match.group(1)))
    # The hash comparison runs even without a row, so timing does not tell which prefixes exist.
    expected = key.secret_hash if key is not None else "0" * 64
    if not hmac.compare_digest(expected, digest(presented)) or key is None:
        raise KeyRefused("unknown", "unknown API key", key)
    if key.revoked_at is not None:
        raise KeyRefused("revoked", f"API key {key.prefix} was revoked", key)
    if key.owner is not None and not key.owner.active:
        raise KeyRefused("owner_disabled", f"the account API key {key.prefix} acts for is disabled", key)
    return key


def record_use(key_id: int, prefix: str, owner_id: int | None, *, method: str, path: str, status: int,
               remote_addr: str | None, store_link_id: int | None = None, action: str = "api.call") -> None:
    """Audit one request made with a key (never its body) and note when and from where the key
    was last used (at most once a minute). Written in batches by ``usage``, within a second: a
    bulk INSERT, which the models' text rule does not see, so the caller's path is cleaned here."""
    detail = neutralised(mask(f"{method} {path[:1500]} → {status} (key {prefix})"))
    usage.current().add({"at": utcnow(), "action": action, "user_id": owner_id, "store_link_id": store_link_id,
                         "remote_addr": remote_addr, "detail": detail}, key_id, remote_addr)


def record_refusal(prefix: str, owner_id: int | None, reason: str, *, method: str, path: str, status: int,
                   remote_addr: str | None) -> None:
    """Audit a request refused for a real key (revoked, wrong secret, owner disabled). Commits."""
    db.session.add(AuditEvent(action="api.refused", user_id=owner_id, remote_addr=remote_addr,
                              detail=mask(f"{method} {path[:1500]} → {status} (key {prefix}: {reason})")))
    db.session.commit()
