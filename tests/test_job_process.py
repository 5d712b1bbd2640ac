"""Without Redis, under gunicorn, background jobs run in a job process of each worker, at a
lower priority than the worker (integration/jobs/process.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from sqlalchemy import select

from integration.extensions import db
from integration.feeds.models import FeedState
from integration.children import Child
from integration.models import StoreLink
from integration.probe import StoreCapabilities
from integration.sandbox import SandboxState, create_sandbox

from .conftest import PASSWORD
from .servers import Gunicorn, Served, activate, running
from .test_workers import env_for

PRODUCTS = 3000


def _children(pid: int, pattern: str) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid), "-f", pattern], capture_output=True,
                                           text=True).stdout.split()]


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()


def _cpu_ticks(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[11]) + int(fields[12])  # utime + stime


def _products_seen(app) -> int:
    with app.app_context():
        db.session.remove()
        return sum(db.session.scalars(select(FeedState.records_seen).where(FeedState.entity == "products")))


def _probed(app, links: int) -> bool:
    """Whether the ``links``-th store linked has been probed."""
    with app.app_context():
        db.session.remove()
        link_id = db.session.scalars(select(StoreLink.id).order_by(StoreLink.id).offset(links - 1)).first()
        return link_id is not None and db.session.scalar(
            select(StoreCapabilities.probed_at).where(StoreCapabilities.store_link_id == link_id)) is not None


def _activate_and_wait(app, sandbox, server, name: str, until) -> None:
    integration = sandbox.state.add_integration(name, f"{server.url}/magento/callback",
                                                f"{server.url}/magento/identity")
    activate(sandbox.url, integration.id, "owner@example.com", PASSWORD)
    deadline = time.monotonic() + 90
    while not until():
        assert time.monotonic() < deadline, server.read_output()[-3000:]
        time.sleep(0.2)


def test_jobs_run_in_a_niced_process_of_the_worker_which_is_replaced_if_killed(app, app_config, user):
    state = SandboxState(products=PRODUCTS)
    sandbox = Served(create_sandbox(state))
    sandbox.state = state
    server = None
    try:
        server = Gunicorn(env_for(app_config, INTEGRATION_SYNC_INTERVAL="3600"), workers=1, threads=4)
        server.wait_for_output(r"job process \d+ ready")
        ready_at = time.monotonic()  # it started before this
        [worker] = _children(server.proc.pid, "gunicorn")
        [process] = _children(worker, "integration.jobs.process")
        worker_nice = int(_stat(worker)[16])
        nice_above_worker = int(_stat(process)[16]) - int(_stat(worker)[16])
        before, seen = _cpu_ticks(process), _products_seen(app)
        # The store's first sync, a background job: all its products read.
        _activate_and_wait(app, sandbox, server, "First", lambda: _products_seen(app) >= seen + PRODUCTS)
        spent_in_process = _cpu_ticks(process) - before

        # Killed once RESTART_AFTER has passed since it started: the next job after its loss starts a new one.
        time.sleep(max(0.0, ready_at + Child.RESTART_AFTER - time.monotonic()))
        os.kill(process, signal.SIGKILL)
        while running(process):  # until the kernel has closed its end of the socket
            time.sleep(0.05)
        # The probe after linking is queued once, by the worker: it runs on the worker's own threads
        # while no job process is ready (nothing periodic would do it later).
        _activate_and_wait(app, sandbox, server, "While it is gone", lambda: _probed(app, 2))
        server.wait_for_output(r"the job process ended")
        server.wait_for_output(r"job process \d+ ready", 2)  # started again by that job's hand-over
        _activate_and_wait(app, sandbox, server, "After", lambda: _probed(app, 3))
        [replaced] = _children(worker, "integration.jobs.process")
    finally:
        if server is not None:
            server.stop()
        sandbox.stop()
    assert nice_above_worker == min(10, 19 - worker_nice)  # INTEGRATION_JOBS_NICE (19 is the lowest there is)
    # A first sync of 3,000 products is tens of pages parsed, fingerprinted and stored: it shows.
    assert spent_in_process >= 10, spent_in_process  # clock ticks: at least 100 ms
    assert replaced != process
    assert _probed(app, 1)
