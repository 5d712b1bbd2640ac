"""Exports from the dashboard as jobs (the code of ``stores export``, a file downloadable by the
store's owner and admins until its retention ends), and the one per-store cap that syncs,
exports and the proxy share, counted at the store's side."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from sqlalchemy import select

from integration import create_app, jobs
from integration.extensions import db
from integration.feeds import exports, schedule, sync
from integration.feeds.models import Job
from integration.models import StoreLink, utcnow

from .apikit import bearer, make_key
from .conftest import csrf_from, redis_database
from .servers import ROOT
from .test_dashboard import login
from .test_feeds import wait_until, worker_env
from .test_feeds_redis_restart import worker_output

REDIS_URL = os.environ.get("INTEGRATION_TEST_FEEDS_NEW_REDIS_URL", "redis://127.0.0.1:6379/10")


def ask_export(client, link_id: int, **fields):
    page = client.get(f"/stores/{link_id}").get_data(as_text=True)
    data = {"csrf_token": csrf_from(page), "entity": "products", "format": "csv", "since": "", **fields}
    return client.post(f"/stores/{link_id}/export", data=data)


def run_queued_exports(app) -> list[int]:
    with app.app_context():
        queued = db.session.scalars(select(Job.id).where(Job.kind == "export", Job.state == Job.QUEUED)).all()
    for job_id in queued:
        jobs.call_in_app(app, exports.run_export_job, (job_id,))
    return queued


def test_a_dashboard_export_makes_a_csv_the_owner_downloads(app, linked, sandbox, admin):
    link_id, integration = linked
    client = app.test_client()
    login(client, "owner@example.com")
    answer = ask_export(client, link_id)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/jobs")
    [job_id] = run_queued_exports(app)
    listed = {j["id"]: j for j in client.get("/jobs.json").get_json()["jobs"]}
    assert listed[job_id]["state"] == "finished" and listed[job_id]["done"] == 60
    assert listed[job_id]["total"] == 60 and listed[job_id]["downloadable"] is True
    assert f"/jobs/{job_id}/download" in client.get("/jobs").get_data(as_text=True)

    download = client.get(f"/jobs/{job_id}/download")
    assert download.status_code == 200
    assert download.headers["Content-Type"].startswith("text/csv")
    assert f'filename=store-{link_id}-products-{job_id}.csv' in download.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(download.get_data(as_text=True))))
    assert [r["sku"] for r in rows] == [f"SB-{n:05d}" for n in range(1, 61)]
    body = download.get_data(as_text=True)
    assert integration.token.token not in body and integration.token.secret not in body

    # Another member never gets it; an admin does.
    other = app.test_client()
    _member(app, "other@example.com")
    login(other, "other@example.com")
    assert other.get(f"/jobs/{job_id}/download").status_code == 404
    admin_client = app.test_client()
    login(admin_client, "admin@example.com")
    assert admin_client.get(f"/jobs/{job_id}/download").status_code == 200
    assert app.test_client().get(f"/jobs/{job_id}/download").status_code in (302, 401)  # not logged in


def _member(app, email: str) -> None:
    from .conftest import _account

    _account(app, email, "member")


def test_an_export_since_a_date_as_json_lines(app, linked, sandbox):
    link_id, _ = linked
    requests.put(f"{sandbox.url}/sandbox/products/SB-00003", json={"name": "Fresh"}, timeout=5).raise_for_status()
    client = app.test_client()
    login(client, "owner@example.com")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert ask_export(client, link_id, format="jsonl", since=today).status_code == 302
    [job_id] = run_queued_exports(app)
    download = client.get(f"/jobs/{job_id}/download")
    lines = download.get_data(as_text=True).splitlines()
    assert download.headers["Content-Type"].startswith("application/x-ndjson")
    assert len(lines) == 1 and '"name":"Fresh"' in lines[0]


def test_bad_export_requests_are_refused_with_a_message(app, linked, sandbox):
    link_id, _ = linked
    client = app.test_client()
    login(client, "owner@example.com")
    for fields, said in (({"entity": "invoices"}, "Not a valid choice"), ({"format": "xml"}, "Not a valid choice"),
                         ({"since": "last tuesday"}, "ISO date")):
        answer = ask_export(client, link_id, **fields)
        assert answer.status_code == 302
        assert said in client.get(f"/stores/{link_id}").get_data(as_text=True)
    assert client.post(f"/stores/{link_id}/export", data={"entity": "products", "format": "csv"}).status_code == 400
    with app.app_context():
        assert db.session.scalar(select(Job).where(Job.kind == "export")) is None


def test_an_export_file_is_deleted_when_its_retention_ends(app, linked, sandbox):
    link_id, _ = linked
    client = app.test_client()
    login(client, "owner@example.com")
    ask_export(client, link_id)
    [job_id] = run_queued_exports(app)
    with app.app_context():
        job = db.session.get(Job, job_id)
        path = exports.file_of(job)
        assert path and os.path.isfile(path)
        job.file_expires_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=1)
        db.session.commit()
    assert client.get(f"/jobs/{job_id}/download").status_code == 404
    with app.app_context():
        schedule.tick()
        assert not os.path.exists(path)
        assert db.session.get(Job, job_id).file_name is None


def test_an_export_of_a_failing_store_fails_with_its_error_and_can_be_retried(app, linked, sandbox):
    link_id, _ = linked
    sandbox.state.failures.append(["/products", 500, 100])
    client = app.test_client()
    login(client, "owner@example.com")
    ask_export(client, link_id)
    [job_id] = run_queued_exports(app)
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job.state == Job.FAILED and job.error and job.file_name is None
        assert os.listdir(exports.folder()) == []  # nothing half-written left behind
    sandbox.state.failures.clear()
    with app.app_context():
        again = schedule.retry(job_id)
        assert again.kind == "export" and again.export_format == "csv"
    run_queued_exports(app)
    assert client.get(f"/jobs/{again.id}/download").status_code == 200


def test_an_export_whose_worker_is_killed_is_taken_up_again_and_goes_on_with_its_file(
        app, app_config, migrated, linked, sandbox, redis_conn):
    """The export's worker dies (SIGKILL) half-way: its lease on the job expires, the tick queues
    the job again, and the next run asks only for what the file lacks. The file has every record
    once; the job's bar ends at 60 of 60."""
    link_id, _ = linked
    sandbox.state.latency = 0.3
    rq_app = create_app({**app_config, "JOBS_REDIS_URL": REDIS_URL})
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                              env=worker_env(migrated, INTEGRATION_REDIS_URL=REDIS_URL, INTEGRATION_SYNC_INTERVAL="3600",
                                             INTEGRATION_SYNC_LEASE="3", INTEGRATION_EXPORT_PAGE_SIZE="5"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # its own group: RQ's scheduler is a child process
    try:
        with rq_app.app_context():
            job_id = exports.queue_export(db.session.get(StoreLink, link_id), "products", "csv", None).id

        def done() -> int:
            with app.app_context():
                return db.session.get(Job, job_id).done

        assert wait_until(lambda: done() >= 20, timeout=60), worker_output(worker)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)  # nothing of the worker (or its scheduler) runs after this
        worker.wait(10)
        jobs.stop(rq_app)
        with rq_app.app_context():
            db.engine.dispose()
    sandbox.state.latency = 0
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job.state == Job.RUNNING and 20 <= job.done < 60
        lease_ends = job.lease_expires_at
    app.config.update(SYNC_LEASE=3, EXPORT_PAGE_SIZE=5)
    with app.app_context():
        schedule.tick()
        assert db.session.get(Job, job_id).state == Job.RUNNING  # its lease still holds
    time.sleep(max(0.0, (lease_ends - utcnow()).total_seconds()) + 0.2)
    with app.app_context():
        schedule.tick()
        assert db.session.get(Job, job_id).state == Job.QUEUED
    calls = sandbox.state.counters.rest_calls
    assert run_queued_exports(app) == [job_id]
    assert sandbox.state.counters.rest_calls - calls < 12  # not from the first page again
    client = app.test_client()
    login(client, "owner@example.com")
    listed = {j["id"]: j for j in client.get("/jobs.json").get_json()["jobs"]}
    assert (listed[job_id]["state"], listed[job_id]["done"], listed[job_id]["total"]) == ("finished", 60, 60)
    rows = list(csv.DictReader(io.StringIO(client.get(f"/jobs/{job_id}/download").get_data(as_text=True))))
    assert [r["sku"] for r in rows] == [f"SB-{n:05d}" for n in range(1, 61)]


