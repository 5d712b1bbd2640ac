"""Magento's own events, pushed by the store: verified intake merged into the change feed
(see ``service``); the async-events module subscribed to on link (see ``subscriptions``)."""

from __future__ import annotations

import logging

from flask import Flask, current_app, has_request_context, request
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

log = logging.getLogger("integration.intake")
_LINKED = "integration.intake.linked"


def init_app(app: Flask) -> None:
    from .. import jobs
    from . import routes, service

    app.register_blueprint(routes.bp)
    app.context_processor(lambda: {"intake_panel": service.panel, "intake_preview": service.preview})
    jobs.periodic(app, "intake.housekeeping", service.housekeeping,
                  interval=float(app.config.get("INTAKE_HOUSEKEEPING_INTERVAL", 60)))


@sa_event.listens_for(Session, "after_flush")
def _note_links(session: Session, _context) -> None:
    """A store linked or reauthorized in this transaction: once it commits, look for the
    async-events module on a worker (never inside the exchange request itself)."""
    from ..events import STORE_LINKED, STORE_REAUTHORIZED, Event

    for obj in session.new:
        if isinstance(obj, Event) and obj.type in (STORE_LINKED, STORE_REAUTHORIZED) and obj.store_link_id:
            session.info.setdefault(_LINKED, set()).add(obj.store_link_id)


@sa_event.listens_for(Session, "after_commit")
def _subscribe_after_link(session: Session) -> None:
    linked = session.info.pop(_LINKED, None)
    if not linked or not current_app.config.get("INTAKE_AUTO_SUBSCRIBE", True):
        return
    from .. import jobs
    from .subscriptions import after_link

    base = current_app.config.get("PUBLIC_URL") or (request.host_url if has_request_context() else "")
    if not base:
        return  # no address the store could reach us at (a CLI link without INTEGRATION_PUBLIC_URL)
    for link_id in sorted(linked):
        try:
            jobs.enqueue(after_link, link_id, base, retries=2)
        except Exception:  # noqa: BLE001 - the link stands; *Subscribe* on the store's page does it later
            log.warning("could not queue the async-events subscription of store %s", link_id, exc_info=True)


@sa_event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_LINKED, None)
