"""Lifecycle webhooks: endpoints admins register, and the outbox delivered to them."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from .. import events, jobs, metrics
    from . import cli, dispatch, routes

    app.register_blueprint(routes.bp)
    app.cli.add_command(cli.webhooks)
    jobs.periodic(app, dispatch.TASK, dispatch.run,
                  interval=float(app.config.get("WEBHOOK_SWEEP_INTERVAL", dispatch.SWEEP_INTERVAL)))
    metrics.register_outbox_depth(dispatch.outbox_depth)
    jobs.periodic(app, "events.retention", events.purge_expired,
                  interval=float(app.config.get("EVENT_RETENTION_SWEEP_INTERVAL", 3600)))
