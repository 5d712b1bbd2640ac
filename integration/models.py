"""What the app keeps: accounts, linked stores, each activation of a store, and an audit trail."""

from __future__ import annotations

import datetime as dt

from flask_login import UserMixin
from sqlalchemy import ForeignKey, Index, String, Text, event, inspect, select
from sqlalchemy.orm import Mapped, mapped_column, relationship
from . import password_hashing
from .crypto import EncryptedText
from .extensions import db
from .text import neutralised


def utcnow() -> dt.datetime:
    """Naive UTC: SQLite and PostgreSQL then store and compare the same way."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


#: In a ``ForeignKey``'s ``info``: the databases on which the migrations keep that key by triggers
#: rather than a foreign key constraint.
KEPT_BY_TRIGGERS = "kept_by_triggers_on"


def store_link_key(ondelete: str) -> ForeignKey:
    """The key to ``store_links`` of a table a change feed fills a page of rows at a time (events,
    feed records). On PostgreSQL the migrations keep it by triggers that run once a statement
    (``migrations/versions/0016_link_triggers.py``): a foreign key runs a query for every row
    inserted. The same rules hold: no row points at a store link that does not exist, and a
    deleted store link takes its rows with it (``ondelete``)."""
    return ForeignKey("store_links.id", ondelete=ondelete, info={KEPT_BY_TRIGGERS: ("postgresql",)})


def include_object(dialect: str):
    """Alembic's ``include_object`` when the models are compared with a database of ``dialect``:
    the keys the migrations keep by triggers there are no foreign key constraints of the models."""

    def include(obj, name, type_, reflected, compare_to) -> bool:
        if type_ == "foreign_key_constraint" and not reflected:
            return not any(dialect in element.info.get(KEPT_BY_TRIGGERS, ()) for element in obj.elements)
        return True

    return include


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="member")  # admin | member
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Second factor (accounts.second_factor). The secret is written while enrolling and counts only once
    # a typed code confirmed it (totp_enrolled_at); the last accepted time-step refuses a replayed code.
    totp_secret: Mapped[str | None] = mapped_column(EncryptedText, deferred=True)
    totp_enrolled_at: Mapped[dt.datetime | None]
    totp_last_step: Mapped[int | None]

    @property
    def is_active(self) -> bool:  # Flask-Login refuses disabled accounts
        return self.active

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    # Hashing is deliberately expensive (Argon2id): it runs in lower-priority processes of its
    # own, away from the CPU that answers Magento's callback (password_hashing).
    def set_password(self, password: str) -> None:
        self.password_hash = password_hashing.hash_password(password)

    def check_password(self, password: str) -> bool:
        return password_hashing.verify_password(self.password_hash, password)

    @classmethod
    def by_email(cls, email: str) -> User | None:
        return db.session.scalar(select(cls).where(cls.email == email.strip().lower()))


class UserSession(db.Model):
    """One login. The browser's cookie holds a random token, we keep its hash: ending the row (log out,
    a new password, a disabled account, "End" on the account page) ends that cookie on every worker."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token, hex
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    revoked_at: Mapped[dt.datetime | None]

    user: Mapped[User] = relationship()


class RecoveryCode(db.Model):
    """One of the ten codes shown once at TOTP enrolment; its SHA-256 (the codes are random, 50 bits)."""

    __tablename__ = "recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[dt.datetime | None]


class Passkey(db.Model):
    """A WebAuthn credential: the public key and the authenticator's sign counter (a clone shows itself
    by a counter that does not grow)."""

    __tablename__ = "passkeys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)  # base64url
    public_key: Mapped[str] = mapped_column(Text)  # base64url COSE key
    sign_count: Mapped[int] = mapped_column(default=0)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[dt.datetime | None]


