"""Change-feed benchmark, the issue's scenario: sandbox stores with a fixed latency per request,
page size 100, ``flask --app app worker`` processes on Redis (RQ), a per-store cap.

  ideal     the same product pages fetched by (workers x cap) concurrent plain requests: no
            signing, no database (bearer tokens)
  initial   every store's product feed synced from nothing, one job per store on the RQ workers;
            its speed as a share of the ideal (target >= 70%)
  quiet     the next pass over every store, nothing changed: requests per store-entity
  changes   --changes edits spread over the stores, then a pass: requests per store-entity
            (target <= 3) and whether exactly those changes became events
  memory    one worker's peak RSS syncing one store of --products, then one of 10x as many
            (a fresh worker each; target: at most 25% more for ten times the catalogue)
  latency   the workers on their own schedule (--interval), --rate changes a minute for
            --duration seconds, each timed from the edit in the sandbox to its webhook at a
            local receiver; p95 (target <= interval + 10 s)

    .venv/bin/python bench/sync.py            # 20 stores x 5,000 products, 100 ms, 4 workers, cap 8
    .venv/bin/python bench/sync.py --quick    # 4 stores x 1,000 products, 2 workers: a minute or so

Needs PostgreSQL (--database, default INTEGRATION_BENCH_DATABASE_URL or the local bench_feeds
database; its schema is dropped and migrated afresh) and Redis (--redis, its database is
flushed). The sandbox stores run in their own processes (5 stores each), so the store side
does not share an interpreter with the workers or this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_feeds"
STORES_PER_PROCESS = 5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a small run of the same phases")
    parser.add_argument("--stores", type=int)
    parser.add_argument("--products", type=int)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--cap", type=int, default=8, help="per-store concurrency cap")
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--interval", type=float, help="sync interval for the latency phase (s)")
    parser.add_argument("--rate", type=float, default=100.0, help="changes a minute in the latency phase")
    parser.add_argument("--duration", type=float, help="seconds of changes in the latency phase")
    parser.add_argument("--skip", default="", help="phases to leave out, comma-separated (memory,latency)")
    parser.add_argument("--database", default=os.environ.get("INTEGRATION_BENCH_DATABASE_URL", DEFAULT_DATABASE))
    parser.add_argument("--redis", default=os.environ.get("INTEGRATION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: a process of sandbox stores
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.products, args.latency, args.cap)
    quick = args.quick
    args.stores = args.stores or (4 if quick else 20)
    args.products = args.products or (1000 if quick else 5000)
    args.workers = args.workers or (2 if quick else 4)
    args.interval = args.interval or (10.0 if quick else 30.0)
    args.duration = args.duration or (30.0 if quick else 90.0)
    if quick:
        args.changes = min(args.changes, 20)
    Bench(args).run()


# --- the store side: sandbox stores in processes of their own ---------------------------------

def serve(count: int, products: int, latency: float, cap: int) -> None:
    """Serve ``count`` sandbox stores; print one JSON line per store, then serve until killed.

    One gunicorn (gthread) worker serves them all, each on a port of its own, keeping
    connections alive as the web server in front of a Magento does. Werkzeug's server closes
    every connection: both sides then paid a connection for every page, and the store a thread."""
    import socket

    from gunicorn.app.base import BaseApplication

    from integration.sandbox import SandboxState, create_sandbox
    from integration.sandbox.state import Token, random_string

    stores, listeners = {}, []
    for n in range(count):
        state = SandboxState(products=products, latency=latency, bearer=True)
        integration = state.add_integration(f"Bench {n}")
        integration.token = Token("access", random_string(), random_string(), "")
        integration.status = "Active"
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(256)
        listener.set_inheritable(True)
        listeners.append(listener)
        port = listener.getsockname()[1]
        stores[str(port)] = create_sandbox(state)
        print(json.dumps({"port": port, "consumer_key": integration.consumer_key,
                          "consumer_secret": integration.consumer_secret, "token": integration.token.token,
                          "secret": integration.token.secret}), flush=True)

    def by_port(environ, start_response):
        return stores[environ["SERVER_PORT"]](environ, start_response)

    # Threads for every store's cap of requests at once (each waits out the latency in one),
    # and the ideal's 32 plain requests, which may all go to the stores of one process.
    settings = {"bind": [f"fd://{listener.fileno()}" for listener in listeners], "workers": 1,
                "worker_class": "gthread", "threads": max(count * cap, 32) + 8, "keepalive": 30,
                "accesslog": None, "loglevel": "warning", "graceful_timeout": 2, "timeout": 600}

    class Server(BaseApplication):
        def load_config(self):
            for name, value in settings.items():
                self.cfg.set(name, value)

        def load(self):
            return by_port

    Server().run()


class Stores:
    """Sandbox stores in child processes, reached over HTTP like real ones."""

    def __init__(self, count: int, products: int, latency: float, cap: int = 8):
        self.procs, self.stores = [], []
        for start in range(0, count, STORES_PER_PROCESS):
            n = min(STORES_PER_PROCESS, count - start)
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(n), "--products",
                                     str(products), "--latency", str(latency), "--cap", str(cap)], cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            self.procs.append(proc)
        for proc in self.procs:
            while len(self.stores) < count:
                line = proc.stdout.readline()
                if not line:
                    break
                self.stores.append(json.loads(line))
                if len(self.stores) % STORES_PER_PROCESS == 0:
                    break
        assert len(self.stores) == count, "the sandbox stores did not start"
        for store in self.stores:
            store["url"] = f"http://127.0.0.1:{store['port']}"

    def counters(self, session) -> list[dict]:
        return [session.get(s["url"] + "/sandbox/counters", timeout=30).json() for s in self.stores]

    def calls(self, session) -> int:
        return sum(c["rest_calls"] for c in self.counters(session))

    def reset_peaks(self, session) -> None:
        for s in self.stores:
            session.delete(s["url"] + "/sandbox/counters", timeout=30).raise_for_status()

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


# --- the benchmark -----------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        import requests
        from cryptography.fernet import Fernet

        self.args = args
        self.key = Fernet.generate_key().decode()
        self.session = requests.Session()
        self.workers: list[subprocess.Popen] = []
        self.figures: list[str] = []

    def env(self, **extra) -> dict:
        a = self.args
        return {**os.environ, "INTEGRATION_ENV": "production", "INTEGRATION_SECRET_KEY": "b" * 64,
                "INTEGRATION_ENCRYPTION_KEYS": self.key, "INTEGRATION_DATABASE_URL": a.database,
                "INTEGRATION_REDIS_URL": a.redis, "INTEGRATION_ALLOWED_STORE_HOSTS": "127.0.0.1",
                "INTEGRATION_ALLOWED_WEBHOOK_HOSTS": "127.0.0.1", "INTEGRATION_STORE_CONCURRENCY": str(a.cap),
                "INTEGRATION_SYNC_PAGE_SIZE": "100", "INTEGRATION_SYNC_ENTITIES": "products",
                "INTEGRATION_SYNC_INTERVAL": "86400", **extra}

    def start_workers(self, count: int, **extra) -> None:
        """Started and listening on the queue before anything is timed."""
        from redis import Redis
        from rq import Worker

        for _ in range(count):
            self.workers.append(subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "worker"], cwd=ROOT,
                                                 env=self.env(**extra), stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))
        connection = Redis.from_url(self.args.redis)
        deadline = time.monotonic() + 120
        while Worker.count(connection=connection) < len(self.workers) and time.monotonic() < deadline:
            time.sleep(0.2)

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        self.workers = []

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.figures.append(line)

    def run(self) -> None:
        from redis import Redis

        from bench._db import fresh_schema
        from integration import create_app

        a = self.args
        self.app = create_app({"SQLALCHEMY_DATABASE_URI": a.database, "SECRET_KEY": "b" * 64,
                               "ENCRYPTION_KEYS": (self.key,), "ALLOWED_STORE_HOSTS": ("127.0.0.1",),
                               "ALLOWED_WEBHOOK_HOSTS": ("127.0.0.1",), "JOBS_REDIS_URL": a.redis,
                               "SYNC_ENTITIES": ("products",), "JOBS_AUTOSTART": False})
        fresh_schema(self.app)
        Redis.from_url(a.redis).flushdb()
        print(f"{a.stores} stores x {a.products} products, {a.latency * 1000:.0f} ms a request, page size 100, "
              f"{a.workers} RQ workers, per-store cap {a.cap}; database {a.database.split(':', 1)[0]}", flush=True)
        stores = Stores(a.stores, a.products, a.latency, a.cap)
        try:
            links = self.link(stores)
            self.start_workers(a.workers)
            ideal = self.ideal(stores)
            stores.reset_peaks(self.session)
            self.initial(stores, links, ideal)
            self.quiet_and_changes(stores, links)
            self.stop_workers()
            skip = set(filter(None, a.skip.split(",")))
            if "latency" not in skip:
                self.latency(stores, links)
            if "memory" not in skip:
                self.memory()
        finally:
            self.stop_workers()
            stores.stop()
        print("\nsummary\n  " + "\n  ".join(self.figures))

    # --- phases ------------------------------------------------------------------------------

    def link(self, stores: Stores) -> list[int]:
        """One linked store each, its product feed not due (the benchmark queues its syncs)."""
        import datetime as dt

        from integration.extensions import db
        from integration.feeds.models import FeedState
        from integration.models import StoreLink

        links = []
        with self.app.app_context():
            for s in stores.stores:
                link = StoreLink(consumer_key=s["consumer_key"], consumer_secret=s["consumer_secret"],
                                 base_url=s["url"] + "/", store_host="127.0.0.1", status="linked",
                                 access_token=s["token"], access_token_secret=s["secret"])
                db.session.add(link)
                db.session.flush()
                db.session.add(FeedState(store_link_id=link.id, entity="products",
                                         next_run_at=dt.datetime(2100, 1, 1)))
                links.append(link.id)
            db.session.commit()
        return links

    def ideal(self, stores: Stores) -> float:
        import requests

        a = self.args
        pages = -(-a.products // 100)
        urls = [(f"{s['url']}/rest/V1/products?searchCriteria[sortOrders][0][field]=entity_id"
                 f"&searchCriteria[sortOrders][0][direction]=ASC&searchCriteria[pageSize]=100"
                 f"&searchCriteria[currentPage]={p}", s["token"]) for s in stores.stores for p in range(1, pages + 1)]
        local = threading.local()

        def fetch(item) -> None:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            url, token = item
            answer = local.session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            assert answer.status_code == 200 and answer.json()["items"], answer.text[:200]

        concurrency = a.workers * a.cap
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(fetch, urls))
        seconds = time.perf_counter() - started
        print(f"ideal     {len(urls)} pages by {concurrency} concurrent plain requests: {seconds:.2f} s", flush=True)
        return seconds

    def sync_all(self, links: list[int], *, full: bool = False, timeout: float = 1800) -> float:
        from sqlalchemy import select

        from integration.extensions import db
        from integration.feeds import schedule
        from integration.feeds.models import Job

        started = time.perf_counter()
        with self.app.app_context():
            ids = [job.id for link_id in links for job in schedule.sync_soon(link_id, ["products"], full=full)]
            while time.perf_counter() - started < timeout:
                db.session.rollback()
                states = db.session.scalars(select(Job.state).where(Job.id.in_(ids))).all()
                if all(state in (Job.FINISHED, Job.FAILED, Job.CANCELLED) for state in states):
                    break
                time.sleep(0.1)
            seconds = time.perf_counter() - started
            bad = db.session.execute(select(Job.id, Job.state, Job.error).where(Job.id.in_(ids),
                                                                                 Job.state != Job.FINISHED)).all()
        assert not bad, f"jobs did not finish: {bad[:5]}"
        return seconds

    def count(self, type_: str) -> int:
        from sqlalchemy import func, select

        from integration.events import Event
        from integration.extensions import db

        with self.app.app_context():
            return db.session.scalar(select(func.count()).select_from(Event).where(Event.type == type_))

    def cpu_seconds(self) -> float:
        """CPU time the workers used so far (user + system)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for worker in self.workers:
            with open(f"/proc/{worker.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / ticks

    def initial(self, stores: Stores, links: list[int], ideal: float) -> None:
        a = self.args
        cpu = self.cpu_seconds()
        seconds = self.sync_all(links)
        cpu = self.cpu_seconds() - cpu
        pages = len(links) * -(-a.products // 100)
        created = self.count("product.created")
        share = ideal / seconds
        self.say(f"initial   {a.stores} x {a.products} products: {seconds:.2f} s, ideal {ideal:.2f} s: "
                 f"{share:.0%} of the ideal (target >= 70%: {'met' if share >= 0.7 else 'NOT met'}); "
                 f"{created} product.created events ({'all' if created == a.stores * a.products else 'MISSING'})")
        self.say(f"cpu       the workers' CPU time: {cpu:.1f} s for {pages} pages, {cpu / pages * 1000:.0f} ms a page "
                 f"(the machine's 1-minute load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        peak = max(c["max_in_flight"] for c in stores.counters(self.session))
        self.say(f"cap       most requests in flight at one store: {peak} (cap {a.cap}: "
                 f"{'held' if peak <= a.cap else 'EXCEEDED'})")

    def quiet_and_changes(self, stores: Stores, links: list[int]) -> None:
        a = self.args
        before = stores.calls(self.session)
        self.sync_all(links)
        quiet = (stores.calls(self.session) - before) / len(links)
        self.say(f"quiet     nothing changed: {quiet:.2f} requests per store-entity")

        for i in range(a.changes):
            store = stores.stores[i % len(stores.stores)]
            sku = f"SB-{(i // len(stores.stores)) + 1:05d}"
            self.session.put(f"{store['url']}/sandbox/products/{sku}", json={"price": 1000 + i},
                             timeout=30).raise_for_status()
        created_before, updated_before = self.count("product.created"), self.count("product.updated")
        before = stores.calls(self.session)
        self.sync_all(links)
        per_feed = (stores.calls(self.session) - before) / len(links)
        updated = self.count("product.updated") - updated_before
        created = self.count("product.created") - created_before
        exact = updated == a.changes and created == 0
        self.say(f"changes   {a.changes} edits over {len(links)} stores: {per_feed:.2f} requests per store-entity "
                 f"(target <= 3: {'met' if per_feed <= 3 else 'NOT met'}), {updated} product.updated and {created} "
                 f"product.created events ({'exactly the edits' if exact else 'MISMATCH'})")

    def latency(self, stores: Stores, links: list[int]) -> None:
        """Workers on their own schedule; changes at --rate a minute, each timed edit to webhook."""
        import datetime as dt
        import random

        from sqlalchemy import update

        from integration.extensions import db
        from integration.feeds.models import FeedState
        from integration.webhooks import service

        a = self.args
        receiver = Receiver()
        with self.app.app_context():
            service.add(receiver.url + "/hooks", ["product.updated"])
            # Due at once, spread over one interval as a steady state would be.
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            for n, link_id in enumerate(links):
                db.session.execute(update(FeedState).where(FeedState.store_link_id == link_id).values(
                    next_run_at=now + dt.timedelta(seconds=a.interval * n / len(links))))
            db.session.commit()
        self.start_workers(a.workers, INTEGRATION_SYNC_INTERVAL=str(a.interval))
        time.sleep(a.interval)  # one round of passes first: the schedule in its steady state
        sent: dict[tuple, float] = {}
        gap, rng = 60.0 / a.rate, random.Random(1)
        edited = set()
        until = time.monotonic() + a.duration
        n = 0
        while time.monotonic() < until:
            store_n = n % len(stores.stores)
            while True:  # one edit per product, so every edit is its own event
                sku_n = rng.randrange(1, a.products + 1)
                if (store_n, sku_n) not in edited:
                    edited.add((store_n, sku_n))
                    break
            store, price = stores.stores[store_n], 50000 + n
            self.session.put(f"{store['url']}/sandbox/products/SB-{sku_n:05d}", json={"price": price},
                             timeout=30).raise_for_status()
            sent[(links[store_n], str(sku_n), price)] = time.time()
            n += 1
            time.sleep(max(0.0, gap - 0.005))
        deadline = time.monotonic() + a.interval + 60
        while time.monotonic() < deadline and not all(k in receiver.arrived for k in sent):
            time.sleep(0.5)
        self.stop_workers()
        receiver.stop()
        waits = sorted(receiver.arrived[k] - t for k, t in sent.items() if k in receiver.arrived)
        missing = len(sent) - len(waits)
        p95 = waits[max(0, int(len(waits) * 0.95) - 1)] if waits else float("inf")
        p50 = waits[len(waits) // 2] if waits else float("inf")
        target = a.interval + 10
        self.say(f"latency   {len(sent)} changes at {a.rate:.0f}/min, interval {a.interval:.0f} s: change to webhook "
                 f"p50 {p50:.1f} s, p95 {p95:.1f} s (target <= {target:.0f} s: "
                 f"{'met' if p95 <= target and not missing else 'NOT met'}), {missing} not delivered")

    def memory(self) -> None:
        """Peak RSS of one worker syncing one store of N products, then one of 10 N."""
        a = self.args
        sizes = (a.products, a.products * 10)
        peaks = []
        for size in sizes:
            stores = Stores(1, size, a.latency, a.cap)
            try:
                [link_id] = self.link(stores)
                self.start_workers(1)
                time.sleep(3)  # started and idle
                idle = _rss_kb(self.workers[0].pid, "VmRSS")
                self.sync_all([link_id])
                peak = _rss_kb(self.workers[0].pid, "VmHWM")
                peaks.append(peak)
                print(f"memory    {size} products: worker RSS idle {idle / 1024:.0f} MB, peak {peak / 1024:.0f} MB",
                      flush=True)
            finally:
                self.stop_workers()
                stores.stop()
        growth = peaks[1] / peaks[0]
        self.say(f"memory    worker peak RSS {sizes[0]} products: {peaks[0] / 1024:.0f} MB, {sizes[1]}: "
                 f"{peaks[1] / 1024:.0f} MB, x{growth:.2f} for 10x the catalogue "
                 f"(target <= x1.25: {'met' if growth <= 1.25 else 'NOT met'})")


def _rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


class Receiver:
    """Webhook receiver: when each (store, record, price) first arrived."""

    def __init__(self):
        from werkzeug.serving import make_server
        from werkzeug.wrappers import Request, Response

        self.arrived: dict[tuple, float] = {}
        lock = threading.Lock()

        @Request.application
        def app(request):
            at = time.time()
            try:
                event = json.loads(request.get_data())
                key = (event["store"]["id"], event["record_id"], (event.get("record") or {}).get("price"))
            except (ValueError, KeyError, TypeError):
                return Response(status=400)
            with lock:
                self.arrived.setdefault(key, at)
            return Response(status=204)

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


if __name__ == "__main__":
    main()
