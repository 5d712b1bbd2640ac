"""Change feeds from a linked sandbox store: created, updated and deleted records become events
exactly when they change; one sync per feed at a time; a dead worker's lease expires and the
next run resumes from the database cursor; a failing store backs off; a revoked one stops."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import requests
from sqlalchemy import func, select

from integration import create_app, events, jobs
from integration.extensions import db
from integration.feeds import schedule, sync
from integration.feeds.models import FeedRecord, FeedState, Job
from integration.magento import errors
from integration.models import StoreLink, utcnow
from integration.webhooks import dispatch, service

from .conftest import KEYS, redis_database
from .receiver import Receiver
from .servers import ROOT

REDIS_URL = os.environ.get("INTEGRATION_TEST_FEEDS_REDIS_URL", "redis://127.0.0.1:6379/12")
ENTITIES = ("products", "orders", "customers")


@pytest.fixture
def app_config(app_config):
    return {**app_config, "ALLOWED_WEBHOOK_HOSTS": ("127.0.0.1",), "SYNC_ENTITIES": ENTITIES}


def run_sync(app, link_id, *args):
    return app.test_cli_runner().invoke(args=["sync", str(link_id), *args])


def types(app) -> Counter:
    with app.app_context():
        return Counter(db.session.scalars(select(events.Event.type)))


def payloads(app, type_: str) -> list[dict]:
    with app.app_context():
        return [json.loads(p) for p in db.session.scalars(
            select(events.Event.payload).where(events.Event.type == type_).order_by(events.Event.id))]


def wait_until(predicate, timeout=15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- the feed ---------------------------------------------------------------------------------

def test_first_sync_emits_the_catalogue_then_only_what_changed(app, linked, sandbox):
    link_id, _ = linked
    result = run_sync(app, link_id)
    assert result.exit_code == 0, result.output
    got = types(app)
    assert got["product.created"] == 60 and got["order.created"] == 6 and got["customer.created"] == 6
    created = payloads(app, "product.created")
    assert {p["record_id"] for p in created} == {str(p["id"]) for p in sandbox.state.products.values()}
    assert created[0]["record"]["sku"] == "SB-00001" and created[0]["store"]["id"] == link_id

    # An unchanged re-poll emits nothing and costs one request per entity.
    calls = sandbox.state.counters.rest_calls
    assert run_sync(app, link_id).exit_code == 0
    assert types(app) == got
    assert sandbox.state.counters.rest_calls - calls == len(ENTITIES)

    # One edit in the sandbox: exactly one updated event, carrying the new record.
    answer = requests.put(f"{sandbox.url}/sandbox/products/SB-00007", json={"price": 1234.5}, timeout=5)
    assert answer.status_code == 200
    assert run_sync(app, link_id, "products").exit_code == 0
    assert run_sync(app, link_id, "products").exit_code == 0
    updated = payloads(app, "product.updated")
    assert len(updated) == 1 and updated[0]["record"]["price"] == 1234.5 and updated[0]["record_id"] == "7"

    # An order placed and one changed.
    requests.post(f"{sandbox.url}/sandbox/orders", json={"sku": "SB-00003"}, timeout=5).raise_for_status()
    requests.put(f"{sandbox.url}/sandbox/orders/2", json={"status": "complete"}, timeout=5).raise_for_status()
    assert run_sync(app, link_id, "orders").exit_code == 0
    assert types(app)["order.created"] == 7 and [p["record"]["status"] for p in payloads(app, "order.updated")] \
        == ["complete"]


def test_the_store_page_shows_what_each_feed_read_and_its_cursor_moving_to_the_newest_change(app, linked, sandbox):
    link_id, _ = linked
    assert run_sync(app, link_id, "products").exit_code == 0
    client = app.test_client()
    login(client, "owner@example.com")

    def products_feed() -> dict:  # the products row of the page's feeds table, by column
        page = client.get(f"/stores/{link_id}").get_data(as_text=True)
        row = next(row for row in page.split("<tr>") if row.startswith("<td>products</td>"))
        cells = [cell.split("<td>", 1)[-1].strip() for cell in row.split("</td>")]
        return {"cursor": cells[2], "records seen": cells[3]}

    assert products_feed()["records seen"] == "60"  # the whole catalogue, once
    requests.put(f"{sandbox.url}/sandbox/products/SB-00007", json={"price": 99.5}, timeout=5).raise_for_status()
    assert run_sync(app, link_id, "products").exit_code == 0
    assert f"{sandbox.state.products['SB-00007']['updated_at']} UTC" in products_feed()["cursor"]


def test_a_record_stamped_again_without_changing_emits_nothing(app, linked, sandbox):
    link_id, _ = linked
    assert run_sync(app, link_id, "products").exit_code == 0
    before = types(app)
    same = {"price": sandbox.state.products["SB-00005"]["price"]}  # a save that changes nothing (a re-index)
    requests.put(f"{sandbox.url}/sandbox/products/SB-00005", json=same, timeout=5).raise_for_status()
    seen = sandbox.state.products["SB-00005"]["updated_at"]
    assert run_sync(app, link_id, "products").exit_code == 0
    assert types(app) == before
    with app.app_context():  # it was read: its row keeps the newer stamp
        row = db.session.scalar(select(FeedRecord).where(FeedRecord.store_link_id == link_id,
                                                         FeedRecord.record_id == "5"))
        assert row.updated_at.strftime("%Y-%m-%d %H:%M:%S") == seen


def test_a_change_stamped_earlier_than_the_one_sent_never_moves_the_record_back(app, linked, sandbox):
    link_id, _ = linked
    run_sync(app, link_id, "products")
    requests.put(f"{sandbox.url}/sandbox/products/SB-00005", json={"name": "New name"}, timeout=5)
    run_sync(app, link_id, "products")
    with sandbox.state.lock:  # a replica lagging behind serves the version before the edit
        product = sandbox.state.products["SB-00005"]
        product["name"], product["updated_at"] = "Old name", "2024-01-01 03:05:00"
    assert run_sync(app, link_id, "products", "--full").exit_code == 0
    assert [p["record"]["name"] for p in payloads(app, "product.updated")] == ["New name"]


def test_a_full_pass_over_records_with_long_ids_emits_only_what_changed(app, linked, sandbox):
    """A pass by page numbers looks up the fingerprints of the records up to the highest id it
    keeps (those above it have none yet): ids too long to compare as numbers are looked up whatever
    their value, and none is sent twice."""
    link_id, _ = linked
    for product, new_id in zip(list(sandbox.state.products.values())[-3:], (10**17 + 1, 10**18 + 1, 10**22 + 1)):
        product["id"] = new_id  # 18, 19 and 23 digits, still last in id order
    assert run_sync(app, link_id, "products").exit_code == 0
    before = types(app)
    requests.put(f"{sandbox.url}/sandbox/products/SB-00060", json={"price": 7}, timeout=5).raise_for_status()
    assert run_sync(app, link_id, "products", "--full").exit_code == 0
    assert types(app) - before == Counter({"product.updated": 1})
    assert payloads(app, "product.updated")[0]["record_id"] == str(10**22 + 1)


def test_a_deleted_product_becomes_one_deleted_event(app, linked, sandbox):
    link_id, _ = linked
    run_sync(app, link_id, "products")
    assert requests.delete(f"{sandbox.url}/sandbox/products/SB-00010", timeout=5).status_code == 200
    assert run_sync(app, link_id, "products").exit_code == 0
    assert types(app)["product.deleted"] == 0  # reconciliation is hourly by default...
    assert run_sync(app, link_id, "products", "--full").exit_code == 0  # ...or asked for
    assert run_sync(app, link_id, "products", "--full").exit_code == 0
    deleted = payloads(app, "product.deleted")
    assert [(p["record_id"], p.get("record")) for p in deleted] == [("10", None)]
    assert types(app)["product.updated"] == 0  # a full pass over unchanged records emits nothing


def test_reconciliation_reads_ids_only(sandbox, linked, app):
    link_id, _ = linked
    with app.app_context():
        from integration import stores

        link = db.session.get(StoreLink, link_id)
        with stores.contact(link, "test") as client:
            pages = list(sync.remote_ids(client, sync.ENTITIES["products"], page_size=25))
            answer = client.get("products", params=[("searchCriteria[pageSize]", "2"),
                                                    ("fields", "items[id],total_count")])
    assert [len(p) for p in pages] == [25, 25, 10]
    assert answer == {"items": [{"id": 1}, {"id": 2}], "total_count": 60}


def test_reconciliation_refuses_ids_that_are_not_numbers_with_the_stores_error():
    """Ids are paged by ``id > last``: an answer with an id that is no number is the store's fault, said so."""
    class Store:
        def get(self, path, params=()):
            return {"items": [{"id": 1}, {"id": "1; DROP"}], "total_count": 2}

    with pytest.raises(errors.BadStoreResponse, match="not a number"):
        list(sync.remote_ids(Store(), sync.ENTITIES["products"], page_size=25))


