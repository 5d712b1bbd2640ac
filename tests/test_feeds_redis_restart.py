"""Redis restarted in the middle of a run: the RQ worker reconnects by itself and the feed goes
on from the cursor kept in the database (Redis holds no feed state: every job it lost is found
again by the next tick, and queued again). A Redis of this test's own, on a free port: the shared
one on 6379 is never restarted."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import requests
from redis import Redis
from sqlalchemy import select

from integration import create_app, jobs
from integration.extensions import db
from integration.feeds import exports, schedule
from integration.feeds.models import FeedState, Job
from integration.models import StoreLink

from .servers import ROOT, free_port
from .test_feeds import payloads, types, wait_until, worker_env

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server to start one")


class OwnRedis:
    def __init__(self, tmp_path):
        self.port, self.dir = free_port(), tmp_path
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_until(self.up, timeout=10), "redis-server did not start"

    def up(self) -> bool:
        try:
            return Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
        except Exception:  # noqa: BLE001
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def test_a_worker_survives_a_redis_restart_and_the_feed_resumes_from_the_database(
        app, app_config, migrated, linked, sandbox, tmp_path):
    link_id, _ = linked
    redis = OwnRedis(tmp_path)
    redis.start()
    rq_app = create_app({**app_config, "JOBS_REDIS_URL": redis.url, "SYNC_ENTITIES": ("products",)})
    sandbox.state.latency = 0.25  # 12 pages of 5, one at a time: a few seconds to restart Redis in
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
        env=worker_env(migrated, INTEGRATION_REDIS_URL=redis.url, INTEGRATION_SYNC_INTERVAL="3600",
                       INTEGRATION_SYNC_PAGE_SIZE="5", INTEGRATION_STORE_CONCURRENCY="1",
                       INTEGRATION_JOBS_REQUEUE_AFTER="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with rq_app.app_context():
            schedule.sync_soon(link_id, ["products"])
        assert wait_until(lambda: types(app)["product.created"] >= 10, timeout=40)
        with rq_app.app_context():  # queued behind the running sync: only Redis knows it is waiting
            export_id = exports.queue_export(db.session.get(StoreLink, link_id), "customers", "csv", None).id
        redis.kill()  # mid-run: the queue, the worker's registration, the job's status all gone
        assert types(app)["product.created"] < 60
        time.sleep(2)
        redis.start()
        assert worker.poll() is None, "the worker stopped when Redis went away"

        # A change while Redis was away, then work queued on the new Redis: the same worker runs it.
        requests.put(f"{sandbox.url}/sandbox/products/SB-00002", json={"price": 7.5}, timeout=5).raise_for_status()
        sandbox.state.latency = 0
        assert wait_until(lambda: _lease_free(rq_app), timeout=60)  # the interrupted pass ended either way
        with rq_app.app_context():
            schedule.sync_soon(link_id, ["products"])
        assert wait_until(lambda: types(app)["product.updated"] >= 1, timeout=60), worker_output(worker)
        got = types(app)
        assert got["product.created"] == 60 and got["product.updated"] == 1  # nothing twice, nothing lost
        created = sorted(int(p["record_id"]) for p in payloads(app, "product.created"))
        assert created == list(range(1, 61))
        assert payloads(app, "product.updated")[0]["record"]["price"] == 7.5
        assert wait_until(lambda: _lease_free(rq_app), timeout=30)
        with rq_app.app_context():
            states = Counter(db.session.scalars(select(Job.state).where(Job.entity == "products")))
        assert states[Job.FINISHED] >= 1 and not states[Job.RUNNING]

        # The export Redis lost while it waited: still queued in the database, so queued again.
        assert wait_until(lambda: _state(rq_app, export_id) == Job.FINISHED, timeout=60), worker_output(worker)
        assert wait_until(lambda: not _unfinished(rq_app), timeout=60), _unfinished(rq_app)
    finally:
        worker.terminate()
        try:
            worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        jobs.stop(rq_app)
        with rq_app.app_context():
            db.engine.dispose()
        redis.kill()


def _state(app, job_id: int) -> str:
    with app.app_context():
        return db.session.get(Job, job_id).state


def _unfinished(app) -> list:
    """Every job the database says is queued or running (the worker's tick queued each feed)."""
    with app.app_context():
        return db.session.execute(select(Job.id, Job.kind, Job.entity, Job.state)
                                  .where(Job.state.in_((Job.QUEUED, Job.RUNNING)))).all()


def _lease_free(app) -> bool:
    with app.app_context():
        feed = db.session.scalar(select(FeedState).where(FeedState.entity == "products"))
        return feed is not None and feed.lease_owner is None and feed.cursor is not None


def worker_output(worker) -> str:
    worker.terminate()
    try:
        return worker.communicate(timeout=20)[0][-3000:]
    except subprocess.TimeoutExpired:
        return "(no output)"
