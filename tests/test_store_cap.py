"""The per-store concurrency cap as its users see it: the app's cap (``store_cap.current()``, what the proxy,
syncs and exports hold) made from the settings, in process or in Redis, and the proxy's 429 when it is full.
Only the public behaviour: slots per store, waiting, giving back (also on errors), leases that outlive a
dead holder only so long, and Redis being down or hanging."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest
import redis

from integration import create_app, store_cap
from integration.extensions import db
from integration.models import StoreLink
from integration.store_cap import RedisCap, StoreBusy

from .apikit import bearer, make_key
from .conftest import redis_database

REDIS_URL = os.environ.get("INTEGRATION_TEST_CAP_REDIS_URL", "redis://127.0.0.1:6379/7")


@pytest.fixture
def redis_db():
    with redis_database(REDIS_URL) as client:
        yield client


def cap_of(app_config, **settings):
    """The cap of an app made with these settings (each app: one worker process)."""
    app = create_app({**app_config, **settings})
    with app.app_context():
        return store_cap.current()


def taken_after(cap, store_id, seconds):
    """Hold a slot of ``store_id`` in another thread, give it back after ``seconds``."""
    holding = threading.Event()

    def run():
        with cap.hold(store_id):
            holding.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    assert holding.wait(5)
    return thread


def full_then_freed(cap, wait):
    """Two slots: a third caller waits ``wait`` then is refused; slots are per store; a slot given back
    (also by a holder that failed) is taken again."""
    with cap.hold(1), cap.hold(1):
        started = time.monotonic()
        with pytest.raises(StoreBusy) as busy:
            cap.acquire(1)
        waited = time.monotonic() - started
        assert wait * 0.7 <= waited < wait + 2.0  # (generous: a loaded machine is slow to wake threads)
        assert busy.value.store_id == 1 and busy.value.retry_after == 1
        assert str(busy.value) == "store 1 has too many calls in flight"
        with cap.hold(2), cap.hold(2):  # another store has its own slots
            pass
    with pytest.raises(RuntimeError):
        with cap.hold(1):
            raise RuntimeError("the store call failed")
    with cap.hold(1), cap.hold(1):  # both slots free again
        pass


def a_waiter_gets_a_freed_slot_promptly(cap):
    """Freed soon after the waiter started, or after it has waited a while: taken within a fraction of a
    second either way (the waiter polls often at first, and never less often than every ~75 ms)."""
    for frees_after in (0.15, 1.3):
        holders = [taken_after(cap, 5, frees_after), taken_after(cap, 5, frees_after + 1.0)]
        started = time.monotonic()
        with cap.hold(5):  # waits for the first holder, up to the 3 s wait
            late = time.monotonic() - started - frees_after
        [t.join() for t in holders]
        assert -0.1 < late < 0.4, (frees_after, late)


def test_in_process_slots_per_store_waiting_and_giving_back(app_config):
    cap = cap_of(app_config, STORE_CONCURRENCY=2, STORE_CAP_WAIT=0.3)
    full_then_freed(cap, 0.3)


def test_in_process_a_waiter_gets_a_freed_slot(app_config):
    a_waiter_gets_a_freed_slot_promptly(cap_of(app_config, STORE_CONCURRENCY=2, STORE_CAP_WAIT=3))


def test_in_redis_slots_per_store_waiting_and_giving_back(app_config, redis_db):
    cap = cap_of(app_config, STORE_CONCURRENCY=2, STORE_CAP_WAIT=0.3, REDIS_URL=REDIS_URL)
    full_then_freed(cap, 0.3)


def test_in_redis_a_waiter_gets_a_freed_slot(app_config, redis_db):
    a_waiter_gets_a_freed_slot_promptly(cap_of(app_config, STORE_CONCURRENCY=2, STORE_CAP_WAIT=3,
                                               REDIS_URL=REDIS_URL))


def test_in_redis_every_worker_shares_the_slots(app_config, redis_db):
    first, second = (cap_of(app_config, STORE_CONCURRENCY=2, STORE_CAP_WAIT=0.1, REDIS_URL=REDIS_URL)
                     for _ in range(2))
    with first.hold(3), first.hold(3):
        with pytest.raises(StoreBusy):
            second.acquire(3)
        with second.hold(4):  # another store
            pass
    with second.hold(3), second.hold(3):
        with pytest.raises(StoreBusy):
            first.acquire(3)


def test_a_lease_outlives_the_longest_call_twice_plus_ten_seconds(app_config, redis_db):
    """A worker that dies holding a slot blocks that slot for 2 × STORE_TIMEOUT + 10 s, no more."""
    cap = cap_of(app_config, STORE_CONCURRENCY=1, STORE_CAP_WAIT=0.1, STORE_TIMEOUT=3, REDIS_URL=REDIS_URL)
    def redis_now():
        seconds, micros = redis_db.time()
        return seconds + micros / 1e6

    before = redis_now()
    cap.acquire(6)  # never given back: its worker died
    after = redis_now()
    expiry = redis_db.zrange("storecap:6", 0, -1, withscores=True)[0][1] / 1000
    assert before + 16 - 0.01 <= expiry <= after + 16 + 0.01, (before, expiry, after)


def test_a_dead_holders_lease_expires_and_frees_its_slot(redis_db):
    cap = RedisCap(redis.Redis.from_url(REDIS_URL), limit=2, wait=0.05, lease_seconds=0.8)
    cap.acquire(7)  # never given back
    time.sleep(0.5)
    cap.acquire(7)  # a later holder, also never given back
    with pytest.raises(StoreBusy):
        cap.acquire(7)
    time.sleep(0.45)  # the first lease has expired, the second not yet
    cap.acquire(7)
    with pytest.raises(StoreBusy):
        cap.acquire(7)


def test_with_redis_down_each_worker_counts_for_itself_and_says_so_once(app_config, caplog):
    caplog.set_level(logging.WARNING, "integration.store_cap")
    cap = cap_of(app_config, STORE_CONCURRENCY=2, STORE_CAP_WAIT=0.1, REDIS_URL="redis://127.0.0.1:9/0")
    full_then_freed(cap, 0.1)
    warnings = [r.getMessage() for r in caplog.records if r.name == "integration.store_cap"]
    assert warnings == ["Redis unreachable for the per-store cap (ConnectionError); counting per process "
                        "meanwhile"]


def test_a_hung_redis_costs_a_call_at_most_about_a_second(app_config, caplog):
    """Redis accepts the connection and never answers: the cap falls back to this process after its 1 s
    socket timeout instead of hanging the call."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        cap = cap_of(app_config, STORE_CONCURRENCY=1, STORE_CAP_WAIT=0.1,
                     REDIS_URL=f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        started = time.monotonic()
        release = cap.acquire(8)
        took = time.monotonic() - started
        assert 0.8 < took < 1.95, took
        with pytest.raises(StoreBusy):  # counted in this process meanwhile
            cap.acquire(8)
        release()
    finally:
        stop.set()
        thread.join()
        [s.close() for s in accepted]
        listener.close()