def test_a_large_record_is_sent_as_a_reference(app, app_config, linked, sandbox):
    link_id, _ = linked
    app.config["SYNC_RECORD_MAX_KB"] = 1
    sandbox.state.products["SB-00002"]["custom_attributes"][0]["value"] = "x" * 5000
    run_sync(app, link_id, "products")
    by_id = {p["record_id"]: p for p in payloads(app, "product.created")}
    assert "record" not in by_id["2"] and by_id["2"]["record_ref"]["rest_path"] == "products/SB-00002"
    assert by_id["3"]["record"]["sku"] == "SB-00003"


def test_record_events_reach_webhook_endpoints(app, linked, sandbox):
    link_id, _ = linked
    receiver = Receiver()
    try:
        with app.app_context():
            service.add(receiver.url, ["product.updated"])
        run_sync(app, link_id, "products")
        requests.put(f"{sandbox.url}/sandbox/products/SB-00001", json={"price": 9.5}, timeout=5)
        run_sync(app, link_id, "products")
        jobs.call_in_app(app, dispatch.run)
        assert [r.event["type"] for r in receiver.received] == ["product.updated"]
        assert receiver.received[0].event["record"]["price"] == 9.5
    finally:
        receiver.stop()


def test_record_events_wake_the_dispatcher_only_when_they_make_deliveries(app, linked):
    """A page of events no endpoint subscribed to leaves the dispatcher asleep (a wake is a
    round trip to Redis at each commit, for nothing to send)."""
    link_id, _ = linked
    change = events.RecordChange("product.created", "products", "1", {"id": 1})
    with app.app_context():
        store = events.store_summary(db.session.get(StoreLink, link_id))
        endpoint, _ = service.add("http://127.0.0.1:9/in", ["product.updated"])
        events.record_many(db.session, store, [change], endpoints=[endpoint])
        assert events._WAKE not in db.session.info
        db.session.rollback()
        endpoint, _ = service.add("http://127.0.0.1:9/all", ["product.created"])
        events.record_many(db.session, store, [change], endpoints=[endpoint])
        assert db.session.info[events._WAKE]
        db.session.rollback()


