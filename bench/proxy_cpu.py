"""CPU time the app spends on one proxied call, measured in-process: the figure that decides
bench/proxy.py's throughput on a machine of few cores (and one a shared machine does not blur
as it does wall-clock throughput and latency).

One sandbox store in a process of its own (gunicorn, keep-alive, no latency), the app in this
process, called through its WSGI interface with a request built once (no HTTP server and no
test client: what is measured is the app, from the environ to the last byte of the answer).
The same signed searchCriteria GET as bench/proxy.py, ``--calls`` times one after another,
``--runs`` times after a run that warms up. Prints this process's CPU time a call (every
thread: the audit flush and the deadline watchdog run beside the request), then the least and
the median. Gunicorn's own share under bench/proxy.py (parsing, access log, writes; about
0.3 ms) is not in it.

    .venv/bin/python bench/proxy_cpu.py                       # SQLite (a temporary file)
    .venv/bin/python bench/proxy_cpu.py --database postgresql+psycopg://postgres@127.0.0.1:5432/scratch
    .venv/bin/python bench/proxy_cpu.py --redis-url redis://127.0.0.1:6379/3   # limits and cap in Redis
    .venv/bin/python bench/proxy_cpu.py --profile              # cProfile (CPU time) of the calls
    .venv/bin/python bench/proxy_cpu.py --breakdown            # then where the request thread's CPU goes

``--breakdown`` runs the calls once more with a few functions timed (the thread's CPU time,
each part including what it calls): no profiler's overhead, which inflates call-heavy code.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--redis-url", help="rate limits and the per-store cap in Redis")
    parser.add_argument("--profile", action="store_true", help="cProfile (CPU time) of one run's calls")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--profile-out", help="also write the profile's stats to this file (for pstats)")
    parser.add_argument("--breakdown", action="store_true", help="then one more run with a few parts timed")
    args = parser.parse_args()

    from cryptography.fernet import Fernet
    from werkzeug.test import EnvironBuilder

    from bench._db import fresh_schema
    from bench.proxy import cpu_seconds, wait_for_port
    from integration import create_app
    from integration.apikeys import service as apikeys
    from integration.extensions import db
    from integration.models import StoreLink, utcnow
    from tests.servers import free_port

    tmp = tempfile.mkdtemp(prefix="proxy_cpu_")
    os.environ["INTEGRATION_INSTANCE_PATH"] = tmp
    port = free_port()
    store = subprocess.Popen([sys.executable, "-m", "integration.sandbox", "--port", str(port), "--products", "200",
                              "--latency", "0", "--seed-credentials", "--keep-alive-threads", "4"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        seeded = json.loads(store.stdout.readline())
        wait_for_port(port)
        config = {"SQLALCHEMY_DATABASE_URI": args.database or f"sqlite:///{tmp}/proxy.sqlite",
                  "SECRET_KEY": "p" * 64, "ENCRYPTION_KEYS": (Fernet.generate_key().decode(),),
                  "ALLOWED_STORE_HOSTS": ("127.0.0.1",), "JOBS_AUTOSTART": False,
                  "API_RATE_LIMIT": "1000000 per minute"}
        if args.redis_url:
            config.update(REDIS_URL=args.redis_url, RATELIMIT_STORAGE_URI=args.redis_url)
        app = create_app(config)
        fresh_schema(app)
        with app.app_context():
            link = StoreLink(consumer_key=seeded["consumer_key"], consumer_secret=seeded["consumer_secret"],
                             base_url=seeded["base_url"], store_host="127.0.0.1", status=StoreLink.LINKED,
                             access_token=seeded["access_token"], access_token_secret=seeded["access_token_secret"],
                             signature_profile="2.4.8+", linked_at=utcnow(), last_contact_at=utcnow())
            db.session.add(link)
            db.session.commit()
            link_id = link.id
            _, key = apikeys.create("bench", ["stores:call"])
        environ = EnvironBuilder(
            path=f"/api/v1/stores/{link_id}/rest/default/V1/products",
            query_string="searchCriteria%5BpageSize%5D=5&searchCriteria%5BcurrentPage%5D=3",
            headers={"Authorization": f"Bearer {key}"}, environ_base={"REMOTE_ADDR": "127.0.0.1"},
        ).get_environ()
        environ["RAW_URI"] = f"{environ['PATH_INFO']}?{environ['QUERY_STRING']}"  # as gunicorn sets it

        def call() -> None:
            status = []
            body = b"".join(app(dict(environ, **{"wsgi.input": io.BytesIO()}),
                                lambda s, h, exc_info=None: status.append(s)))
            if not status[0].startswith("200") or b'"items"' not in body:
                raise SystemExit(f"the proxy answered {status[0]}: {body[:300]!r}")

        print(f"{args.calls} proxied GETs a run, one at a time; database "
              f"{config['SQLALCHEMY_DATABASE_URI'].split(':', 1)[0]}{', Redis' if args.redis_url else ''}", flush=True)
        figures = []
        for run in range(args.runs + 1):  # the first warms up (connections, caches, compiled statements)
            profiler = cProfile.Profile(time.process_time) if args.profile and run == 1 else None
            serving = cpu_seconds(store.pid)
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            for _ in range(args.calls):
                call()
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            serving = cpu_seconds(store.pid) - serving
            if profiler:
                if args.profile_out:
                    profiler.dump_stats(args.profile_out)
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
            if run == 0:
                continue
            figures.append(cpu / args.calls * 1000)
            print(f"run {run}: {figures[-1]:.3f} ms of CPU a call in this process, the sandbox store "
                  f"{serving / args.calls * 1000:.2f} ms ({wall / args.calls * 1000:.2f} ms wall a call)", flush=True)
        print(f"least {min(figures):.3f} ms, median {statistics.median(figures):.3f} ms of CPU a call "
              f"(1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        if args.breakdown:
            _breakdown(call, args.calls)
    finally:
        store.kill()
        store.wait()


def _breakdown(call, calls: int) -> None:
    """One more run with parts of a call timed: this thread's CPU time a call in each."""
    import flask
    import flask.ctx
    import urllib3.connectionpool

    from integration.magento import client, oauth, transport

    totals: dict[str, float] = collections.defaultdict(float)
    parts = [  # (owner, attribute, label): each label includes the parts below it that it calls
        (flask.Flask, "wsgi_app", "the whole request (Flask's WSGI app)"),
        (flask.ctx.RequestContext, "push", "  request context: push (URL routing, session opened)"),
        (flask.ctx.RequestContext, "pop", "  request context: pop (teardown)"),
        (flask.Flask, "preprocess_request", "  before-request hooks (key, rate limit, ...)"),
        (flask.Flask, "process_response", "  after-request hooks (audit, headers, session)"),
        (flask.Flask, "dispatch_request", "  the view"),
        (client, "send", "    the upstream call (transport.send)"),
        (transport, "_prepare", "      preparing it (URL, headers, signing)"),
        (oauth.MagentoOAuth1, "__call__", "        signing"),
        (urllib3.connectionpool.HTTPConnectionPool, "urlopen", "      urllib3, http.client: send, read the head"),
        (transport, "_read", "      reading the body"),
    ]
    originals = []
    for owner, name, label in parts:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        def timed(*args, _original=original, _label=label, **kwargs):
            started = time.thread_time()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_label] += time.thread_time() - started

        setattr(owner, name, functools.wraps(original)(timed))
    try:
        for _ in range(calls):
            call()
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    print("where the request thread's CPU goes, ms a call (each part includes the parts it calls):")
    for _, _, label in parts:
        print(f"  {label:60} {totals[label] / calls * 1000:6.3f}")


if __name__ == "__main__":
    main()
