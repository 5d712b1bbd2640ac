"""Managing webhook endpoints (the same for the dashboard and the CLI): add, remove, rotate the
signing secret, replay a delivery. Each writes the audit trail and commits."""

from __future__ import annotations

import datetime as dt
import secrets
from urllib.parse import urlsplit

from sqlalchemy import select

from .. import jobs
from ..events import TYPES
from ..extensions import db
from ..magento.errors import UnsafeStoreURL
from ..magento.store_url import MAX_URL_LENGTH
from ..models import User, audit, utcnow
from .dispatch import TASK, webhook_policy
from .models import ALL_EVENTS, WebhookDelivery, WebhookEndpoint, retry_window

#: How long the old secret keeps signing after a rotation, by default.
ROTATION_GRACE = dt.timedelta(hours=24)


class WebhookError(Exception):
    """A refused webhook operation; the message says why."""


class EndpointRefused(WebhookError):
    """The URL is not one we will send to."""


class UnknownEventType(WebhookError):
    pass


class NotFound(WebhookError):
    pass


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def check_url(url: str) -> str:
    """``url`` if we may POST to it: http(s), no user info, and a public address unless its
    host is in ``INTEGRATION_ALLOWED_WEBHOOK_HOSTS`` (the stores' policy). The send checks
    the connected address again."""
    url = (url or "").strip()
    if not url:
        raise EndpointRefused("the URL is empty")
    if len(url) > MAX_URL_LENGTH:
        raise EndpointRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise EndpointRefused("the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise EndpointRefused(f"not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise EndpointRefused("the URL must start with http:// or https://")
    if not parts.hostname:
        raise EndpointRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("the URL must not contain a user name or password")
    if parts.fragment or url.endswith("#"):
        raise EndpointRefused("the URL must not have a fragment (#...)")
    try:
        webhook_policy().check(f"{parts.scheme}://{parts.netloc}/")
    except UnsafeStoreURL as exc:
        message = str(exc).replace("store_base_url", "the URL").replace("store host", "host")
        raise EndpointRefused(f"{message} (allow it with INTEGRATION_ALLOWED_WEBHOOK_HOSTS)") from None
    return url


def check_types(types: list[str] | tuple[str, ...]) -> str:
    chosen = [t.strip() for t in types if t and t.strip()]
    if not chosen or ALL_EVENTS in chosen:
        return ALL_EVENTS
    unknown = [t for t in chosen if t not in TYPES]
    if unknown:
        raise UnknownEventType(f"unknown event type {unknown[0]!r}; choose from {', '.join(TYPES)}")
    return " ".join(t for t in TYPES if t in chosen)


def add(url: str, types: list[str] | tuple[str, ...] = (), *, user: User | None = None,
        remote_addr: str | None = None) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its signing secret (shown once, stored encrypted)."""
    url, event_types = check_url(url), check_types(types)
    secret = new_secret()
    endpoint = WebhookEndpoint(url=url, event_types=event_types, secret=secret, created_by=user)
    db.session.add(endpoint)
    db.session.flush()
    audit("webhook.added", user=user, remote_addr=remote_addr,
          detail=f"endpoint {endpoint.id}: {url} for {event_types}")
    db.session.commit()
    return endpoint, secret


def get(endpoint_id: int) -> WebhookEndpoint:
    endpoint = db.session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return endpoint


def endpoints() -> list[WebhookEndpoint]:
    return list(db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def remove(endpoint_id: int, *, user: User | None = None, remote_addr: str | None = None) -> None:
    """Delete the endpoint and its delivery log (the audit trail keeps that it existed)."""
    endpoint = get(endpoint_id)
    audit("webhook.removed", user=user, remote_addr=remote_addr, detail=f"endpoint {endpoint.id}: {endpoint.url}")
    db.session.delete(endpoint)
    db.session.commit()


def rotate_secret(endpoint_id: int, grace: dt.timedelta = ROTATION_GRACE, *, user: User | None = None,
                  remote_addr: str | None = None) -> tuple[WebhookEndpoint, str]:
    """A new secret; the current one goes on signing (a second ``v1``) for ``grace``."""
    endpoint = get(endpoint_id)
    secret = new_secret()
    if grace.total_seconds() > 0:
        endpoint.previous_secret, endpoint.previous_secret_until = endpoint.secret, utcnow() + grace
    else:
        endpoint.previous_secret, endpoint.previous_secret_until = None, None
    endpoint.secret = secret
    audit("webhook.secret_rotated", user=user, remote_addr=remote_addr,
          detail=f"endpoint {endpoint.id}: old secret valid for {int(grace.total_seconds())} s more")
    db.session.commit()
    return endpoint, secret


def deliveries(endpoint_id: int, limit: int = 100) -> list[WebhookDelivery]:
    from sqlalchemy.orm import joinedload, selectinload

    return list(db.session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        .options(joinedload(WebhookDelivery.event), selectinload(WebhookDelivery.attempt_log))
        .order_by(WebhookDelivery.id.desc()).limit(limit)))


def replay(delivery_id: int, *, endpoint_id: int | None = None, user: User | None = None,
           remote_addr: str | None = None) -> WebhookDelivery:
    """Send the delivery again now, with the same event id and body, retried as a new one."""
    delivery = db.session.get(WebhookDelivery, delivery_id)
    if delivery is None or (endpoint_id is not None and delivery.endpoint_id != endpoint_id):
        raise NotFound(f"no delivery {delivery_id}")
    now = utcnow()
    delivery.state = WebhookDelivery.PENDING
    delivery.next_attempt_at = now
    delivery.expires_at = now + retry_window()
    delivery.claim_token = None
    audit("webhook.replayed", user=user, remote_addr=remote_addr,
          detail=f"delivery {delivery.id} of {delivery.event.public_id} to endpoint {delivery.endpoint_id}")
    db.session.commit()
    jobs.wake(TASK)
    return delivery