def test_a_store_without_msi_feeds_stock_from_its_stock_items(app, linked, sandbox):
    link_id, _ = linked
    assert not sandbox.state.msi
    result = run_sync(app, link_id, "stock")
    assert result.exit_code == 0, result.output
    with app.app_context():
        feed = db.session.scalar(select(FeedState).where(FeedState.entity == "stock"))
        assert "no MSI" in feed.note and "stock items" in feed.note
    assert types(app)["stock.updated"] == 60  # the first pass: every product's stock item
    requests.put(f"{sandbox.url}/sandbox/stock/SB-00007", json={"qty": 0}, timeout=5).raise_for_status()
    assert run_sync(app, link_id, "stock").exit_code == 0
    assert run_sync(app, link_id, "stock").exit_code == 0  # unchanged: nothing more
    stock = payloads(app, "stock.updated")
    assert len(stock) == 61
    assert stock[-1]["record_id"] == "7@1" and stock[-1]["record"]["qty"] == 0
    assert stock[-1]["record"]["is_in_stock"] is False


# --- one sync at a time, and resuming after a dead worker --------------------------------------

def test_two_workers_racing_on_one_feed_one_runs(app, linked, sandbox):
    link_id, _ = linked
    sandbox.state.latency = 0.2
    app.config["SYNC_PAGE_SIZE"] = 20
    results = []
    barrier = threading.Barrier(2)

    def worker():
        barrier.wait()
        results.append(jobs.call_in_app(app, lambda: sync.sync(link_id, "products").state))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["cancelled", "finished"]
    assert types(app)["product.created"] == 60


def test_a_held_lease_is_not_claimed_until_it_expires(app, linked):
    link_id, _ = linked
    app.config["SYNC_LEASE"] = 0.5
    with app.app_context():
        feed = sync.feed_for(link_id, "products")
        assert sync.claim(feed.id, "worker-a")
        assert not sync.claim(feed.id, "worker-b")
        time.sleep(0.6)
        assert sync.claim(feed.id, "worker-b")


def worker_env(database_url: str, **extra) -> dict:
    return {**os.environ, "INTEGRATION_ENV": "production", "INTEGRATION_SECRET_KEY": "w" * 64,
            "INTEGRATION_ENCRYPTION_KEYS": KEYS[0], "INTEGRATION_DATABASE_URL": database_url,
            "INTEGRATION_ALLOWED_STORE_HOSTS": "127.0.0.1", "INTEGRATION_ALLOWED_WEBHOOK_HOSTS": "127.0.0.1",
            **extra}