def test_an_export_goes_on_across_runs_a_slice_of_pages_each(app, linked, sandbox):
    """Each run writes pages for SYNC_SLICE seconds and queues its job again; the next run goes
    on with the file after its last page. One job, its bar counting the whole export."""
    link_id, _ = linked
    app.config.update(SYNC_SLICE=0, EXPORT_PAGE_SIZE=5)  # a page a run
    client = app.test_client()
    login(client, "owner@example.com")
    ask_export(client, link_id, format="jsonl")
    seen = []
    while not seen or seen[-1][0] == Job.QUEUED:
        assert len(seen) < 20, seen
        [job_id] = run_queued_exports(app)
        with app.app_context():
            job = db.session.get(Job, job_id)
            seen.append((job.state, job.done, job.total))
    assert seen == [(Job.QUEUED, n, 60) for n in range(5, 60, 5)] + [(Job.FINISHED, 60, 60)]
    lines = client.get(f"/jobs/{job_id}/download").get_data(as_text=True).splitlines()
    assert [json.loads(line)["sku"] for line in lines] == [f"SB-{n:05d}" for n in range(1, 61)]


def test_an_export_that_keeps_killing_its_worker_fails_with_a_message_and_can_be_retried(app, linked, sandbox):
    link_id, _ = linked
    app.config["SYNC_LEASE"] = 0
    with app.app_context():
        job_id = exports.queue_export(db.session.get(StoreLink, link_id), "products", "jsonl", None).id
    for _ in range(schedule.TAKEOVERS + 1):
        with app.app_context():  # taken by a worker that dies at once
            assert sync.take_job(job_id, "doomed-worker") is not None
            db.session.get(Job, job_id).file_name = f"{job_id}-partial.jsonl"
            db.session.commit()
        open(os.path.join(_folder(app), f"{job_id}-partial.jsonl"), "w").close()
        time.sleep(0.01)
        with app.app_context():
            schedule.tick()
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job.state == Job.FAILED and "stopped 4 times" in job.error and "Retry" in job.error
        assert os.listdir(exports.folder()) == []  # its file went with it
        again = schedule.retry(job_id)
    run_queued_exports(app)
    with app.app_context():
        assert db.session.get(Job, again.id).state == Job.FINISHED


