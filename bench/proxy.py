"""The signing proxy's cost: the same signed GETs to a sandbox store with 20 ms latency, made
directly with our client and through the proxy (our app under gunicorn), 16 callers at once.

    .venv/bin/python bench/proxy.py [--requests 2000] [--callers 16] [--latency 0.02]
                                    [--store-concurrency 16] [--database-url URL] [--workers 2]
                                    [--threads 16] [--sandbox-threads 32] [--redis-url URL]

Prints throughput and latency percentiles of both, proxy throughput as % of direct (target
>= 90%) and the p50 the proxy adds (target < 3 ms). The per-store cap is raised to the
number of callers (--store-concurrency) so that it measures the proxy, not the cap; run with
--store-concurrency 8 (the default setting) to see the cap at work.

The sandbox store runs in its own process under gunicorn with --sandbox-threads threads and
keep-alive, as the web server in front of a real Magento would (--sandbox-threads 0: Werkzeug's
server, which opens a connection and a thread per request on both sides). Both sides reuse
pooled connections to it: the direct client its own pool, the proxy each worker's
``outbound.store_session()``. The load average before and after is printed: the figures only
mean something on a machine that is otherwise idle.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_callers(callers: int, jobs: list, call) -> tuple[float, list[float], int]:
    """``call(session, job)`` for every job, ``callers`` at a time: wall time, latencies, errors."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    queue = iter(jobs)

    def worker():
        nonlocal errors
        session = requests.Session()
        while True:
            with lock:
                job = next(queue, None)
            if job is None:
                return
            started = time.perf_counter()
            try:
                ok = call(session, job)
            except Exception:  # noqa: BLE001 - counted, not fatal: a reset connection is an error of the run
                ok = False
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                errors += 0 if ok else 1

    threads = [threading.Thread(target=worker) for _ in range(callers)]
    started = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    return time.perf_counter() - started, latencies, errors


class Threaded:
    """Our app on Werkzeug's threaded server in a process of its own (``server.proc``)."""

    def __init__(self, env: dict[str, str]):
        from tests.servers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        code = ("import logging; logging.getLogger('werkzeug').setLevel(logging.WARNING); "
                "from werkzeug.serving import run_simple; from app import app; "
                f"run_simple('127.0.0.1', {self.port}, app, threaded=True)")
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/healthz", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("the threaded server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system) of a process and its children, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, pids = 0.0, {root_pid}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == root_pid:  # fields[1] is the parent pid
                pids.add(int(entry))
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def wait_for_port(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(int(len(values) * p), len(values) - 1)]