class WebAuthnChallenge(db.Model):
    """A challenge handed to a browser, kept here (not in the cookie) so it is used once, on any worker."""

    __tablename__ = "webauthn_challenges"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the browser's token, hex
    purpose: Mapped[str] = mapped_column(String(16))  # register | authenticate
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    challenge: Mapped[str] = mapped_column(String(128))  # base64url
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class StoreLink(db.Model):
    """One Magento integration (consumer) linked, or being linked, to this app."""

    __tablename__ = "store_links"
    __table_args__ = (Index("ix_store_links_updated_at_id", "updated_at", "id"),)

    PENDING, LINKED, FAILED, REVOKED, UNLINKED = "pending", "linked", "failed", "revoked", "unlinked"

    id: Mapped[int] = mapped_column(primary_key=True)
    consumer_key: Mapped[str] = mapped_column(String(32), unique=True)
    # Secrets are deferred: decrypted only when a caller reads them, never for a list page; read
    # together, since whoever needs one to sign a request needs the others (one SELECT, not three).
    consumer_secret: Mapped[str] = mapped_column(EncryptedText, deferred=True, deferred_group="credentials")
    base_url: Mapped[str] = mapped_column(String(2048))
    # Ours to set: Magento never tells us the integration's name.
    label: Mapped[str | None] = mapped_column(String(100))
    store_host: Mapped[str] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    access_token: Mapped[str | None] = mapped_column(EncryptedText, deferred=True, deferred_group="credentials")
    access_token_secret: Mapped[str | None] = mapped_column(EncryptedText, deferred=True,
                                                           deferred_group="credentials")
    signature_profile: Mapped[str | None] = mapped_column(String(16))
    magento_version: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    linked_at: Mapped[dt.datetime | None]
    last_contact_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]

    owner: Mapped[User | None] = relationship()
    activations: Mapped[list[Activation]] = relationship(
        back_populates="store_link", order_by="Activation.id.desc()", cascade="all, delete-orphan"
    )

    @classmethod
    def by_consumer_key(cls, key: str) -> StoreLink | None:
        return db.session.scalar(select(cls).where(cls.consumer_key == key))

    @property
    def masked_consumer_key(self) -> str:
        """Enough of the key to tell two integrations of one store apart."""
        return f"{self.consumer_key[:4]}…{self.consumer_key[-4:]}"

    @property
    def has_token(self) -> bool:
        return self.access_token is not None

    def forget_token(self) -> None:
        self.access_token = None
        self.access_token_secret = None


class Activation(db.Model):
    """One callback POST from Magento (Activate or Reauthorize) and what became of it."""

    __tablename__ = "activations"

    RECEIVED, EXCHANGING, LINKED, FAILED, SUPERSEDED = "received", "exchanging", "linked", "failed", "superseded"

    id: Mapped[int] = mapped_column(primary_key=True)
    store_link_id: Mapped[int] = mapped_column(ForeignKey("store_links.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # activate | reauthorize
    verifier: Mapped[str] = mapped_column(EncryptedText)
    store_base_url: Mapped[str] = mapped_column(String(2048))
    state: Mapped[str] = mapped_column(String(16), default=RECEIVED)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)

    store_link: Mapped[StoreLink] = relationship(back_populates="activations")
    user: Mapped[User | None] = relationship()


class AuditEvent(db.Model):
    """Who did what, when, from where. Never holds a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_store_link_at", "store_link_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(40))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    store_link_id: Mapped[int | None] = mapped_column(ForeignKey("store_links.id", ondelete="SET NULL"))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User | None] = relationship()
    store_link: Mapped[StoreLink | None] = relationship()


def audit(action: str, *, user: User | None = None, store_link: StoreLink | None = None,
          remote_addr: str | None = None, detail: str | None = None) -> AuditEvent:
    event = AuditEvent(action=action, user=user, store_link=store_link, remote_addr=remote_addr,
                       detail=(detail or None) and detail[:2000])
    db.session.add(event)
    return event


class ApiKey(db.Model):
    """A key another service calls our API with, acting for its owner (all stores if none).

    Only a SHA-256 of the key is kept; ``prefix`` (``mic_`` and 12 hex digits, not secret)
    names it in lists and logs and finds its row.
    """

    __tablename__ = "api_keys"

    SCOPES = ("stores:read", "stores:call", "events:read")

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    # A key never outlives its owner: with the owner gone it would see every store.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
    last_used_addr: Mapped[str | None] = mapped_column(String(64))

    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id])
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    def allows(self, scope: str) -> bool:
        return scope in self.scope_list


@event.listens_for(db.Model, "before_insert", propagate=True)
@event.listens_for(db.Model, "before_update", propagate=True)
def _no_control_characters(mapper, _connection, target) -> None:
    """Every text column, whoever writes it: control characters and bidi overrides never reach the
    database (typed text is refused before this; what a store or a browser sends is neutralised here)."""
    loaded = inspect(target).dict  # only values already in memory: never loads a deferred secret
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        value = loaded.get(prop.key)
        if isinstance(value, str) and isinstance(column.type, String):
            cleaned = neutralised(value, multiline=isinstance(column.type, Text))
            if cleaned != value:
                setattr(target, prop.key, cleaned)