def _folder(app) -> str:
    with app.app_context():
        return exports.folder()


# --- one cap per store ----------------------------------------------------------------------

@pytest.fixture
def redis_conn():
    with redis_database(REDIS_URL) as conn:
        yield conn


@pytest.fixture(params=["local", "redis"])
def capped_app(request, app_config, app):
    if request.param == "local":
        yield app
        return
    from integration import create_app

    with redis_database(REDIS_URL):
        yield create_app({**app_config, "REDIS_URL": REDIS_URL})


def test_syncs_an_export_and_proxy_calls_never_exceed_the_store_cap(capped_app, linked, sandbox):
    app = capped_app
    link_id, _ = linked
    cap = 3
    app.config.update(STORE_CONCURRENCY=cap, SYNC_PAGE_SIZE=5, STORE_CAP_WAIT=0.5)
    if app.extensions["store_cap"].limit != cap:  # the cap object was built from the config at start
        app.extensions["store_cap"].limit = cap
        if hasattr(app.extensions["store_cap"], "_fallback"):
            app.extensions["store_cap"]._fallback.limit = cap
    sandbox.state.latency = 0.05
    key = make_key(app, owner=None)
    with app.app_context():
        job = exports.queue_export(db.session.get(StoreLink, link_id), "products", "csv", None)
    results: list = []

    def proxy_calls():
        client = app.test_client()
        for _ in range(8):
            results.append(client.get(f"/api/v1/stores/{link_id}/rest/default/V1/products?searchCriteria[pageSize]=5",
                                      headers=bearer(key)).status_code)

    work = [lambda e=e: jobs.call_in_app(app, sync.sync, (link_id, e)) for e in ("products", "orders", "customers")]
    work.append(lambda: jobs.call_in_app(app, exports.run_export_job, (job.id,)))
    work += [proxy_calls] * 3
    threads = [threading.Thread(target=w) for w in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    counters = sandbox.state.counters
    assert counters.max_in_flight <= cap, f"{counters.max_in_flight} requests at once at the store"
    assert counters.max_in_flight == cap  # the cap was reached, so it was what held them back
    assert set(results) <= {200, 429} and 200 in results
    with app.app_context():
        states = {j.kind + ":" + (j.entity or ""): j.state for j in db.session.scalars(select(Job))}
    assert set(states.values()) == {Job.FINISHED}, states