def test_the_proxy_answers_429_with_retry_after_while_full_and_frees_a_failed_call(app, app_config):
    """Through the API: a full store is a 429 with Retry-After; a call whose store fails (502) gives its slot
    back, so the next call reaches the store again rather than a 429."""
    capped = create_app({**app_config, "STORE_CONCURRENCY": 1, "STORE_CAP_WAIT": 0.1})
    with capped.app_context():
        link = StoreLink(consumer_key="u" * 32, consumer_secret="s" * 32, base_url="http://127.0.0.1:9/",
                         store_host="127.0.0.1", status="linked", access_token="t" * 32,
                         access_token_secret="x" * 32)
        db.session.add(link)
        db.session.commit()
        link_id = link.id
        cap = store_cap.current()
    key, client = make_key(capped), capped.test_client()
    path = f"/api/v1/stores/{link_id}/rest/default/V1/products"
    holder = taken_after(cap, link_id, 0.5)
    busy = client.get(path, headers=bearer(key))
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert busy.json["error"]["code"] == "store_busy"
    holder.join()
    for _ in range(2):  # a POST: never retried, so the failure is quick
        failed = client.post(path, json={"product": {"sku": "P-1"}}, headers=bearer(key))
        assert failed.status_code == 502 and failed.json["error"]["code"] == "store_unreachable"


def test_a_waiter_polls_redis_gently(app_config, redis_db):
    """A caller waiting for a full store asks Redis every few tens of milliseconds, not in a busy loop."""
    cap = cap_of(app_config, STORE_CONCURRENCY=1, STORE_CAP_WAIT=0.6, REDIS_URL=REDIS_URL)

    def script_calls():
        stats = redis_db.info("commandstats")
        return sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_eval"))

    with cap.hold(9):
        before = script_calls()
        with pytest.raises(StoreBusy):
            cap.acquire(9)
        asked = script_calls() - before
    assert 1 <= asked <= 40, asked


class _Relay:
    """A TCP relay to Redis that can be cut, as when Redis goes away in the middle of a call."""

    def __init__(self, port):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self.target, self.sockets = self.listener.getsockname()[1], port, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def cut(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_redis_going_away_during_a_call_does_not_fail_the_call(app_config, redis_db, caplog):
    """The slot was taken in Redis; Redis is gone when it is given back: the call still ends normally (the
    lease expires by itself) and the outage is logged."""
    caplog.set_level(logging.WARNING, "integration.store_cap")
    relay = _Relay(redis_db.connection_pool.connection_kwargs["port"])
    db_number = redis_db.connection_pool.connection_kwargs["db"]
    cap = cap_of(app_config, STORE_CONCURRENCY=1, STORE_CAP_WAIT=0.1,
                 REDIS_URL=f"redis://127.0.0.1:{relay.port}/{db_number}")
    with cap.hold(10):
        assert redis_db.zcard("storecap:10") == 1
        relay.cut()
    assert redis_db.zcard("storecap:10") == 1  # left to expire
    assert [r.getMessage() for r in caplog.records if r.name == "integration.store_cap"] == [
        "Redis unreachable for the per-store cap (ConnectionError); counting per process meanwhile"]
