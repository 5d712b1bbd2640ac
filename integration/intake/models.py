"""What the intake keeps: one source per store and sending module (how its requests are
verified, where they arrive, what it has sent) and every request received, raw, for a while:
accepted ones for replay and duplicate detection, refused ones as the quarantine."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..crypto import EncryptedText
from ..extensions import db
from ..models import StoreLink, utcnow


class IntakeSource(db.Model):
    """A store's sending module: ``aligent`` (HMAC with the verification token we gave it),
    ``adobe`` (RSA, the store's public key) or ``secret`` (a shared secret in a header).
    The path token is kept as its SHA-256 only; the secret encrypted; the public key as is."""

    __tablename__ = "intake_sources"
    __table_args__ = (UniqueConstraint("store_link_id", "source", name="uq_intake_sources_store_source"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_link_id: Mapped[int] = mapped_column(ForeignKey("store_links.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(16))
    path_token_hash: Mapped[str] = mapped_column(String(64))
    secret: Mapped[str | None] = mapped_column(EncryptedText, deferred=True)
    public_key: Mapped[str | None] = mapped_column(Text, deferred=True)
    #: What the dashboard shows instead of the secret or key.
    key_fingerprint: Mapped[str | None] = mapped_column(String(64))
    header_name: Mapped[str | None] = mapped_column(String(64))
    #: aligent: the subscriptions made on the store, ``[{"id": 3, "event": "…"}]``.
    subscriptions: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_event_at: Mapped[dt.datetime | None]
    verified: Mapped[int] = mapped_column(default=0)
    refused: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    emitted: Mapped[int] = mapped_column(default=0)

    store_link: Mapped[StoreLink] = relationship()

    @property
    def subscription_list(self) -> list[dict]:
        try:
            value = json.loads(self.subscriptions or "[]")
        except ValueError:
            return []
        return [s for s in value if isinstance(s, dict)] if isinstance(value, list) else []


class IntakeMessage(db.Model):
    """One request received. ``accepted_hash`` (the body's SHA-256, set once verified) is unique
    per source: the same signed body twice is a replay, refused, even when both arrive at once."""

    __tablename__ = "intake_messages"
    __table_args__ = (UniqueConstraint("source_id", "accepted_hash", name="uq_intake_messages_accepted"),
                      Index("ix_intake_messages_store_state", "store_link_id", "state", "id"),
                      Index("ix_intake_messages_received_at", "received_at"))

    RECEIVED, REFUSED, ACCEPTED = "received", "refused", "accepted"
    EMITTED, DUPLICATE, SKIPPED, FAILED = "emitted", "duplicate", "skipped", "failed"

    id: Mapped[int] = mapped_column(primary_key=True)
    store_link_id: Mapped[int] = mapped_column(ForeignKey("store_links.id", ondelete="CASCADE"))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("intake_sources.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    event_name: Mapped[str | None] = mapped_column(String(128))
    #: The raw body (bounded by INTAKE_MAX_BYTES; only its first bytes for a refused one).
    body: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    body_size: Mapped[int] = mapped_column(default=0)
    accepted_hash: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=RECEIVED)
    reason: Mapped[str | None] = mapped_column(String(255))
    entity: Mapped[str | None] = mapped_column(String(16))
    record_id: Mapped[str | None] = mapped_column(String(128))
    processed_at: Mapped[dt.datetime | None]

    intake_source: Mapped[IntakeSource | None] = relationship()
