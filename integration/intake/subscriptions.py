"""aligent/magento-async-events: subscribe after a store is linked, unsubscribe on unlink.

The module's REST API (its ``etc/webapi.xml``, ``Api/AsyncEventRepositoryInterface.php`` and
``Test/Api/AsyncEventRepositoryTest.php``):

* ``POST /V1/async_event`` ``{"asyncEvent": {"event_name", "recipient_url", "verification_token",
  "metadata": "http"}}`` subscribes (``Model/AsyncEventRepository::save`` without a
  subscription id: status on, the token stored encrypted); answers the subscription with its
  ``subscription_id`` and never the token.
* ``GET /V1/async_events`` lists, ``GET /V1/async_event/{id}`` reads one.
* There is no DELETE: ``save`` with a ``subscription_id`` only changes ``status`` (and
  metadata), so unsubscribing is ``PUT /V1/async_event/{id}`` with ``status: false``.

ACL: the integration needs ``Aligent_AsyncEvents::async_events_save`` (Stores > Asynchronous
Events > Save in the integration's API resources) and the resources of each event's service
(``validateResources``: e.g. ``Magento_Sales::sales`` for an order event).

The body the module sends carries no event name (``['data' => $output]``), so each
subscription's recipient URL says which event it is (``?event=sales.order.created``).

Whether a store has the module: the capability probe (``integration/probe.py``) found
``/V1/async_event`` in the schema Magento filtered for our token.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

from flask import current_app
from sqlalchemy import select

from .. import stores
from ..extensions import db
from ..magento import errors
from ..magento.transport import Deadline
from ..models import StoreLink, audit
from . import service, verify
from .models import IntakeSource

log = logging.getLogger("integration.intake")

#: The store's own event names (defined in its ``async_events.xml``) we subscribe to.
DEFAULT_EVENTS = ("catalog.product.created", "catalog.product.updated", "sales.order.created",
                  "sales.order.updated", "customer.created", "customer.updated")


def events_to_subscribe() -> tuple[str, ...]:
    return tuple(current_app.config.get("INTAKE_ASYNC_EVENTS") or DEFAULT_EVENTS)


def endpoint_url(base_url: str, link_id: int, source: str, token: str, event: str | None = None) -> str:
    """Where a store sends its events (built by hand: a job has no request to build URLs from)."""
    url = f"{base_url.rstrip('/')}/magento/events/{link_id}/{source}/{token}"
    return url + (f"?event={quote(event, safe='')}" if event else "")


def after_link(link_id: int, base_url: str) -> None:
    """Run by the probe job of a store just linked or reauthorized, once it has probed, and
    queued by *Subscribe* on the store's page: if the store has the module, subscribe to its
    events with a fresh verification token and path token (dropping the subscriptions of an
    earlier link first)."""
    link = db.session.get(StoreLink, link_id)
    if link is None or link.status != StoreLink.LINKED or not link.has_token:
        return
    from .. import probe  # probe → stores → this package: imported when used

    found = probe.capabilities_of(link)
    if found is None or not found.known or (link.linked_at and found.probed_at < link.linked_at):
        found = probe.probe(link)  # *Subscribe* on a store not probed since it was linked
    if not found.async_events:
        return
    source = _source(link.id)
    if source is not None and source.subscription_list:
        unsubscribe(link)
    source, token = service.enable(link, verify.ALIGENT)
    made, failed = [], []
    secret = source.secret
    with stores.contact(link, "intake.subscribed", "asynchronous events") as client:
        for name in events_to_subscribe():
            url = endpoint_url(base_url, link.id, verify.ALIGENT, token, name)
            try:
                answer = client.post("async_event", json={"asyncEvent": {
                    "event_name": name, "recipient_url": url, "verification_token": secret, "metadata": "http"}})
            except errors.ApiError as exc:  # e.g. an event the store does not define, a resource not granted
                failed.append(f"{name}: {exc.message}"[:200])
                continue
            if isinstance(answer, dict) and answer.get("subscription_id") is not None:
                made.append({"id": answer["subscription_id"], "event": name})
    source = _source(link.id)
    source.subscriptions = json.dumps(made)
    if failed:
        audit("intake.subscribe_failed", store_link=link, detail="; ".join(failed)[:2000])
    db.session.commit()


def unsubscribe(link: StoreLink, *, user=None, remote_addr: str | None = None) -> int:
    """Turn off our subscriptions on the store, best effort (an unreachable store keeps them:
    their requests are then refused, the store not being linked). Needs the link's token:
    call before forgetting it. Returns how many were turned off."""
    source = _source(link.id)
    if source is None or not source.subscription_list or not link.has_token:
        return 0
    done = 0
    try:
        with stores.contact(link, "intake.unsubscribed", "asynchronous events", user=user, remote_addr=remote_addr,
                            deadline=Deadline(float(current_app.config.get("INTAKE_UNSUBSCRIBE_DEADLINE", 5.0)))
                            ) as client:
            for sub in source.subscription_list:
                try:
                    client.put(f"async_event/{int(sub['id'])}",
                               json={"asyncEvent": {"subscription_id": int(sub["id"]), "status": False}})
                    done += 1
                except errors.ApiError as exc:
                    log.warning("could not turn off subscription %s of store %s: %s", sub.get("id"), link.id,
                                exc.message)
    except errors.MagentoError as exc:
        log.warning("could not unsubscribe store %s: %s", link.id, exc.message)
    source = _source(link.id)
    if source is not None:
        source.subscriptions = json.dumps([])
        db.session.commit()
    return done


def _source(link_id: int) -> IntakeSource | None:
    return db.session.scalar(select(IntakeSource).where(IntakeSource.store_link_id == link_id,
                                                        IntakeSource.source == verify.ALIGENT))
