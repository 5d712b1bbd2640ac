"""Magento's own events, pushed by the store: verified intake merged into the change feed
(see ``service``); the async-events module subscribed to on link (see ``subscriptions``)."""

from __future__ import annotations

from flask import Flask, current_app, has_request_context, request


def init_app(app: Flask) -> None:
    from .. import jobs
    from . import routes, service

    app.register_blueprint(routes.bp)
    app.context_processor(lambda: {"intake_panel": service.panel, "intake_preview": service.preview})
    jobs.periodic(app, "intake.housekeeping", service.housekeeping,
                  interval=float(app.config.get("INTAKE_HOUSEKEEPING_INTERVAL", 60)))


def subscribe_base() -> str | None:
    """Our address for a store just linked or reauthorized to push its events to, or None when
    it is not to be subscribed: ``INTEGRATION_INTAKE_AUTO_SUBSCRIBE`` off, or no address the
    store could reach us at (a CLI link without ``INTEGRATION_PUBLIC_URL``). The subscribing is
    done by the link's probe job (``probe.run_probe``), never inside the exchange request."""
    if not current_app.config.get("INTAKE_AUTO_SUBSCRIBE", True):
        return None
    return public_base()


def public_base() -> str | None:
    """Our address as a store reaches it: ``INTEGRATION_PUBLIC_URL``, else the request's host."""
    return current_app.config.get("PUBLIC_URL") or (request.host_url if has_request_context() else "") or None
