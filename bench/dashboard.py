"""Dashboard benchmark: server time per page of the store list with 10,000 links.

    .venv/bin/python bench/dashboard.py [--links 10000] [--database-url URL]

Seeds the links (and their owners) into a fresh database, logs in as an admin and as a
member, and times GET / (first page, a deep page, a status filter, a search) through the
WSGI app, so only server time is measured. Target: under 50 ms a page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    from cryptography.fernet import Fernet
    from sqlalchemy import insert

    from bench._db import fresh_schema

    from integration import create_app
    from integration.extensions import db
    from integration.models import StoreLink, User, utcnow

    parser = argparse.ArgumentParser()
    parser.add_argument("--links", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    url = args.database_url or f"sqlite:///{tmp}/bench.sqlite"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "b" * 64, "WTF_CSRF_ENABLED": False,
                      "ENCRYPTION_KEYS": (Fernet.generate_key().decode(),), "LOGIN_RATE_LIMIT": "10000/minute",
                      "ACCOUNT_RATE_LIMIT": "10000/minute", "REQUIRE_2FA": "off"})  # the store list, not enrolment
    fresh_schema(app)
    with app.app_context():
        admin = User(email="admin@example.com", role="admin")
        member = User(email="member@example.com")
        for u in (admin, member):
            u.set_password("benchmark password")
            db.session.add(u)
        db.session.commit()
        secret = app.extensions["vault"].encrypt("s" * 32)
        now = utcnow()
        statuses = ["linked"] * 7 + ["pending", "failed", "revoked"]
        rows = [{"consumer_key": f"{i:032d}", "consumer_secret": secret, "base_url": f"https://shop{i}.example.com/",
                 "store_host": f"shop{i}.example.com", "status": statuses[i % 10],
                 "owner_id": member.id if i % 50 == 0 else admin.id, "created_at": now, "updated_at": now}
                for i in range(args.links)]
        db.session.execute(insert(StoreLink.__table__), rows)  # encrypted value inserted as is
        db.session.commit()
    print(f"{args.links} links on {url.split(':')[0]}")
    for email in ("admin@example.com", "member@example.com"):
        client = app.test_client()
        client.post("/auth/login", data={"email": email, "password": "benchmark password"})
        for label, path in (("first page", "/"), ("page 100", "/?page=100"), ("status=failed", "/?status=failed"),
                            ("search", "/?q=shop12")):
            client.get(path)  # warm up
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200
            times.sort()
            print(f"{email.split('@')[0]:7} {label:14} median {statistics.median(times):5.1f} ms  "
                  f"p95 {times[int(len(times) * 0.95) - 1]:5.1f} ms")


if __name__ == "__main__":
    main()
