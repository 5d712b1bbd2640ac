"""Change feeds: every linked store's products, orders, customers and stock, read
incrementally on the background workers and turned into events (see ``sync``)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from .. import jobs
    from . import cli, routes, schedule, sync

    app.register_blueprint(routes.bp)
    app.cli.add_command(cli.sync_command)
    app.cli.add_command(cli.jobs_group)
    interval = float(app.config.get("SYNC_INTERVAL", sync.DEFAULTS["SYNC_INTERVAL"]))
    jobs.periodic(app, schedule.TASK, schedule.tick, interval=float(app.config.get("SYNC_TICK") or min(interval, 5.0)))
