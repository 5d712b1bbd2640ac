"""Magento events intake: a product change in a store with aligent/magento-async-events, to the
webhook our service receives for it.

    .venv/bin/python bench/intake.py [--changes 100] [--database URL] [--duplicates]

1. Baseline, measured in the same run: the store's signed POST straight to a plain receiver
   (a second subscription whose recipient is the receiver itself): the floor of any push.
2. Ours: the store POSTs to our intake; we store, verify and answer, a worker reads the record
   from the store, the feed's fingerprint step emits ``product.updated`` and the webhook goes
   out to the receiver. Timed from the change in the store to the webhook's arrival.
3. The poll, for comparison: a pass run *immediately* after the change, then the webhook
   (a real poll waits up to INTEGRATION_SYNC_INTERVAL, 300 s by default, before that).

Changes are made one at a time (each waits for its webhook). Prints p50/p95 and ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--database", help="SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--duplicates", action="store_true", help="the store posts every event twice")
    args = parser.parse_args()

    import requests
    from cryptography.fernet import Fernet
    from sqlalchemy import func, select

    from bench._db import fresh_schema
    from integration import create_app, jobs
    from integration.events import Event
    from integration.extensions import db
    from integration.feeds import sync
    from integration.intake import subscriptions
    from integration.models import StoreLink
    from integration.sandbox import SandboxState, create_sandbox
    from integration.sandbox.state import Token, random_string
    from integration.webhooks import dispatch
    from integration.webhooks import service as webhooks
    from tests.receiver import Receiver
    from tests.servers import Served

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    folder = tempfile.mkdtemp(prefix="bench-intake-")
    os.environ["INTEGRATION_INSTANCE_PATH"] = folder
    app = create_app({"SQLALCHEMY_DATABASE_URI": args.database or f"sqlite:///{folder}/bench.sqlite",
                      "SECRET_KEY": "b" * 64, "ENCRYPTION_KEYS": (Fernet.generate_key().decode(),),
                      "ALLOWED_STORE_HOSTS": ("127.0.0.1",), "ALLOWED_WEBHOOK_HOSTS": ("127.0.0.1",),
                      "JOBS_AUTOSTART": False, "SYNC_TICK": 3600.0, "INTAKE_RATE_LIMIT": "100000 per minute",
                      "INTAKE_ASYNC_EVENTS": ("catalog.product.updated",)})
    fresh_schema(app)

    state = SandboxState(products=args.products, async_events=True)
    state.async_events.duplicates = args.duplicates
    integration = state.add_integration("Bench")
    integration.token = Token("access", random_string(), random_string(), "")
    integration.status = "Active"
    store = Served(create_sandbox(state))
    ours = Served(app)
    app.config["PUBLIC_URL"] = ours.url
    receiver, floor = Receiver(), Receiver()
    with app.app_context():
        link = StoreLink(consumer_key=integration.consumer_key, consumer_secret=integration.consumer_secret,
                         base_url=store.url + "/", store_host="127.0.0.1", status="linked",
                         access_token=integration.token.token, access_token_secret=integration.token.secret)
        db.session.add(link)
        db.session.commit()
        link_id = link.id
        webhooks.add(receiver.url, ["product.updated"])
        # The floor's subscription first: the store posts to it before it posts to us.
        state.async_events.subscribe({"asyncEvent": {"event_name": "catalog.product.updated",
                                                     "recipient_url": floor.url, "verification_token": "floor"}})
        subscriptions.after_link(link_id, ours.url)
        assert sync.sync(link_id, "products").state == "finished"
    jobs.start(app)
    skus = list(state.products)

    def change(i: int, *, pushed: bool) -> float:
        sku = skus[i % len(skus)]
        before, floor_before = len(receiver.received), len(floor.received)
        state.async_events_module = pushed
        started = time.monotonic()
        answer = requests.put(f"{store.url}/sandbox/products/{sku}", json={"price": 1000 + i + (0.5 if pushed else 0)},
                              timeout=10)
        answer.raise_for_status()
        if not pushed:
            with app.app_context():
                sync.sync(link_id, "products")
        deadline = time.monotonic() + 30
        while len(receiver.received) == before and time.monotonic() < deadline:
            time.sleep(0.002)
        assert len(receiver.received) == before + 1, "no webhook within 30 s"
        if pushed:
            while len(floor.received) == floor_before and time.monotonic() < deadline:
                time.sleep(0.002)
            floors.append(floor.received[-1].at - started)
        return receiver.received[-1].at - started

    floors: list[float] = []
    pushed = [change(i, pushed=True) for i in range(args.changes)]
    polled = [change(args.changes + i, pushed=False) for i in range(max(10, args.changes // 5))]
    time.sleep(1.0)
    with app.app_context():
        updated = db.session.scalar(select(func.count()).select_from(Event).where(Event.type == "product.updated"))
    jobs.stop(app)
    jobs.call_in_app(app, dispatch.run)

    ms = lambda s: f"{s * 1000:.1f} ms"  # noqa: E731
    print(f"database: {app.config['SQLALCHEMY_DATABASE_URI'].split(':')[0]}; "
          f"{args.changes} pushed changes{' (each posted twice)' if args.duplicates else ''}")
    print(f"floor     store POST -> plain receiver          p50 {ms(pct(floors, .5))}  p95 {ms(pct(floors, .95))}")
    print(f"pushed    change -> our webhook delivered        p50 {ms(pct(pushed, .5))}  p95 {ms(pct(pushed, .95))}"
          f"  ({pct(pushed, .5) / pct(floors, .5):.1f}x the floor at p50)")
    print(f"polled    change -> poll run at once -> webhook  p50 {ms(pct(polled, .5))}  p95 {ms(pct(polled, .95))}"
          f"  (+ up to the sync interval, {app.config.get('SYNC_INTERVAL', 300):.0f} s by default)")
    print(f"events    {updated} product.updated for {len(pushed) + len(polled)} changes; receiver got "
          f"{len(receiver.received)}; mean pushed {ms(statistics.mean(pushed))}")
    assert updated == len(pushed) + len(polled) == len(receiver.received)
    for served in (store, ours):
        served.stop()
    receiver.stop()
    floor.stop()


if __name__ == "__main__":
    main()
