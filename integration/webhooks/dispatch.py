"""Delivering the outbox: claim due deliveries, POST them signed, record each outcome.

Runs as the periodic background task ``webhooks.dispatch`` (woken as soon as an event
commits). Any number of dispatchers, in any processes and hosts, share the work:

* PostgreSQL: the claim selects due rows ``FOR UPDATE SKIP LOCKED``; two claims never
  wait for each other or take the same row.
* SQLite: the claim is one conditional ``UPDATE`` (SQLite runs one writer at a time).

Either way the claim moves ``next_attempt_at`` forward by ``LEASE`` and stamps a claim token:
a dispatcher that dies mid-batch leaves its rows to fall due again, and an outcome
arriving after its lease was taken over is not recorded. At least once on the wire; the
event id makes it exactly once for a receiver that remembers the ids it has seen.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import joinedload, undefer

from .. import jobs
from ..extensions import db
from ..magento.store_url import StorePolicy
from ..metrics import WEBHOOK_DELIVERIES
from ..models import utcnow
from ..webhook_signature import HEADER, sign
from . import sender
from .models import DeliveryAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger("integration.webhooks")

TASK = "webhooks.dispatch"
#: How often each runner looks for due deliveries (retries, anything a wake missed).
SWEEP_INTERVAL = 2.0
BATCH = 64
#: Parallel POSTs per dispatcher.
CONCURRENCY = 16
#: A claimed delivery not finished within this falls due again (its dispatcher died).
LEASE = dt.timedelta(seconds=120)
#: One run stops after this long and wakes itself again, so it never hogs a worker.
RUN_BUDGET = 30.0
RETRY_BASE = 10.0

_senders: tuple[int, ThreadPoolExecutor] | None = None
_senders_lock = threading.Lock()


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    claim_token: str
    attempt: int
    url: str
    secrets: tuple[str, ...] = field(repr=False)
    event_id: str
    event_type: str
    body: bytes


def run() -> int:
    """Deliver everything due now; returns how many attempts were made."""
    started, made = time.monotonic(), 0
    while time.monotonic() - started < RUN_BUDGET:
        batch = claim(BATCH)
        if not batch:
            return made
        record_outcomes(batch, send(batch))
        made += len(batch)
    jobs.wake(TASK)  # budget spent with work left: go on in a fresh run
    return made


def claim(limit: int) -> list[Claimed]:
    now = utcnow()
    token = secrets.token_hex(16)
    D = WebhookDelivery
    due = (select(D.id).where(D.state == D.PENDING, D.next_attempt_at <= now)
           .order_by(D.next_attempt_at, D.id).limit(limit))
    # Nothing due (the usual sweep): a read, not a write that would queue behind the
    # callbacks' writes on SQLite.
    if db.session.scalar(due.limit(1)) is None:
        db.session.rollback()
        return []
    if db.session.get_bind().dialect.name == "postgresql":
        # Materialised: as a plain subquery PostgreSQL may run it again per row, and with
        # SKIP LOCKED each run can pick other rows, past the limit.
        due = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
    else:
        due = due.subquery()
    result = db.session.execute(
        update(D).where(D.id == due.c.id).where(D.state == D.PENDING, D.next_attempt_at <= now)
        .values(next_attempt_at=now + LEASE, claim_token=token, attempts=D.attempts + 1)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if not result.rowcount:
        return []
    rows = db.session.scalars(
        select(D).where(D.claim_token == token)
        .options(joinedload(D.event), joinedload(D.endpoint).options(undefer(WebhookEndpoint.secret),
                                                                     undefer(WebhookEndpoint.previous_secret)))
        .order_by(D.id)).all()
    claimed = []
    for d in rows:
        claimed.append(Claimed(d.id, token, d.attempts, d.endpoint.url, tuple(d.endpoint.signing_secrets(now)),
                               d.event.public_id, d.event.type, d.event.payload.encode()))
    db.session.commit()
    return claimed


def send(batch: list[Claimed]) -> list[sender.Answer]:
    session = sender.session_for(webhook_policy(), CONCURRENCY)
    deadline = float(current_app.config.get("WEBHOOK_DEADLINE", sender.DEADLINE))
    return list(_pool().map(lambda c: sender.post(session, c.url, c.body, headers_for(c), deadline), batch))


def headers_for(c: Claimed) -> dict[str, str]:
    return {"Content-Type": "application/json", HEADER: sign(c.secrets, c.body),
            "Companion-Event-Id": c.event_id, "Companion-Event-Type": c.event_type,
            "Companion-Delivery-Attempt": str(c.attempt)}


def record_outcomes(batch: list[Claimed], answers: list[sender.Answer]) -> None:
    """The one place where a delivery's outcome is written, and counted in
    ``companion_webhook_deliveries_total`` (delivered, retrying, given_up).

    Only under the claim that sent it: an outcome arriving after another dispatcher took the
    delivery over is dropped, and not counted. Successes are written per claim and status in
    one statement."""
    now = utcnow()
    D = WebhookDelivery
    recorded: set[int] = set()
    delivered: dict[tuple[str, int | None], list[int]] = {}
    failed = []
    for c, answer in zip(batch, answers, strict=True):
        if answer.delivered:
            delivered.setdefault((c.claim_token, answer.status), []).append(c.delivery_id)
        else:
            failed.append((c, answer))
    for (token, status), ids in delivered.items():
        recorded.update(db.session.scalars(
            update(D).where(D.id.in_(ids), D.claim_token == token)
            .values(state=D.DELIVERED, delivered_at=now, next_attempt_at=None, last_attempt_at=now,
                    last_status=status, last_error=None, claim_token=None)
            .returning(D.id).execution_options(synchronize_session=False)))
    if failed:
        cap = float(current_app.config.get("WEBHOOK_RETRY_CAP", 3600))
        base = float(current_app.config.get("WEBHOOK_RETRY_BASE", RETRY_BASE))
        expiry = dict(db.session.execute(select(D.id, D.expires_at)
                                         .where(D.id.in_([c.delivery_id for c, _ in failed]))).all())
    outcomes = {"delivered": len(recorded), "retrying": 0, "given_up": 0}
    for c, answer in failed:
        values = {"last_attempt_at": now, "last_status": answer.status, "last_error": answer.error,
                  "claim_token": None}
        if c.delivery_id in expiry and now >= expiry[c.delivery_id]:
            values.update(state=D.FAILED, next_attempt_at=None)
            outcome = "given_up"
        else:
            values["next_attempt_at"] = now + dt.timedelta(seconds=backoff(c.attempt, base, cap))
            outcome = "retrying"
        if db.session.execute(update(D).where(D.id == c.delivery_id, D.claim_token == c.claim_token)
                              .values(**values).execution_options(synchronize_session=False)).rowcount:
            recorded.add(c.delivery_id)
            outcomes[outcome] += 1
            if outcome == "given_up":
                log.warning("webhook %s to %s given up after %d attempts: %s", c.event_id, c.url, c.attempt,
                            answer.error)
    attempts = [{"delivery_id": c.delivery_id, "at": now, "status": a.status, "error": a.error,
                 "duration_ms": a.duration_ms} for c, a in zip(batch, answers) if c.delivery_id in recorded]
    if attempts:
        db.session.execute(insert(DeliveryAttempt), attempts)
    db.session.commit()
    for outcome, count in outcomes.items():
        if count:
            WEBHOOK_DELIVERIES.labels(outcome).inc(count)


def backoff(attempt: int, base: float = RETRY_BASE, cap: float = 3600.0) -> float:
    """Seconds before the next try after ``attempt`` failed: exponential, capped, with
    jitter (half to all of it) so that receivers coming back are not hit all at once."""
    delay = min(cap, base * 2 ** min(attempt - 1, 30))
    return delay * random.uniform(0.5, 1.0)


def webhook_policy() -> StorePolicy:
    """The stores' address policy with the webhook allow-list: private and loopback
    receivers only where ``INTEGRATION_ALLOWED_WEBHOOK_HOSTS`` lists them, names looked up
    with the stores' DNS servers (``INTEGRATION_DNS_SERVERS``)."""
    config = current_app.config
    return StorePolicy(tuple(config.get("ALLOWED_WEBHOOK_HOSTS", ())), False, tuple(config.get("DNS_SERVERS") or ()))


def outbox_depth() -> int:
    """Deliveries still to be made (for a metrics gauge)."""
    return db.session.scalar(select(func.count()).select_from(WebhookDelivery)
                             .where(WebhookDelivery.state == WebhookDelivery.PENDING)) or 0


def _pool() -> ThreadPoolExecutor:
    global _senders
    with _senders_lock:
        if _senders is None or _senders[0] != os.getpid():  # threads do not survive a fork
            _senders = (os.getpid(), ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="webhook-send"))
        return _senders[1]
