"""Background jobs on both engines: the embedded thread pool, and RQ workers on Redis (db 9).

The RQ tests start real ``flask --app app worker`` processes against the test database.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from redis import Redis

from integration import create_app, events, jobs
from integration.extensions import db
from integration.models import StoreLink
from integration.webhook_signature import HEADER, verify_signature
from integration.webhooks import service

from .conftest import KEYS
from .receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("INTEGRATION_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


# Jobs must be importable by a worker process: module-level functions.

def write_line(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


def fails_once(path: str) -> None:
    if not os.path.exists(path):
        write_line(path, "failed")
        raise RuntimeError("first try fails")
    write_line(path, "ok")


def lines(path) -> list[str]:
    return Path(path).read_text().split() if Path(path).exists() else []


def wait_until(predicate, timeout=15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- embedded --------------------------------------------------------------------------

def test_embedded_runs_jobs_in_the_app_and_retries_failures(app, tmp_path):
    app.config["JOBS_RETRY_INTERVALS"] = (0.1,)
    with app.app_context():
        jobs.enqueue(write_line, str(tmp_path / "a"), "hello")  # queued until the runner starts
        jobs.enqueue(fails_once, str(tmp_path / "b"), retries=2)
        jobs.enqueue(fails_once, str(tmp_path / "c"))  # no retries: stays failed
    assert lines(tmp_path / "a") == []
    jobs.start(app)
    try:
        assert wait_until(lambda: lines(tmp_path / "b") == ["failed", "ok"])
        assert lines(tmp_path / "a") == ["hello"]
        time.sleep(0.3)
        assert lines(tmp_path / "c") == ["failed"]
    finally:
        jobs.stop(app)


def test_embedded_periodic_tasks_run_at_start_and_when_woken(app, tmp_path):
    runs = []
    jobs.periodic(app, "test.count", lambda: runs.append(time.monotonic()), interval=3600)
    jobs.start(app)
    try:
        assert wait_until(lambda: len(runs) == 1)  # at start-up: work left from before a restart
        with app.app_context():
            jobs.wake("test.count")
        assert wait_until(lambda: len(runs) == 2, timeout=3)
    finally:
        jobs.stop(app)


def test_jobs_must_be_importable_functions(app):
    with app.app_context(), pytest.raises(jobs.JobsError):
        jobs.enqueue(lambda: None)


def test_a_worker_needs_redis(app):
    result = app.test_cli_runner().invoke(args=["worker", "--burst"])
    assert result.exit_code == 1 and "INTEGRATION_REDIS_URL" in result.output


# --- RQ on Redis --------------------------------------------------------------------------

@pytest.fixture
def redis_db():
    conn = Redis.from_url(REDIS_URL)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture
def rq_app(app_config, redis_db):
    app = create_app({**app_config, "JOBS_REDIS_URL": REDIS_URL, "JOBS_RETRY_INTERVALS": (1,),
                      "ALLOWED_WEBHOOK_HOSTS": ("127.0.0.1",)})
    yield app
    jobs.stop(app)
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            for table in reversed(db.metadata.sorted_tables):
                conn.execute(table.delete())
        db.engine.dispose()


class Worker:
    """``flask --app app worker`` in its own process, on the test database and Redis db."""

    def __init__(self, database_url: str, *args: str):
        env = {**os.environ, "INTEGRATION_ENV": "production", "INTEGRATION_SECRET_KEY": "w" * 64,
               "INTEGRATION_ENCRYPTION_KEYS": KEYS[0], "INTEGRATION_DATABASE_URL": database_url,
               "INTEGRATION_REDIS_URL": REDIS_URL, "INTEGRATION_ALLOWED_WEBHOOK_HOSTS": "127.0.0.1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker", *args], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[0]


def test_rq_workers_run_jobs_and_rq_retries_them(rq_app, migrated, redis_db, tmp_path):
    with rq_app.app_context():
        jobs.enqueue(write_line, str(tmp_path / "a"), "from redis")
        jobs.enqueue(fails_once, str(tmp_path / "b"), retries=2)
    assert redis_db.llen("rq:queue:integration") == 2  # nothing ran in the web process
    worker = Worker(migrated)
    try:
        assert wait_until(lambda: lines(tmp_path / "b") == ["failed", "ok"], timeout=30), worker.stop()
        assert lines(tmp_path / "a") == ["from", "redis"]
    finally:
        worker.stop()


def test_rq_worker_delivers_the_webhook_of_a_committed_event(rq_app, migrated, redis_db):
    receiver = Receiver()
    worker = Worker(migrated)
    try:
        with rq_app.app_context():
            _, secret = service.add(receiver.url)
            link = StoreLink(consumer_key="k" * 32, consumer_secret="s" * 32, base_url="https://shop.example.com/",
                             store_host="shop.example.com", status="linked")
            db.session.add(link)
            db.session.flush()
            events.record(db.session, events.STORE_LINKED, link)
            db.session.commit()  # wakes the dispatcher: a job in Redis, run by the worker
        assert receiver.wait_for(1, timeout=30), worker.stop()
        got = receiver.received[0]
        verify_signature(secret, got.headers[HEADER], got.body)
        assert got.event["type"] == "store.linked"
    finally:
        worker.stop()
        receiver.stop()


def test_rq_periodic_tasks_run_once_per_interval_however_many_workers(rq_app, redis_db):
    """Two workers' clocks ticking side by side enqueue a task once per interval, and a task
    already queued is not queued again."""
    from integration.jobs.redis_queue import RedisEngine

    jobs.periodic(rq_app, "test.tick", lambda: None, interval=1.0)
    state = rq_app.extensions["jobs"]
    workers = [RedisEngine(state), RedisEngine(state)]
    started = time.monotonic()
    enqueued = Counter()
    # Until each task ran on three intervals (a loaded machine may take longer than 2 s for that).
    while min(enqueued["test.tick"], enqueued["webhooks.dispatch"]) < 3 and time.monotonic() - started < 20:
        for engine in workers:
            engine.tick()
            for name in ("test.tick", "webhooks.dispatch"):
                if redis_db.delete(f"integration:jobs:queued:{name}"):  # as if a worker took it at once
                    enqueued[name] += 1
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    for name in ("test.tick", "webhooks.dispatch"):  # at most once per second each, plus the first tick
        assert 3 <= enqueued[name] <= math.floor(elapsed) + 2, (name, enqueued, elapsed)
    redis_db.flushdb()
    workers[0].wake("test.tick")
    workers[1].wake("test.tick")
    assert workers[0].queue.count == 1  # coalesced
    for engine in workers:
        engine.stop()
