"""Activating a store: the callback POST, then the token exchange when its admin logs in.

The exchange is guarded in the database, not in process memory: whichever worker flips
an activation from ``received`` to ``exchanging`` runs it; the others wait for its result.

Anyone can post a callback, so a link nobody has claimed yet is kept out of the store list
and expires (``PENDING_EXPIRY_HOURS``); expired ones are deleted by the next callbacks and by
``flask stores purge-pending``, so no timer has to live in a process.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value

from . import doctor, events
from .extensions import db
from .magento.credentials import RULE, is_credential
from .magento.errors import MagentoError, UnsafeStoreURL
from .magento.store_url import host_of
from .magento.transport import Deadline
from .magento.token_exchange import Consumer, TokenExchange
from .metrics import EXCHANGES
from .models import Activation, StoreLink, User, audit, utcnow
from .outbound import store_policy, token_exchange

CALLBACK_FIELDS = ("oauth_consumer_key", "oauth_consumer_secret", "store_base_url", "oauth_verifier")
#: An exchange claimed longer ago than this is taken to have died with its worker.
STALE_CLAIM = dt.timedelta(seconds=90)
#: Expired unclaimed links each callback deletes: enough to outpace any flood of callbacks,
#: few enough to keep the callback fast.
PURGE_BATCH = 100


class CallbackRejected(ValueError):
    """The callback POST is not one Magento would send; nothing was stored."""


@dataclass(frozen=True)
class Callback:
    consumer_key: str
    consumer_secret: str = field(repr=False)
    store_base_url: str
    verifier: str = field(repr=False)


def parse_callback(form) -> Callback:
    """Validate Magento's four fields; ``CallbackRejected`` says which one is wrong and why."""
    values = {}
    for name in CALLBACK_FIELDS:
        given = form.getlist(name) if hasattr(form, "getlist") else [form.get(name)]
        if not given or given[0] is None or given[0] == "":
            raise CallbackRejected(f"{name} is missing")
        if len(given) > 1:
            raise CallbackRejected(f"{name} is given more than once")
        values[name] = given[0]
    for name in ("oauth_consumer_key", "oauth_consumer_secret", "oauth_verifier"):
        if not is_credential(values[name]):
            raise CallbackRejected(f"{name} must be {RULE} (got {len(values[name])} characters)")
    try:
        url = store_policy().check(values["store_base_url"])
    except UnsafeStoreURL as exc:
        raise CallbackRejected(str(exc)) from None
    return Callback(values["oauth_consumer_key"], values["oauth_consumer_secret"], url, values["oauth_verifier"])


def unclaimed() -> ColumnElement[bool]:
    """Links only callbacks ever touched: pending, never linked, nobody's."""
    return (StoreLink.status == StoreLink.PENDING) & StoreLink.owner_id.is_(None) & StoreLink.linked_at.is_(None)


def expired() -> ColumnElement[bool]:
    """Unclaimed links whose last callback is older than ``PENDING_EXPIRY_HOURS``. (Magento
    itself gives up on an activation after 300 seconds.)"""
    ttl = dt.timedelta(hours=float(current_app.config["PENDING_EXPIRY_HOURS"]))
    return unclaimed() & (StoreLink.updated_at < utcnow() - ttl)


