"""CPU time a change-feed worker spends per page of a first pass, measured in-process (the
figure that decides bench/sync.py's initial sync on a machine of few cores, and one a shared
machine does not blur as it does wall-clock throughput).

One sandbox store in a process of its own (by default no latency: nothing is waited for), one linked
store in this process, its product feed synced from nothing, ``--runs`` times after a run that
warms up (compiled statements, connections: a worker has run jobs before). Prints this
process's CPU time a page (every thread: the page fetches, signing and JSON parsing run on the
client's page threads), on PostgreSQL the server backend's too, then the least and the median.

    .venv/bin/python bench/sync_cpu.py                          # SQLite (a temporary file)
    .venv/bin/python bench/sync_cpu.py --database postgresql+psycopg://postgres@127.0.0.1:5432/bench_feeds
    .venv/bin/python bench/sync_cpu.py --profile               # cProfile of the writing thread
    .venv/bin/python bench/sync_cpu.py --fetch-only [--profile]   # fetching the pages alone
    .venv/bin/python bench/sync_cpu.py --latency 0.1 --redis redis://127.0.0.1:6379/11   # as in bench/sync.py

With ``--latency`` the store answers as slowly as bench/sync.py's do, so the page threads wait and
wake as a worker's do; with ``--redis`` the per-store cap and the jobs' wake-ups go through Redis.

The database's schema is dropped and migrated afresh (as bench/sync.py does).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--fetch-only", action="store_true", help="fetch the pages, one after another, and nothing else")
    parser.add_argument("--profile", action="store_true", help="cProfile (CPU time) of the writing thread, or of fetching")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the store takes a request (bench/sync.py: 0.1): page threads then wait as a worker's do")
    parser.add_argument("--redis", help="Redis URL: the per-store cap and the jobs' wake-ups in Redis, as a worker has them "
                                        "(its database is not flushed; the sync's keys expire)")
    args = parser.parse_args()

    from cryptography.fernet import Fernet

    from bench._db import fresh_schema
    from integration import create_app
    from integration.jobs import settle_collector

    tmp = tempfile.mkdtemp(prefix="sync_cpu_")
    database = args.database or "sqlite"
    key = Fernet.generate_key().decode()
    os.environ["INTEGRATION_INSTANCE_PATH"] = tmp
    store = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "sync.py"), "--serve", "1",
                              "--products", str(args.products), "--latency", str(args.latency)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        import json

        credentials = json.loads(store.stdout.readline())
        url = f"http://127.0.0.1:{credentials['port']}/"
        pages = -(-args.products // 100)
        print(f"{args.products} products, {pages} pages of 100; database {database.split(':', 1)[0]}", flush=True)
        app = create_app({"SQLALCHEMY_DATABASE_URI": args.database or f"sqlite:///{tmp}/feeds.sqlite",
                          "SECRET_KEY": "b" * 64, "ENCRYPTION_KEYS": (key,), "ALLOWED_STORE_HOSTS": ("127.0.0.1",),
                          "STORE_CONCURRENCY": 8, "SYNC_PAGE_SIZE": 100, "JOBS_AUTOSTART": False,
                          "SYNC_ENTITIES": ("products",),
                          **({"REDIS_URL": args.redis, "JOBS_REDIS_URL": args.redis} if args.redis else {})})
        fresh_schema(app)
        figures = []
        for run in range(args.runs + 1):  # the first warms up, as a worker that has run jobs before is
            with app.app_context():
                _forget_everything()
                link_id = _link(credentials, url)
                serving = _cpu_of_tree(store.pid)
                if args.fetch_only:
                    cpu, wall, server = _fetch_only(link_id, args)
                else:
                    cpu, wall, server = _sync(link_id, args)
            serving = _cpu_of_tree(store.pid) - serving
            if run == 0:
                settle_collector()  # as a worker does once it has loaded the app (jobs/cli.py)
                continue
            figures.append(cpu / pages * 1000)
            server_text = f", database server {server / pages * 1000:.1f} ms" if server is not None else ""
            print(f"run {run}: {cpu / pages * 1000:.1f} ms of CPU a page in this process{server_text}, "
                  f"the sandbox store {serving / pages * 1000:.1f} ms "
                  f"({cpu:.2f} s CPU, {wall:.2f} s wall for {pages} pages)", flush=True)
        figures.sort()
        print(f"least {figures[0]:.1f} ms, median {figures[len(figures) // 2]:.1f} ms of CPU a page "
              f"(1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        store.kill()
        store.wait()


def _forget_everything() -> None:
    """The previous run's store, feed, records and events."""
    from sqlalchemy import delete

    from integration.events import Event
    from integration.extensions import db
    from integration.feeds.models import FeedRecord, FeedState, Job
    from integration.models import StoreLink

    for model in (Event, FeedRecord, Job, FeedState, StoreLink):
        db.session.execute(delete(model))
    db.session.commit()


def _link(credentials: dict, url: str) -> int:
    from integration.extensions import db
    from integration.models import StoreLink

    link = StoreLink(consumer_key=credentials["consumer_key"], consumer_secret=credentials["consumer_secret"],
                     base_url=url, store_host="127.0.0.1", status="linked", access_token=credentials["token"],
                     access_token_secret=credentials["secret"])
    db.session.add(link)
    db.session.commit()
    return link.id


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_of_tree(pid: int) -> float:
    """CPU seconds of process ``pid`` and of its children (the stores' gunicorn worker)."""
    total = _cpu_of(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        total += _cpu_of_tree(int(entry))
            except (OSError, ValueError):
                pass
    return total


def _server_cpu() -> float | None:
    """CPU seconds of this session's PostgreSQL backend (None on SQLite or when unreadable)."""
    from sqlalchemy import text

    from integration.extensions import db

    if db.engine.dialect.name != "postgresql":
        return None
    pid = db.session.scalar(text("SELECT pg_backend_pid()"))
    db.session.commit()
    try:
        return _cpu_of(pid)
    except OSError:
        return None


def _sync(link_id: int, args) -> tuple[float, float, float | None]:
    from integration.feeds import sync
    from integration.feeds.models import Job

    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    server = _server_cpu()
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    job = sync.sync(link_id, "products")
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    server = _server_cpu() - server if server is not None else None
    assert job.state == Job.FINISHED and job.created == args.products, (job.state, job.error, job.created)
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return cpu, wall, server


def _fetch_only(link_id: int, args) -> tuple[float, float, None]:
    """The pages one after another in this thread, as a sync's page threads fetch them."""
    from integration import stores
    from integration.extensions import db
    from integration.feeds import sync
    from integration.magento.search import SearchCriteria
    from integration.models import StoreLink

    link = db.session.get(StoreLink, link_id)
    spec = sync.ENTITIES["products"]
    pages = -(-args.products // 100)
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    with stores.contact(link, "store.synced", "products feed", deadline=None, pool_size=8,
                        slot=sync.store_slot(link.id)) as client:
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for number in range(1, pages + 1):
            answer = client.search(spec.path, SearchCriteria().order_by("entity_id").page(100, number))
            assert answer["items"]
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.top)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return cpu, wall, None


if __name__ == "__main__":
    main()
