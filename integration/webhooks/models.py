"""Webhook endpoints, the outbox of deliveries to them, and every attempt made."""

from __future__ import annotations

import datetime as dt

from flask import current_app
from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..crypto import EncryptedText
from ..events import Event
from ..extensions import db
from ..models import User, utcnow

#: Deliveries are retried for this long after the event (or after a replay).
RETRY_WINDOW = dt.timedelta(hours=24)
ALL_EVENTS = "*"


def retry_window() -> dt.timedelta:
    return dt.timedelta(seconds=current_app.config.get("WEBHOOK_RETRY_WINDOW", RETRY_WINDOW.total_seconds()))


class WebhookEndpoint(db.Model):
    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    #: Space-separated event types, or ``*`` for every type (including ones added later).
    event_types: Mapped[str] = mapped_column(String(500))
    secret: Mapped[str] = mapped_column(EncryptedText, deferred=True)
    #: During a rotation the old secret still signs, until ``previous_secret_until``.
    previous_secret: Mapped[str | None] = mapped_column(EncryptedText, deferred=True)
    previous_secret_until: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    created_by: Mapped[User | None] = relationship()

    @property
    def types(self) -> list[str]:
        return self.event_types.split()

    def wants(self, event_type: str) -> bool:
        return self.event_types == ALL_EVENTS or event_type in self.types

    def signing_secrets(self, now: dt.datetime) -> list[str]:
        """Newest first: the receiver may hold either while a rotation is in progress."""
        found = [self.secret]
        if self.previous_secret and self.previous_secret_until and self.previous_secret_until > now:
            found.append(self.previous_secret)
        return found


class WebhookDelivery(db.Model):
    """One event for one endpoint: the outbox row. ``next_attempt_at`` is also the lease: a
    dispatcher claiming it pushes it forward, so a dispatcher that dies lets it fall due again."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_webhook_deliveries_endpoint_event"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[dt.datetime | None]
    #: Who holds the current claim: an outcome from an older claim is not recorded.
    claim_token: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    last_attempt_at: Mapped[dt.datetime | None]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None]

    endpoint: Mapped[WebhookEndpoint] = relationship()
    event: Mapped[Event] = relationship()
    attempt_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", order_by="DeliveryAttempt.id.desc()", cascade="all, delete-orphan",
        passive_deletes=True)


class DeliveryAttempt(db.Model):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status: Mapped[int | None]  # the receiver's HTTP status; None when there was no answer
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(default=0)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempt_log")