def test_a_worker_killed_mid_sync_loses_no_change(app, migrated, linked, sandbox):
    link_id, _ = linked
    sandbox.state.latency = 0.3
    proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "sync", str(link_id), "products"],
                            cwd=ROOT, env=worker_env(migrated, INTEGRATION_SYNC_LEASE="3", INTEGRATION_SYNC_PAGE_SIZE="5",
                                           INTEGRATION_STORE_CONCURRENCY="2"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def emitted() -> int:
        with app.app_context():
            return db.session.scalar(select(func.count()).select_from(FeedRecord)) or 0

    try:
        assert wait_until(lambda: emitted() >= 20, timeout=30), proc.communicate(timeout=5)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    sandbox.state.latency = 0
    partial = emitted()
    assert 20 <= partial < 60  # killed mid-pass
    # Changed while nobody syncs: one already sent, one not yet.
    requests.put(f"{sandbox.url}/sandbox/products/SB-00001", json={"name": "After the crash"}, timeout=5)
    requests.put(f"{sandbox.url}/sandbox/products/SB-00060", json={"name": "Late one"}, timeout=5)
    app.config.update(SYNC_LEASE=3, SYNC_PAGE_SIZE=5, SYNC_ENTITIES=("products",))
    with app.app_context():
        db.session.execute(FeedState.__table__.update().values(next_run_at=None))
        db.session.commit()
        assert schedule.tick() == 0  # the dead worker's lease still holds
        lease = db.session.scalar(select(FeedState.lease_expires_at).where(FeedState.entity == "products"))
    time.sleep(max(0.0, (lease - utcnow()).total_seconds()) + 0.2)
    with app.app_context():
        assert schedule.tick() == 1
        queued = db.session.scalars(select(Job.id).where(Job.state == Job.QUEUED, Job.entity == "products")).all()
        dead = db.session.scalar(select(Job).where(Job.id != queued[0]))
        assert dead.state == Job.FAILED and "stopped" in dead.error  # the killed CLI sync's job
    assert len(queued) == 1
    calls = sandbox.state.counters.rest_calls
    jobs.call_in_app(app, sync.run_job, (queued[0],))
    # The first pass went on from its last committed page, not from the first (12 pages of 5).
    assert sandbox.state.counters.rest_calls - calls == (60 - partial) // 5
    with app.app_context():
        job = db.session.get(Job, queued[0])
        assert (job.state, job.done, job.total) == (Job.FINISHED, 60, 60)  # the pass's bar, not this job's part
    # Product 1 was edited after the pass had read it: the next pass (from the cursor, set back
    # to the first pass's start) sends it.
    with app.app_context():
        [again] = schedule.sync_soon(link_id, ["products"])
    jobs.call_in_app(app, sync.run_job, (again.id,))
    created = payloads(app, "product.created")
    ids = [p["record_id"] for p in created]
    assert sorted(ids, key=int) == [str(i) for i in range(1, 61)]  # every product once, none lost
    by_record = {p["record_id"]: p["record"]["name"] for p in created + payloads(app, "product.updated")}
    assert by_record["1"] == "After the crash" and by_record["60"] == "Late one"
    assert len({p["id"] for p in created}) == 60


def test_a_first_pass_goes_on_across_jobs_a_slice_of_pages_each(app, linked, sandbox):
    """A queued sync reads pages for SYNC_SLICE seconds, then the same job is queued again and
    its next run goes on from the next page: no run nears the runner's time limit, no page is
    read twice, and the job's progress bar is the whole pass's."""
    link_id, _ = linked
    app.config.update(SYNC_PAGE_SIZE=5, STORE_CONCURRENCY=2, SYNC_SLICE=0)  # a page a run: 12 runs
    with app.app_context():
        [job] = schedule.sync_soon(link_id, ["products"])
        job_id = job.id
    calls = sandbox.state.counters.rest_calls
    seen = []
    while not seen or seen[-1][0] == Job.QUEUED:
        assert len(seen) < 20, seen
        jobs.call_in_app(app, sync.run_job, (job_id,))
        with app.app_context():
            job = db.session.get(Job, job_id)
            seen.append((job.state, job.done, job.total))
        if len(seen) == 2:  # between two runs the feed stays with the job: no other sync takes it
            other = jobs.call_in_app(app, lambda: (lambda j: (j.state, j.error))(sync.sync(link_id, "products")))
            assert other == (Job.CANCELLED, "another sync of this feed is running")
    assert seen == [(Job.QUEUED, n, 60) for n in range(5, 60, 5)] + [(Job.FINISHED, 60, 60)]
    assert sandbox.state.counters.rest_calls - calls == 12  # every page once
    ids = [p["record_id"] for p in payloads(app, "product.created")]
    assert sorted(ids, key=int) == [str(n) for n in range(1, 61)]
    with app.app_context():
        feed = db.session.scalar(select(FeedState).where(FeedState.entity == "products"))
        assert feed.cursor is not None and feed.lease_owner is None and feed.pass_offset is None


def test_the_embedded_runner_runs_a_pass_cut_into_slices_to_the_end(app, linked, sandbox, runner):
    link_id, _ = linked
    app.config.update(SYNC_PAGE_SIZE=5, STORE_CONCURRENCY=2, SYNC_SLICE=0)
    with app.app_context():
        [job] = schedule.sync_soon(link_id, ["products"])

    def state():
        with app.app_context():
            found = db.session.get(Job, job.id)
            return found.state, found.done, found.total

    assert wait_until(lambda: state()[0] not in (Job.QUEUED, Job.RUNNING), timeout=60), state()
    assert state() == (Job.FINISHED, 60, 60)
    assert sorted(int(p["record_id"]) for p in payloads(app, "product.created")) == list(range(1, 61))


def test_a_cancel_between_two_runs_of_a_pass_frees_the_feed_and_the_next_job_goes_on(app, linked, sandbox):
    link_id, _ = linked
    app.config.update(SYNC_PAGE_SIZE=5, STORE_CONCURRENCY=1, SYNC_SLICE=0)
    with app.app_context():
        [job] = schedule.sync_soon(link_id, ["products"])
    for _ in range(3):
        jobs.call_in_app(app, sync.run_job, (job.id,))
    with app.app_context():
        assert schedule.cancel(job.id).state == Job.CANCELLED
    calls = sandbox.state.counters.rest_calls
    app.config["SYNC_SLICE"] = 60
    result = run_sync(app, link_id, "products")  # at once, not after the handed-over lease expires
    assert result.exit_code == 0, result.output
    assert sandbox.state.counters.rest_calls - calls == 9  # pages 4 to 12
    assert "60 read" in result.output and types(app)["product.created"] == 60


# --- failures ---------------------------------------------------------------------------------

def test_a_store_answering_500_gets_few_attempts_and_one_check_failed_then_recovers(app, linked, sandbox):
    link_id, _ = linked
    app.config.update(SYNC_ENTITIES=("products", "orders"), SYNC_INTERVAL=0.1, SYNC_TICK=0.05,
                      SYNC_BACKOFF_BASE=0.4, SYNC_BACKOFF_CAP=60)
    jobs.periodic(app, schedule.TASK, schedule.tick, interval=0.05)
    sandbox.state.failures.append(["/", 500, 100_000])
    jobs.start(app)
    try:
        time.sleep(3.0)  # without back-off, 0.1 s passes: ~30 per entity
        attempts = 100_000 - sandbox.state.failures[0][2]
        assert 2 <= attempts <= 8, attempts
        assert types(app)["store.check_failed"] == 1
        sandbox.state.failures.clear()  # the store is back
        assert wait_until(lambda: types(app)["product.created"] == 60, timeout=15)
    finally:
        jobs.stop(app)
    with app.app_context():
        assert db.session.scalar(select(func.max(FeedState.failures))) == 0
        link = db.session.get(StoreLink, link_id)
        assert link.status == StoreLink.LINKED and link.last_error is None


def test_a_resource_the_integration_lacks_stops_that_feed_only(app, linked, sandbox):
    """Products granted, Sales not: the orders feed says what to tick; products and the store carry on."""
    link_id, integration = linked
    requests.put(f"{sandbox.url}/sandbox/integrations/{integration.id}/resources",
                 json=["Magento_Backend::store", "Magento_Catalog::products"], timeout=5).raise_for_status()
    with app.app_context():
        orders = sync.sync(link_id, "orders")
        assert orders.state == Job.FAILED and "isn't authorized" in orders.error and "Reauthorize" in orders.error
        products = sync.sync(link_id, "products")
        assert products.state == Job.FINISHED, products.error  # not backed off with the store
        feeds = {f.entity: f for f in db.session.scalars(select(FeedState).where(FeedState.store_link_id == link_id))}
        assert "isn't authorized" in feeds["orders"].last_error and feeds["orders"].next_run_at > utcnow()
        assert feeds["products"].last_error is None and feeds["products"].backoff_until is None
        link = db.session.get(StoreLink, link_id)
        assert link.status == StoreLink.LINKED and link.last_error is None
    assert types(app)["product.created"] == 60 and types(app)["store.check_failed"] == 0


def test_a_revoked_store_stops_its_feeds(app, linked, sandbox):
    link_id, integration = linked
    run_sync(app, link_id, "products")
    sandbox.state.integrations.pop(integration.id)  # the integration deleted in Magento
    result = run_sync(app, link_id, "products")
    assert result.exit_code == 1 and "failed" in result.output
    assert types(app)["store.revoked"] == 1
    with app.app_context():
        assert db.session.get(StoreLink, link_id).status == StoreLink.REVOKED
        db.session.execute(FeedState.__table__.update().values(next_run_at=None))
        db.session.commit()
        assert schedule.tick() == 0
    calls = sandbox.state.counters.rest_calls
    result = run_sync(app, link_id, "products")
    assert "not linked" in result.output and sandbox.state.counters.rest_calls == calls


# --- jobs -------------------------------------------------------------------------------------

def test_jobs_list_cancel_retry(app, linked, sandbox):
    link_id, _ = linked
    runner = app.test_cli_runner()
    out = runner.invoke(args=["sync", str(link_id), "products", "--background"]).output
    job_id = int(out.split()[2].rstrip(":"))
    assert f"{job_id}\tqueued" in runner.invoke(args=["jobs", "list"]).output
    assert "cancelled" in runner.invoke(args=["jobs", "cancel", str(job_id)]).output
    with app.app_context():
        sync.run_job(job_id)  # a cancelled job is not run
    assert types(app)["product.created"] == 0
    bad = runner.invoke(args=["jobs", "cancel", str(job_id)])
    assert bad.exit_code == 1 and "only queued or running" in bad.output
    retried = runner.invoke(args=["jobs", "retry", str(job_id)])
    new_id = int(retried.output.split()[2])
    with app.app_context():
        sync.run_job(new_id)
    assert types(app)["product.created"] == 60
    listing = runner.invoke(args=["jobs", "list", "--state", "finished"]).output
    assert f"{new_id}\tfinished" in listing and "+60" in listing
    assert runner.invoke(args=["jobs", "retry", str(new_id)]).exit_code == 1
    assert "no job" in runner.invoke(args=["jobs", "cancel", "999999"]).output


def test_a_running_job_stops_after_its_current_page_when_cancelled(app, linked, sandbox):
    link_id, _ = linked
    app.config.update(SYNC_PAGE_SIZE=5, STORE_CONCURRENCY=1)  # a page at a time: 12 of them, 3 s
    sandbox.state.latency = 0.25
    with app.app_context():
        job = Job(kind="sync", store_link_id=link_id, entity="products")
        db.session.add(job)
        db.session.commit()
        job_id = job.id
    thread = threading.Thread(target=jobs.call_in_app, args=(app, sync.run_job, (job_id,)))
    thread.start()
    assert wait_until(lambda: types(app)["product.created"] >= 10)
    with app.app_context():
        schedule.cancel(job_id)
    thread.join(timeout=30)
    with app.app_context():
        job = db.session.get(Job, job_id)
        assert job.state == Job.CANCELLED and job.done < 60
    assert types(app)["product.created"] < 60


# --- on RQ ------------------------------------------------------------------------------------

@pytest.fixture
def redis_db():
    with redis_database(REDIS_URL) as conn:
        yield conn


def test_rq_worker_runs_the_feed(app, app_config, migrated, linked, sandbox, redis_db):
    link_id, _ = linked
    rq_app = create_app({**app_config, "JOBS_REDIS_URL": REDIS_URL})
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                              env=worker_env(migrated, INTEGRATION_REDIS_URL=REDIS_URL,
                                             INTEGRATION_SYNC_INTERVAL="3600"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The workers' tick queues the first sync of every feed.
        assert wait_until(lambda: types(rq_app)["product.created"] == 60, timeout=90)  # a worker starting under load
        requests.put(f"{sandbox.url}/sandbox/products/SB-00002", json={"price": 3.25}, timeout=5)
        with rq_app.app_context():
            schedule.sync_soon(link_id, ["products"])
        assert wait_until(lambda: types(rq_app)["product.updated"] == 1, timeout=30)
        with rq_app.app_context():
            states = Counter(db.session.scalars(select(Job.state)))
        assert states[Job.FINISHED] >= 4 and not states[Job.FAILED]
    finally:
        worker.terminate()
        out = worker.communicate(timeout=20)[0]
        jobs.stop(rq_app)
        with rq_app.app_context():
            db.engine.dispose()
    assert types(app)["product.created"] == 60, out[-2000:]


def test_a_queued_job_redis_lost_is_queued_again_and_one_it_holds_is_left_alone(app, app_config, linked, redis_db):
    link_id, _ = linked
    rq_app = create_app({**app_config, "JOBS_REDIS_URL": REDIS_URL, "JOBS_REQUEUE_AFTER": 0})
    queue = rq_app.extensions["jobs"].runner().queue
    try:
        with rq_app.app_context():
            [job] = schedule.sync_soon(link_id, ["products"])
            key = job.queue_key
            schedule.tick()
            assert db.session.get(Job, job.id).queue_key == key and queue.job_ids.count(key) == 1  # held: left alone
        redis_db.flushdb()  # what a restarted Redis (which keeps nothing on disk) has
        with rq_app.app_context():
            schedule.tick()
            job = db.session.get(Job, job.id)
            assert job.state == Job.QUEUED and job.queue_key != key and queue.job_ids.count(job.queue_key) == 1
            schedule.tick()
            assert queue.job_ids.count(job.queue_key) == 1 and db.session.get(Job, job.id).queue_key == job.queue_key
    finally:
        jobs.stop(rq_app)
        with rq_app.app_context():
            db.engine.dispose()


def test_sync_now_while_redis_is_unreachable_leaves_the_jobs_queued_for_the_tick(app_config, linked):
    from .conftest import csrf_from
    from .servers import free_port

    link_id, _ = linked
    rq_app = create_app({**app_config, "JOBS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})  # nobody there
    try:
        client = rq_app.test_client()
        login(client, "owner@example.com")
        token = csrf_from(client.get(f"/stores/{link_id}").get_data(as_text=True))
        answer = client.post(f"/stores/{link_id}/sync", data={"csrf_token": token})
        assert answer.status_code == 302 and answer.headers["Location"].endswith("/jobs")
        with rq_app.app_context():
            queued = db.session.scalars(select(Job).where(Job.store_link_id == link_id)).all()
            assert {(j.entity, j.state) for j in queued} == {(e, Job.QUEUED) for e in ENTITIES}
            assert all(j.queue_key for j in queued)  # what the tick looks for in Redis once it is back
    finally:
        jobs.stop(rq_app)
        with rq_app.app_context():
            db.engine.dispose()


def test_on_rq_a_first_pass_longer_than_the_job_timeout_finishes_in_slices(app, app_config, migrated, linked,
                                                                          sandbox, redis_db):
    """RQ stops a job that runs longer than its timeout; a first pass that needs longer goes on
    in a new run of the same job every SYNC_SLICE seconds, so it finishes (here: a 5 s limit, a
    pass of about 7 s)."""
    link_id, _ = linked
    sandbox.state.latency = 0.6  # 12 pages of 5, one at a time
    rq_app = create_app({**app_config, "JOBS_REDIS_URL": REDIS_URL, "JOBS_TIMEOUT": 5})
    worker = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                              env=worker_env(migrated, INTEGRATION_REDIS_URL=REDIS_URL, INTEGRATION_SYNC_INTERVAL="3600",
                                             INTEGRATION_SYNC_ENTITIES="products", INTEGRATION_SYNC_PAGE_SIZE="5",
                                             INTEGRATION_STORE_CONCURRENCY="1", INTEGRATION_JOBS_TIMEOUT="5",
                                             INTEGRATION_SYNC_SLICE="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with rq_app.app_context():
            [job] = schedule.sync_soon(link_id, ["products"])

        def ended():
            with rq_app.app_context():
                return db.session.get(Job, job.id).finished

        assert wait_until(ended, timeout=90)
    finally:
        worker.terminate()
        out = worker.communicate(timeout=20)[0]
        jobs.stop(rq_app)
        with rq_app.app_context():
            db.engine.dispose()
    with app.app_context():
        job = db.session.get(Job, job.id)
        assert (job.state, job.done, job.total, job.error) == (Job.FINISHED, 60, 60, None), out[-2000:]
    assert sorted(int(p["record_id"]) for p in payloads(app, "product.created")) == list(range(1, 61))


def test_a_sync_whose_lease_was_taken_over_stops_without_committing_its_page(app, linked, sandbox):
    link_id, _ = linked
    app.config["SYNC_PAGE_SIZE"] = 10
    app.config["STORE_CONCURRENCY"] = 2  # batches of pages 1-3, 4-5, 6 of the 60 products
    sandbox.state.latency = 0.2
    with app.app_context():
        feed_id = sync.feed_for(link_id, "products").id
    result = []
    thread = threading.Thread(target=lambda: result.append(
        jobs.call_in_app(app, lambda: (lambda j: (j.state, j.error))(sync.sync(link_id, "products")))))
    thread.start()
    assert wait_until(lambda: types(app)["product.created"] >= 10)
    with app.app_context():  # as if our lease had expired and another worker had claimed the feed
        db.session.execute(FeedState.__table__.update().where(FeedState.id == feed_id)
                           .values(lease_owner="another-worker"))
        db.session.commit()
    thread.join(timeout=30)
    state, error = result[0]
    assert state == "failed" and "another worker" in error
    assert types(app)["product.created"] < 60
    with app.app_context():  # and it left the other worker's lease alone
        assert db.session.get(FeedState, feed_id).lease_owner == "another-worker"


def test_sandbox_control_endpoints_refuse_bad_input(sandbox):
    assert requests.put(f"{sandbox.url}/sandbox/stock/SB-00001", json={"qty": "lots"}, timeout=5).status_code == 400
    assert requests.put(f"{sandbox.url}/sandbox/stock/NOPE", json={"qty": 1}, timeout=5).status_code == 404
    assert requests.put(f"{sandbox.url}/sandbox/orders/1", json={}, timeout=5).status_code == 400
    assert requests.post(f"{sandbox.url}/sandbox/products", data="x" * (2 * 1024 * 1024), timeout=5).status_code == 413
    made = requests.post(f"{sandbox.url}/sandbox/products", json={"sku": "NEW-1", "price": 3}, timeout=5).json()
    assert made["sku"] == "NEW-1" and made["updated_at"] >= "2025"
    assert requests.post(f"{sandbox.url}/sandbox/products", json={"sku": "NEW-1"}, timeout=5).status_code == 400


def login(client, email):
    from .conftest import PASSWORD, csrf_from

    page = client.get("/auth/login").get_data(as_text=True)
    client.post("/auth/login", data={"csrf_token": csrf_from(page), "email": email, "password": PASSWORD})


def test_members_see_and_act_on_the_jobs_of_their_own_stores_only(app, linked, sandbox, admin):
    link_id, _ = linked
    with app.app_context():
        other = StoreLink(consumer_key="o" * 32, consumer_secret="s" * 32, base_url="https://other.example.com/",
                          store_host="other.example.com", status="linked", owner_id=admin)
        db.session.add(other)
        db.session.commit()
        other_id = other.id
        mine = schedule.sync_soon(link_id, ["products"])[0].id
        theirs = schedule.sync_soon(other_id, ["products"])[0].id
    client = app.test_client()
    login(client, "owner@example.com")
    listed = [j["id"] for j in client.get("/jobs.json").get_json()["jobs"]]
    assert listed == [mine]
    page = client.get("/jobs").get_data(as_text=True)
    from .conftest import csrf_from

    token = csrf_from(page)
    assert client.post(f"/jobs/{theirs}/cancel", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/stores/{other_id}/sync", data={"csrf_token": token}).status_code == 404
    assert client.post(f"/jobs/{mine}/cancel", data={}).status_code == 400  # no CSRF token
    assert client.post(f"/jobs/{mine}/cancel", data={"csrf_token": token}).status_code == 302
    with app.app_context():
        assert db.session.get(Job, mine).state == Job.CANCELLED
        assert db.session.get(Job, theirs).state == Job.QUEUED


def test_ticks_in_several_processes_queue_each_due_feed_once(app, linked):
    link_id, _ = linked
    with app.app_context():
        for n in range(2, 21):  # more stores, so the ticks overlap
            db.session.add(StoreLink(consumer_key=f"{n:032d}", consumer_secret="s" * 32, status="linked",
                                     base_url=f"https://s{n}.example.com/", store_host=f"s{n}.example.com"))
        db.session.commit()
        for link in db.session.scalars(select(StoreLink)):
            for entity in ENTITIES:
                sync.feed_for(link.id, entity)
    barrier = threading.Barrier(4)

    def ticker():
        barrier.wait()
        jobs.call_in_app(app, schedule.tick)

    threads = [threading.Thread(target=ticker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with app.app_context():
        queued = db.session.execute(select(Job.store_link_id, Job.entity)).all()
    assert len(queued) == 20 * len(ENTITIES) and len(set(queued)) == len(queued)


def test_stock_changes_on_msi_stores_become_stock_updated(app, linked, sandbox):
    link_id, _ = linked
    sandbox.state.msi = True
    assert run_sync(app, link_id, "stock").exit_code == 0
    assert types(app)["stock.updated"] == 60  # the first pass: every source item's level
    requests.put(f"{sandbox.url}/sandbox/stock/SB-00004", json={"qty": 0}, timeout=5).raise_for_status()
    assert run_sync(app, link_id, "stock").exit_code == 0
    assert run_sync(app, link_id, "stock").exit_code == 0
    stock = payloads(app, "stock.updated")
    assert len(stock) == 61 and stock[-1]["record"] == {"sku": "SB-00004", "source_code": "default", "quantity": 0,
                                                        "status": 0}


def test_stock_keyed_by_a_sku_too_long_or_odd_to_store_as_it_is_is_fed_like_any_other(app, linked, sandbox):
    """A source item's key is its SKU and source code: Magento's source codes run to 255 characters and a
    hostile store's SKUs to anything, a NUL (which PostgreSQL refuses in text) included. Such a key is
    known by its digest (events included); the events still carry the record as the store sent it."""
    from integration.sandbox import changes

    link_id, _ = linked
    sandbox.state.msi = True
    odd = ["L" * 300, "NUL\x00SKU"]
    for sku in odd:
        changes.create_product(sandbox.state, {"sku": sku})
    assert run_sync(app, link_id, "stock").exit_code == 0
    first = payloads(app, "stock.updated")
    assert {p["record"]["sku"] for p in first} >= set(odd) and len(first) == 62
    changes.set_stock(sandbox.state, odd[0], 3)
    assert run_sync(app, link_id, "stock").exit_code == 0
    assert run_sync(app, link_id, "stock").exit_code == 0
    stock = payloads(app, "stock.updated")
    assert len(stock) == 63 and stock[-1]["record"]["sku"] == odd[0] and stock[-1]["record"]["quantity"] == 3
    assert stock[-1]["record_id"] == "sha256:" + hashlib.sha256(f"{odd[0]}@default".encode()).hexdigest()


def test_churn_changes_the_catalogue_on_its_own(sandbox):
    from integration.sandbox.changes import Churn

    before = {sku: dict(p) for sku, p in sandbox.state.products.items()}
    orders = len(sandbox.state.orders)
    churn = Churn(sandbox.state, per_minute=1200, seed=1).start()
    try:
        assert wait_until(lambda: sum(1 for sku, p in sandbox.state.products.items() if before.get(sku) != p)
                          + len(sandbox.state.orders) - orders >= 5, timeout=5)
    finally:
        churn.stop()


def test_a_deletion_during_the_first_pass_loses_no_other_record(app, linked, sandbox):
    """Pages are read by number in parallel: a deletion moves every later record one place
    back, and one of them past a page already read. The id sweep that follows finds it."""
    link_id, _ = linked
    app.config.update(SYNC_PAGE_SIZE=5, STORE_CONCURRENCY=1)
    sandbox.state.latency = 0.15
    thread = threading.Thread(target=lambda: jobs.call_in_app(app, sync.sync, (link_id, "products")))
    thread.start()
    assert wait_until(lambda: types(app)["product.created"] >= 20, timeout=30)
    requests.delete(f"{sandbox.url}/sandbox/products/SB-00003", timeout=5).raise_for_status()
    thread.join(60)
    created = {p["record_id"] for p in payloads(app, "product.created")}
    assert created >= {str(n) for n in range(1, 61) if n != 3}  # every product still there was sent
    assert [p["record_id"] for p in payloads(app, "product.deleted")] == ["3"]


class _Pages:
    """A store's search answered from memory: ``total`` records, pages failing as told."""

    def __init__(self, total: int, failing: int | None = None):
        self.total, self.failing, self.asked = total, failing, []

    def search(self, path, criteria):
        size, number = criteria.page_size, criteria.current_page
        self.asked.append(number)
        if number == self.failing:
            raise sync.errors.StoreUnreachable("could not connect to the store")
        ids = range((number - 1) * size + 1, min(number * size, self.total) + 1)
        return {"items": [{"id": i} for i in ids], "total_count": self.total}


def test_a_first_pass_writes_its_pages_a_batch_of_the_concurrency_at_a_time():
    """The pages come to the writer a batch of ``concurrency`` at a time, in order, the first
    page (which tells how many there are) with the first batch: one transaction for each batch."""
    store = _Pages(98)
    batches = [(number, [r["id"] for r in records])
               for number, last, records in sync.all_pages(store, sync.ENTITIES["products"], 5, 4)]
    assert [r for _, records in batches for r in records] == list(range(1, 99))
    assert [len(ids) for _, ids in batches] == [25, 20, 20, 20, 13]
    assert [number for number, _ in batches] == [5, 9, 13, 17, 20]  # each says the last page it holds


def test_a_store_of_one_page_is_one_batch():
    store = _Pages(4)
    assert [(number, len(records)) for number, _last, records in
            sync.all_pages(store, sync.ENTITIES["products"], 5, 4)] == [(1, 4)]


def test_a_page_that_failed_does_not_hold_back_the_pages_before_it():
    store = _Pages(100, failing=4)
    written = []
    with pytest.raises(sync.errors.StoreUnreachable):
        for _number, _last, records in sync.all_pages(store, sync.ENTITIES["products"], 5, 4):
            written += [r["id"] for r in records]
    assert written == list(range(1, 16))  # pages 1 to 3 written (2 and 3 in a batch cut short), then the failure


def test_the_first_page_is_written_when_the_second_fails():
    store = _Pages(100, failing=2)
    written = []
    with pytest.raises(sync.errors.StoreUnreachable):
        for _number, _last, records in sync.all_pages(store, sync.ENTITIES["products"], 5, 4):
            written += [r["id"] for r in records]
    assert written == list(range(1, 6))