def purge_expired(limit: int | None = None) -> int:
    """Delete expired unclaimed links (at most ``limit``) with their activations; the audit
    trail keeps their callbacks. Commits; returns how many went."""
    doomed = select(StoreLink.id).where(expired())
    if limit is not None:
        doomed = doomed.order_by(StoreLink.updated_at).limit(limit)
    # Look before deleting: a DELETE takes the write lock even when it matches nothing, and
    # on SQLite that would queue every callback behind every other one.
    if db.session.scalar(doomed.limit(1)) is None:
        db.session.rollback()
        return 0
    result = db.session.execute(delete(StoreLink).where(StoreLink.id.in_(doomed))
                                .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount


def record_callback(callback: Callback, remote_addr: str | None, started: float | None = None) -> Activation:
    """Store (or update) the link and add an activation; commits. ``started`` (a
    ``time.perf_counter()`` reading taken when the request arrived) times the doctor's step."""
    purge_expired(PURGE_BATCH)
    for attempt in (1, 2):
        try:
            return _record(callback, remote_addr, started)
        except IntegrityError:  # a concurrent callback for the same new key won the insert
            db.session.rollback()
            if attempt == 2:
                raise


def _record(callback: Callback, remote_addr: str | None, started: float | None) -> Activation:
    link = db.session.scalar(
        select(StoreLink).where(StoreLink.consumer_key == callback.consumer_key).with_for_update()
    )
    if link is None:
        link = StoreLink(consumer_key=callback.consumer_key, consumer_secret=callback.consumer_secret,
                         base_url=callback.store_base_url, store_host=host_of(callback.store_base_url))
        db.session.add(link)
        kind = "activate"
    else:
        # Magento never changes a consumer's secret, so a different one is not Magento.
        if not hmac.compare_digest(link.consumer_secret.encode(), callback.consumer_secret.encode()):
            raise CallbackRejected("oauth_consumer_key is already registered with a different consumer secret")
        previous = current_activation(link)
        if previous is not None and hmac.compare_digest(previous.verifier.encode(), callback.verifier.encode()):
            return _repeat(link, previous, remote_addr, started)
        kind = "reauthorize"
        for old in link.activations:
            if old.state in (Activation.RECEIVED, Activation.FAILED):
                old.state = Activation.SUPERSEDED
        link.base_url = callback.store_base_url
        link.store_host = host_of(callback.store_base_url)
    # Magento deletes the old token before it posts again: ours no longer works.
    link.forget_token()
    link.status = StoreLink.PENDING
    link.last_error = None
    link.updated_at = utcnow()  # an unclaimed link expires counting from its last callback
    activation = Activation(store_link=link, kind=kind, verifier=callback.verifier,
                            store_base_url=callback.store_base_url, remote_addr=remote_addr)
    db.session.add(activation)
    audit("callback.received", store_link=link, remote_addr=remote_addr,
          detail=f"{kind} from {callback.store_base_url}")
    doctor.record_step(doctor.CALLBACK, doctor.OK, link=link, activation=activation, started=started,
                       remote_addr=remote_addr, detail=f"{kind} from {callback.store_base_url}")
    db.session.commit()
    return activation


def _repeat(link: StoreLink, activation: Activation, remote_addr: str | None, started: float | None) -> Activation:
    """The same verifier again: a retried POST, or Activate clicked again on an Inactive
    integration (Magento then reuses its verifier). No new row; an unfinished activation
    is simply ready again, a finished or running one is left alone."""
    if activation.state in (Activation.RECEIVED, Activation.FAILED):
        activation.state = Activation.RECEIVED
        activation.received_at = utcnow()
        activation.error = None
        link.status = StoreLink.PENDING
        link.last_error = None
    link.updated_at = utcnow()  # an unclaimed link expires counting from its last callback
    audit("callback.repeated", store_link=link, remote_addr=remote_addr, detail=f"activation {activation.state}")
    doctor.record_step(doctor.CALLBACK, doctor.OK, link=link, activation=activation, started=started,
                       remote_addr=remote_addr, detail=f"the same verifier again (activation {activation.state})")
    db.session.commit()
    return activation


def current_activation(link: StoreLink) -> Activation | None:
    return db.session.scalar(
        select(Activation).where(Activation.store_link_id == link.id).order_by(Activation.id.desc()).limit(1)
    )


def claim(activation: Activation) -> bool:
    """Atomically take the right to run this activation's exchange."""
    now = utcnow()
    result = db.session.execute(
        update(Activation)
        .where(Activation.id == activation.id)
        .where(or_(Activation.state.in_([Activation.RECEIVED, Activation.FAILED]),
                   (Activation.state == Activation.EXCHANGING) & (Activation.claimed_at < now - STALE_CLAIM)))
        .values(state=Activation.EXCHANGING, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if result.rowcount != 1:
        return False
    set_committed_value(activation, "state", Activation.EXCHANGING)
    set_committed_value(activation, "claimed_at", now)
    return True


class LinkRefused(Exception):
    """Linking did not happen; ``title``, ``message`` and ``hint`` are for the admin's pop-up."""

    def __init__(self, title: str, message: str, hint: str = "", status: int = 502):
        super().__init__(message)
        self.title, self.message, self.hint, self.status = title, message, hint, status


def link_store(activation: Activation, user: User, remote_addr: str | None) -> StoreLink:
    """Make sure this activation's token exchange has run exactly once, here or in another
    worker, and that ``user`` may link the store; ``LinkRefused`` says why not."""
    link = activation.store_link
    # Read now, not when the view loaded them: the other pop-up's submit, or a repeated callback,
    # may have moved them on while this one waited for its password hash.
    db.session.refresh(activation)
    db.session.refresh(link)
    if link.owner_id not in (None, user.id) and not user.is_admin:
        raise LinkRefused("This store is linked to another account",
                          "Log in with the account that linked it, or ask an administrator.", status=403)
    if activation.state == Activation.LINKED:
        if not link.has_token:
            raise LinkRefused("This activation was already used",
                              "The store was unlinked after this activation completed.",
                              "Click Reauthorize on the integration in Magento's admin to link it again.", 409)
        return link
    if activation.state in (Activation.RECEIVED, Activation.FAILED) and doctor.window_passed(activation):
        raise _expired(activation, user, remote_addr)
    if claim(activation):
        try:
            return exchange(activation, user, token_exchange(), remote_addr)
        except MagentoError as exc:
            cause = doctor.CAUSES[doctor.cause_of(exc)]
            raise LinkRefused(cause.title, f"{cause.plain} (The store's answer: {doctor.answer_of(exc)})",
                              cause.fix) from None
    activation = wait_for(activation.id)
    if activation.state == Activation.EXCHANGING:
        raise LinkRefused("Still linking", "Another request is exchanging tokens with the store.",
                          "Wait a moment and submit again.", 409)
    if activation.state != Activation.LINKED:
        raise LinkRefused("The store refused the link", activation.error or "The token exchange failed.")
    return activation.store_link


def _expired(activation: Activation, user: User, remote_addr: str | None) -> LinkRefused:
    """Magento's window has passed (by our clock): say so without asking the store, whose only
    answer would be "Consumer key has expired" (and a spent nonce). Commits."""
    cause = doctor.CAUSES["expired"]
    link = activation.store_link
    doctor.record_step(doctor.REQUEST_TOKEN, doctor.SKIPPED, link=link, activation=activation, cause="expired",
                       remote_addr=remote_addr,
                       detail=f"not tried: the callback arrived more than {doctor.window()} s ago")
    activation.state = Activation.FAILED
    activation.error = f"{cause.title}: not tried. {cause.fix}"
    activation.finished_at = utcnow()
    activation.user = user
    link.status = StoreLink.FAILED if not link.has_token else link.status
    link.last_error = activation.error
    audit("exchange.failed", user=user, store_link=link, remote_addr=remote_addr, detail=activation.error)
    db.session.commit()
    return LinkRefused("The time to link has run out", cause.plain, cause.fix, 409)


def wait_for(activation_id: int, timeout: float = 20.0, interval: float = 0.2) -> Activation:
    """The activation once no worker is exchanging it any more (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        db.session.expire_all()
        activation = db.session.get(Activation, activation_id)
        if activation.state != Activation.EXCHANGING or time.monotonic() > deadline:
            return activation
        db.session.rollback()  # hand the connection back while we wait
        time.sleep(interval)


def exchange(activation: Activation, user: User, client: TokenExchange, remote_addr: str | None) -> StoreLink:
    """Run the token exchange for a claimed activation and record the outcome; commits."""
    link = activation.store_link
    consumer = Consumer(link.consumer_key, link.consumer_secret)
    base_url, verifier = activation.store_base_url, activation.verifier
    db.session.commit()  # no connection held while the store answers (up to STORE_DEADLINE)
    deadline, step, started = Deadline(client.deadline), doctor.REQUEST_TOKEN, time.perf_counter()
    tried = f"signed with profile {client.profile}"
    try:
        request_token = client.request_token(base_url, consumer, deadline=deadline)
        doctor.record_step(step, doctor.OK, link=link, activation=activation, started=started, status=200,
                           detail=tried)
        step, started = doctor.ACCESS_TOKEN, time.perf_counter()
        token = client.access_token(base_url, consumer, request_token, verifier, deadline=deadline)
    except MagentoError as exc:
        doctor.record_step(step, doctor.FAILED, link=link, activation=activation, started=started,
                           status=exc.status, answer=doctor.answer_of(exc), cause=doctor.cause_of(exc),
                           detail=tried, secrets=(consumer.secret, verifier))
        activation.state = Activation.FAILED
        activation.error = _describe(exc)
        activation.finished_at = utcnow()
        activation.user = user
        link.status = StoreLink.FAILED
        link.last_error = activation.error
        audit("exchange.failed", user=user, store_link=link, remote_addr=remote_addr, detail=activation.error)
        db.session.commit()
        EXCHANGES.labels("failed").inc()
        raise
    doctor.record_step(step, doctor.OK, link=link, activation=activation, started=started, status=200,
                       detail=tried)
    now = utcnow()
    link.access_token, link.access_token_secret = token.token, token.secret
    link.status = StoreLink.LINKED
    link.owner = link.owner or user
    link.linked_at = link.last_contact_at = now
    link.revoked_at = None
    link.last_error = None
    activation.state = Activation.LINKED
    activation.finished_at = now
    activation.user = user
    activation.error = None
    audit("exchange.succeeded", user=user, store_link=link, remote_addr=remote_addr,
          detail=f"{activation.kind} of {link.base_url}")
    events.record(db.session, events.STORE_LINKED if activation.kind == "activate" else events.STORE_REAUTHORIZED,
                  link)
    db.session.commit()
    EXCHANGES.labels("succeeded").inc()
    from .intake import subscribe_base
    from .probe import enqueue_probe  # probe → stores → activation: imported when used

    # What the integration may do can change with every reauthorize: probe again, then subscribe.
    enqueue_probe(link.id, subscribe_base())
    return link


def _describe(exc: MagentoError) -> str:
    text = exc.message
    if exc.hint:
        text += f" — {exc.hint}"
    return text
