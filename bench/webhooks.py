"""Webhook deliveries: 5,000 events to a local receiver, then the receiver down and back.

    .venv/bin/python bench/webhooks.py [--database-url URL] [--events 5000] [--down 60] [--retry-cap 5]
                                       [--redis redis://127.0.0.1:6379/9 --workers 2]

1. Baseline: the same 5,000 signed bodies POSTed by 16 plain threads (no database).
2. Ours, the default setup (the embedded runner in the app's process, SQLite unless
   --database-url; with --redis, ``flask --app app worker`` processes on RQ instead): 5,000 events committed with their outbox rows, then the runner started;
   timed until the receiver has every event id. Meanwhile the app answers GET requests on a
   real port, and their latency is compared with an idle app (the runner shares the process).
3. Outage: the receiver goes down (connections cut, port closed) while 5,000 more events are
   recorded, stays down for --down seconds, comes back on the same port; timed until every
   event arrived. --retry-cap caps the back-off so the bench recovers promptly.

The receiver counts each event id once (exactly once from its view) and reports duplicates
(at least once on the wire).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGET = 300.0  # deliveries per second


def main() -> None:
    import requests
    from cryptography.fernet import Fernet
    from sqlalchemy import func, select

    from bench._db import fresh_schema
    from integration import create_app, events, jobs
    from integration.extensions import db
    from integration.models import StoreLink
    from integration.webhook_signature import HEADER, sign
    from integration.webhooks import service
    from integration.webhooks.models import DeliveryAttempt, WebhookDelivery
    from tests.servers import Served

    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--down", type=float, default=60.0, help="seconds the receiver stays down")
    parser.add_argument("--retry-cap", type=float, default=5.0, help="back-off cap in seconds for this run")
    parser.add_argument("--redis", metavar="URL", help="run on RQ: this Redis (its database is flushed) and --workers")
    parser.add_argument("--workers", type=int, default=2, help="RQ worker processes with --redis")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/webhooks.sqlite"
    key = Fernet.generate_key().decode()
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "w" * 64,
                      "ENCRYPTION_KEYS": (key,), "ALLOWED_WEBHOOK_HOSTS": ("127.0.0.1",),
                      "WEBHOOK_RETRY_BASE": 1.0, "WEBHOOK_RETRY_CAP": args.retry_cap, "JOBS_AUTOSTART": False,
                      "JOBS_REDIS_URL": args.redis})
    engine = f"RQ, {args.workers} workers" if args.redis else "embedded runner"
    if args.redis:
        from redis import Redis

        Redis.from_url(args.redis).flushdb()
    workers: list = []

    def start_runner():
        if not args.redis:
            jobs.start(app)
            return
        import subprocess

        env = {**os.environ, "INTEGRATION_ENV": "production", "INTEGRATION_SECRET_KEY": "w" * 64,
               "INTEGRATION_ENCRYPTION_KEYS": key, "INTEGRATION_DATABASE_URL": url, "INTEGRATION_REDIS_URL": args.redis,
               "INTEGRATION_ALLOWED_WEBHOOK_HOSTS": "127.0.0.1", "INTEGRATION_WEBHOOK_RETRY_CAP": str(args.retry_cap)}
        for _ in range(args.workers):
            workers.append(subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    fresh_schema(app)
    receiver = RemoteReceiver()
    with app.app_context():
        _, secret = service.add(receiver.url + "/hooks")
        link = StoreLink(consumer_key="b" * 32, consumer_secret="s" * 32, base_url="https://shop.example.com/",
                         store_host="shop.example.com", status="linked", signature_profile="2.4.8+")
        db.session.add(link)
        db.session.commit()
        link_id = link.id
    print(f"database: {url.split(':', 1)[0]}, events: {args.events}")

    # 1. baseline: plain POSTs, same bodies and signatures, no database
    bodies = [('{"id":"evt_base%06d","type":"store.linked","store":{"id":1}}' % i).encode()
              for i in range(args.events)]
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))

    def plain(body):
        session.post(receiver.url + "/hooks", data=body, timeout=10,
                     headers={"Content-Type": "application/json", HEADER: sign([secret], body)})

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(plain, bodies))
    baseline = args.events / (time.perf_counter() - started)
    assert receiver.ids == args.events
    print(f"baseline (16 plain threads, no database): {baseline:,.0f} POSTs/s")

    # 2. ours
    def record(n):
        started = time.perf_counter()
        with app.app_context():
            for _ in range(n):
                events.record(db.session, events.STORE_CHECK_FAILED, db.session.get(StoreLink, link_id))
                db.session.commit()  # one transaction per event, as a real change would
            db.session.remove()
        return n / (time.perf_counter() - started)

    record_rate = record(args.events)
    print(f"recording: {record_rate:,.0f} events/s (each committed with its outbox row)")
    served = Served(app)
    idle = probe(served.url, 3.0)
    before = receiver.ids
    expected = before + args.events
    probes: list[float] = []
    stop_probe = threading.Event()
    prober = threading.Thread(target=lambda: probes.extend(probe(served.url, 600, stop_probe)), daemon=True)
    prober.start()
    started = time.perf_counter()
    start_runner()
    if not receiver.wait_for(expected, timeout=600):
        print(f"NOT all delivered: {receiver.ids - before} of {args.events}")
    elapsed = time.perf_counter() - started
    stop_probe.set()
    prober.join()
    rate = args.events / elapsed
    duplicates = receiver.count - receiver.ids
    print(f"ours ({engine}, {elapsed:.2f} s): {rate:,.0f} deliveries/s — {rate / TARGET:.2f}× the "
          f"{TARGET:.0f}/s target, {rate / baseline:.0%} of the baseline; duplicates seen by the receiver: "
          f"{duplicates}")
    print(f"app latency (GET, same process): idle p50 {pct(idle, 50):.1f} ms / p99 {pct(idle, 99):.1f} ms; "
          f"while delivering p50 {pct(probes, 50):.1f} ms / p99 {pct(probes, 99):.1f} ms "
          f"({pct(probes, 99) / max(pct(idle, 99), 0.001):.1f}× idle p99; {len(probes)} requests)")

    # 3. outage
    receiver.down()
    record(args.events)
    expected += args.events
    time.sleep(args.down)
    with app.app_context():
        tried = db.session.scalar(select(func.count()).select_from(DeliveryAttempt).where(DeliveryAttempt.status.is_(None)))
    receiver.up()
    back = time.perf_counter()
    ok = receiver.wait_for(expected, timeout=600)
    recovered = time.perf_counter() - back
    time.sleep(1)  # the last outcomes are recorded just after the receiver has them
    with app.app_context():
        pending = db.session.scalar(select(func.count()).select_from(WebhookDelivery)
                                    .where(WebhookDelivery.state != WebhookDelivery.DELIVERED))
    print(f"outage: receiver down {args.down:g} s ({tried:,} failed attempts, back-off cap {args.retry_cap:g} s); "
          f"after it came back every event arrived in {recovered:.1f} s: {'yes' if ok else 'NO'} "
          f"({receiver.ids - before:,} of {2 * args.events:,} ids; {pending} not marked delivered); "
          f"duplicates {receiver.count - receiver.ids - duplicates}")
    jobs.stop(app)
    for worker in workers:
        worker.terminate()
        worker.wait(20)
    served.stop()
    receiver.stop()


class RemoteReceiver:
    """The receiver in its own process (as a receiving service would be), so that its work
    does not share our interpreter; driven through a pipe."""

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve_receiver, args=(child,), daemon=True)
        self._proc.start()
        self.port = self._call("port")
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, *command):
        self._pipe.send(command)
        return self._pipe.recv()

    @property
    def ids(self) -> int:
        return self._call("ids")

    @property
    def count(self) -> int:
        return self._call("count")

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.ids < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def down(self):
        self._call("down")

    def up(self):
        self._call("up")

    def stop(self):
        self._call("stop")
        self._proc.join(5)


def _serve_receiver(pipe) -> None:
    sys.path.insert(0, ROOT)
    from tests.receiver import Receiver

    receiver = Receiver(keep=False)
    while True:
        command = pipe.recv()
        if command[0] == "port":
            pipe.send(receiver.port)
        elif command[0] == "ids":
            pipe.send(len(receiver.ids))
        elif command[0] == "count":
            pipe.send(receiver.count)
        elif command[0] == "down":
            pipe.send(receiver.down())
        elif command[0] == "up":
            pipe.send(receiver.up())
        elif command[0] == "stop":
            receiver.stop()
            pipe.send(None)
            return


def probe(base_url: str, seconds: float, stop: threading.Event | None = None) -> list[float]:
    """Latency (ms) of GET /magento/callback, ~20 a second, until ``seconds`` pass or ``stop``."""
    import requests

    out, s = [], requests.Session()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and not (stop and stop.is_set()):
        t0 = time.perf_counter()
        s.get(base_url + "/magento/callback", timeout=10)
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    return out


def pct(values: list[float], p: int) -> float:
    if not values:
        return 0.0
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


if __name__ == "__main__":
    main()
