"""Change-feed benchmark: several sandbox stores, a fixed latency per request, page size 100.

  initial   every store's product feed synced from nothing, one sync per store at a time on
            --workers threads (as the job runner would), against the ideal: the same pages fetched
            by --workers concurrent plain requests, no signing, no database
  quiet     the next pass over every store with nothing changed: requests per store-entity
  changes   --changes edits spread over the stores, then a pass: requests per store-entity, and
            whether exactly those changes became events

    .venv/bin/python bench/sync.py [--stores 4] [--products 2000] [--latency 0.05] [--workers 4]

The issue's full target (20 stores x 5,000 products, 4 RQ workers) runs with
``--stores 20 --products 5000 --latency 0.1 --workers 4``; it takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stores", type=int, default=4)
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a temporary SQLite file)")
    args = parser.parse_args()

    import requests
    from cryptography.fernet import Fernet
    from sqlalchemy import func, select
    from werkzeug.serving import make_server

    import threading

    from bench._db import fresh_schema
    from integration import create_app
    from integration.events import Event
    from integration.extensions import db
    from integration.feeds import sync
    from integration.models import StoreLink
    from integration.sandbox import SandboxState, create_sandbox
    from integration.sandbox.changes import update_product
    from integration.sandbox.state import Token, random_string

    folder = tempfile.mkdtemp(prefix="bench-sync-")
    os.environ["INTEGRATION_INSTANCE_PATH"] = folder
    app = create_app({"SQLALCHEMY_DATABASE_URI": args.database or f"sqlite:///{folder}/bench.sqlite",
                      "SECRET_KEY": "b" * 64, "ENCRYPTION_KEYS": (Fernet.generate_key().decode(),),
                      "ALLOWED_STORE_HOSTS": ("127.0.0.1",), "SYNC_PAGE_SIZE": 100, "JOBS_AUTOSTART": False})
    fresh_schema(app)

    stores, servers = [], []
    for n in range(args.stores):
        state = SandboxState(products=args.products, latency=args.latency)
        integration = state.add_integration(f"Bench {n}")
        integration.token = Token("access", random_string(), random_string(), "")
        integration.status = "Active"
        server = make_server("127.0.0.1", 0, create_sandbox(state), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        with app.app_context():
            link = StoreLink(consumer_key=integration.consumer_key, consumer_secret=integration.consumer_secret,
                             base_url=f"http://127.0.0.1:{server.server_port}/", store_host="127.0.0.1",
                             status="linked", access_token=integration.token.token,
                             access_token_secret=integration.token.secret)
            db.session.add(link)
            db.session.commit()
            stores.append((link.id, state, server.server_port))

    def sync_all() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            jobs = [pool.submit(lambda link_id: _sync(app, sync, link_id), link_id) for link_id, _, _ in stores]
            states = [j.result() for j in jobs]
        assert all(s == "finished" for s in states), states
        return time.perf_counter() - started

    pages = -(-args.products // 100)
    t_ideal_start = time.perf_counter()
    session = requests.Session()
    urls = [(f"http://127.0.0.1:{port}/rest/V1/products?searchCriteria[pageSize]=100"
             f"&searchCriteria[currentPage]={p}", state.integrations[1].token.token)
            for _, state, port in stores for p in range(1, pages + 1)]
    for _, state, _ in stores:
        state.bearer = True

    def fetch(item) -> None:
        url, token = item
        answer = session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text[:200]

    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(fetch, urls))
    t_ideal = time.perf_counter() - t_ideal_start
    for _, state, _ in stores:
        state.bearer = False

    calls = lambda: sum(s.counters.rest_calls for _, s, _ in stores)  # noqa: E731
    t_initial = sync_all()
    with app.app_context():
        created = db.session.scalar(select(func.count()).select_from(Event).where(Event.type == "product.created"))
    print(f"initial   {args.stores} stores x {args.products} products: {t_initial:.2f} s "
          f"(ideal {t_ideal:.2f} s, {t_ideal / t_initial:.0%} of ideal), {created} product.created events")

    before = calls()
    sync_all()
    print(f"quiet     {(calls() - before) / args.stores:.2f} requests per store-entity")

    for i in range(args.changes):
        _, state, _ = stores[i % len(stores)]
        update_product(state, f"SB-{(i // len(stores)) + 1:05d}", {"price": 1000 + i})
    before = calls()
    with app.app_context():
        updated_before = db.session.scalar(select(func.count()).select_from(Event).where(Event.type == "product.updated"))
    sync_all()
    with app.app_context():
        updated = db.session.scalar(select(func.count()).select_from(Event).where(
            Event.type == "product.updated")) - updated_before
    print(f"changes   {args.changes} edits: {(calls() - before) / args.stores:.2f} requests per store-entity, "
          f"{updated} product.updated events ({'exact' if updated == args.changes else 'MISMATCH'})")
    for server in servers:
        server.shutdown()


def _sync(app, sync, link_id: int) -> str:
    from integration.extensions import db

    with app.app_context():
        try:
            return sync.sync(link_id, "products").state
        finally:
            db.session.remove()


if __name__ == "__main__":
    main()
