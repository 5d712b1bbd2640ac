"""``flask --app app worker``: run background jobs from Redis (RQ)."""

from __future__ import annotations

import logging
import threading

import click
from flask import current_app
from flask.cli import with_appcontext

log = logging.getLogger("integration.jobs")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run what is queued (and due periodic tasks), then exit.")
@with_appcontext
def worker(burst: bool) -> None:
    """Run background jobs (webhook deliveries, ...) from the Redis queue. Start as many as
    you like, on any hosts sharing the database and INTEGRATION_REDIS_URL."""
    from rq import SimpleWorker

    from . import settle_collector

    state = current_app.extensions["jobs"]
    if not state.redis_url:
        raise click.ClickException(
            "a worker needs INTEGRATION_REDIS_URL; without Redis the app runs background jobs itself")
    engine = state.runner()
    engine.tick()
    stopping = threading.Event()

    def clock() -> None:
        interval = min((t.interval for t in state.periodic.values()), default=1.0)
        while not stopping.wait(max(interval / 2, 0.1)):
            try:
                engine.tick()
            except Exception:  # noqa: BLE001 - Redis away for a moment; the next tick retries
                log.warning("periodic tick failed", exc_info=True)

    # SimpleWorker runs each job in this process, inside this app: no fork per job, one
    # database pool per worker.
    rq_worker = SimpleWorker([engine.queue], connection=engine.redis)
    if not burst:
        threading.Thread(target=clock, name="jobs-clock", daemon=True).start()
    settle_collector()
    try:
        rq_worker.work(with_scheduler=True, burst=burst, logging_level="WARNING")
    finally:
        stopping.set()