def main() -> None:
    from cryptography.fernet import Fernet

    from bench._db import fresh_schema
    from integration import create_app
    from integration.apikeys import service as apikeys
    from integration.extensions import db
    from integration.magento.client import Credentials, StoreClient
    from integration.magento.store_url import StorePolicy
    from integration.feeds import sync as feeds
    from integration.models import StoreLink, utcnow
    from tests.servers import Gunicorn, free_port

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--store-concurrency", type=int, default=16)
    parser.add_argument("--database-url")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--sandbox-threads", type=int, default=32,
                        help="the sandbox under gunicorn with keep-alive and this many threads (0: Werkzeug)")
    parser.add_argument("--redis-url", help="rate limits and the per-store cap in Redis (as with several hosts)")
    parser.add_argument("--server", choices=["gunicorn", "threaded"], default="gunicorn",
                        help="our app under gunicorn (gthread) or Werkzeug's threaded server, in its own process")
    args = parser.parse_args()

    load_before = os.getloadavg()
    port = free_port()
    sandbox = subprocess.Popen([sys.executable, "-m", "integration.sandbox", "--port", str(port), "--products", "200",
                                "--latency", str(args.latency), "--seed-credentials",
                                "--keep-alive-threads", str(args.sandbox_threads)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seeded = json.loads(sandbox.stdout.readline())
    wait_for_port(port)
    creds = Credentials(seeded["consumer_key"], seeded["consumer_secret"], seeded["access_token"],
                        seeded["access_token_secret"])

    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/proxy-bench.sqlite"
    fernet_key = Fernet.generate_key().decode()
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "p" * 64, "ENCRYPTION_KEYS": (fernet_key,)})
    fresh_schema(app)
    with app.app_context():
        link = StoreLink(consumer_key=creds.consumer_key, consumer_secret=creds.consumer_secret,
                         base_url=seeded["base_url"], store_host="127.0.0.1", status=StoreLink.LINKED,
                         access_token=creds.access_token, access_token_secret=creds.access_token_secret,
                         signature_profile="2.4.8+")
        db.session.add(link)
        db.session.commit()
        link_id = link.id
        # A store linked a while ago: its change feeds have run and are not due again during the
        # run (their first sync of every entity would otherwise share the app's CPU with the proxy).
        link.linked_at = link.last_contact_at = utcnow()
        for entity in feeds.ALL:
            feeds.feed_for(link_id, entity).next_run_at = utcnow() + dt.timedelta(days=1)
        db.session.commit()
        _, api_key = apikeys.create("bench", ["stores:call"])

    env = {"INTEGRATION_DATABASE_URL": url, "INTEGRATION_SECRET_KEY": "p" * 64,
                       "INTEGRATION_ENCRYPTION_KEYS": fernet_key, "INTEGRATION_ALLOWED_STORE_HOSTS": "127.0.0.1",
                       "INTEGRATION_STORE_CONCURRENCY": str(args.store_concurrency),
                       "INTEGRATION_STORE_CAP_WAIT": "30",
                       "INTEGRATION_API_RATE_LIMIT": "1000000 per minute",
                       **({"INTEGRATION_REDIS_URL": args.redis_url} if args.redis_url else {})}
    server = Gunicorn(env, workers=args.workers, threads=args.threads) if args.server == "gunicorn" else Threaded(env)
    # The same GETs both ways: a searchCriteria page of five products, twenty different pages.
    jobs = [{"searchCriteria[pageSize]": "5", "searchCriteria[currentPage]": str(i % 20 + 1)}
            for i in range(args.requests)]
    client = StoreClient(seeded["base_url"], creds, profile="2.4.8+", policy=StorePolicy(("127.0.0.1",)),
                         pool_size=args.callers)
    headers = {"Authorization": f"Bearer {api_key}"}
    proxy_url = f"{server.url}/api/v1/stores/{link_id}/rest/default/V1/products"

    def direct(_session, params) -> bool:
        return len(client.get("products", params=params)["items"]) == 5

    def proxied(session, params) -> bool:
        response = session.get(proxy_url, params=params, headers=headers, timeout=30)
        return response.status_code == 200 and len(response.json()["items"]) == 5

    try:
        run_callers(args.callers, jobs[:100], direct)  # warm up both paths (connections, workers)
        run_callers(args.callers, jobs[:100], proxied)
        results, cpu = {}, {}
        for name, call in (("direct (our client)", direct), ("through the proxy", proxied)):
            before = (time.process_time(), cpu_seconds(sandbox.pid), cpu_seconds(server.proc.pid))
            wall, latencies, errors = run_callers(args.callers, jobs, call)
            after = (time.process_time(), cpu_seconds(sandbox.pid), cpu_seconds(server.proc.pid))
            results[name] = (args.requests / wall, latencies, errors)
            cpu[name] = [(b - a) / args.requests * 1000 for a, b in zip(before, after)]
    finally:
        server.stop()
        sandbox.terminate()
        sandbox.wait()

    print(f"{args.requests} signed GETs, {args.callers} callers, store latency {args.latency * 1000:.0f} ms, "
          f"{f'gunicorn {args.workers} workers x {args.threads} threads' if args.server == 'gunicorn' else 'threaded server'}"
          f", per-store cap {args.store_concurrency}, "
          f"{'SQLite' if url.startswith('sqlite') else 'PostgreSQL'}{', Redis' if args.redis_url else ''}, "
          f"sandbox: {f'gunicorn {args.sandbox_threads} threads, keep-alive' if args.sandbox_threads else 'Werkzeug'}")
    load_after = os.getloadavg()
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'':22} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, (rate, latencies, errors) in results.items():
        print(f"{name:22} {rate:8.0f} {statistics.median(latencies) * 1000:8.2f} {pct(latencies, .9) * 1000:8.2f} "
              f"{pct(latencies, .99) * 1000:8.2f} {errors:7d}")
    print(f"CPU per call, ms: {'callers':>8} {'sandbox':>8} {'our app':>8}")
    for name, (caller, store, ours) in cpu.items():
        print(f"  {name:22} {caller:8.2f} {store:8.2f} {ours:8.2f}")
    (d_rate, d_lat, _), (p_rate, p_lat, _) = results.values()
    share = p_rate / d_rate * 100
    added = (statistics.median(p_lat) - statistics.median(d_lat)) * 1000
    print(f"proxy throughput: {share:.0f}% of direct (target >= 90%); added p50: {added:.2f} ms (target < 3 ms)")


if __name__ == "__main__":
    main()
