"""Load script: N activations at once against our app under gunicorn (4 workers).

Each activation is what Magento and the admin do: Activate in the sandbox store (which POSTs
our callback), a duplicate callback, then the identity pop-up submitted twice at once.
Reports requests/s and p50/p99 for the callback and identity endpoints, and errors.

    .venv/bin/python bench/load.py [--database-url URL] [--activations 200] [--concurrency 50]

Without --database-url a fresh SQLite file is used; with a PostgreSQL URL its public schema
is dropped and rebuilt (point it at a scratch database).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    from cryptography.fernet import Fernet
    from bench._db import fresh_schema

    from integration import create_app
    from integration.extensions import db
    from integration.models import User
    from integration.sandbox import SandboxState, create_sandbox
    from tests.servers import Gunicorn, Served, activate

    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--activations", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/load.sqlite"
    key = Fernet.generate_key().decode()
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "l" * 64, "ENCRYPTION_KEYS": (key,)})
    fresh_schema(app)
    with app.app_context():
        user = User(email="load@example.com")
        user.set_password("load test password")
        db.session.add(user)
        db.session.commit()
    state = SandboxState(products=0)
    sandbox = Served(create_sandbox(state))
    server = Gunicorn({"INTEGRATION_DATABASE_URL": url, "INTEGRATION_SECRET_KEY": "l" * 64,
                       "INTEGRATION_ENCRYPTION_KEYS": key, "INTEGRATION_ALLOWED_STORE_HOSTS": "127.0.0.1",
                       "INTEGRATION_LOGIN_RATE_LIMIT": "1000000 per minute",
                       "INTEGRATION_ACCOUNT_RATE_LIMIT": "1000000 per minute",
                       "INTEGRATION_CALLBACK_RATE_LIMIT": "1000000 per minute"}, workers=args.workers)
    ids = [state.add_integration(f"Load {i}", f"{server.url}/magento/callback", f"{server.url}/magento/identity").id
           for i in range(args.activations)]
    timings: dict[str, list[float]] = {}
    errors = []

    def one(i):
        try:
            statuses = activate(sandbox.url, i, "load@example.com", "load test password", double_submit=True,
                                duplicate_callback=True, sandbox_state=state, timings=timings)
            errors.extend(s for s in statuses if s >= 500)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors.append(repr(exc)[:200])

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            list(pool.map(one, ids))
    finally:
        wall = time.perf_counter() - started
        server.stop()
        sandbox.stop()
    active = sum(1 for i in ids if state.integrations[i].status == "Active")
    requests_made = args.activations * 6  # callback via Activate, duplicate callback, 2 pages, 2 submits
    print(f"{url.split(':')[0]}: {args.activations} activations, concurrency {args.concurrency}, "
          f"{args.workers} workers")
    print(f"  wall {wall:.1f} s, {requests_made / wall:.0f} requests/s to our app, "
          f"{args.activations / wall:.1f} activations/s")
    for name, values in timings.items():
        values.sort()
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        print(f"  {name:38} p50 {statistics.median(values) * 1000:6.0f} ms  p99 {p99 * 1000:6.0f} ms")
    print(f"  linked {active}/{args.activations}, token exchanges {state.counters.request_token_calls}, "
          f"errors {len(errors)}")
    if errors:
        print("  first errors:", errors[:3])
        sys.exit(1)


if __name__ == "__main__":
    main()
