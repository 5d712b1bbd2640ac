"""What the activation doctor costs the callback: its one extra insert per callback.

Magento waits 5 s for our answer, so the callback must stay fast. This posts N callbacks (new
consumer keys, in process through the WSGI stack, on SQLite or PostgreSQL) with the doctor's
step recorded, and N with ``record_step`` stubbed out as the baseline, interleaved in the same
run, and prints p50/p99 of each and their ratio.

    .venv/bin/python bench/doctor.py [--database-url URL] [--callbacks 400]

With a PostgreSQL URL its public schema is dropped and rebuilt (point it at a scratch database).
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

    from bench._db import fresh_schema
    from integration import create_app, doctor

    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--callbacks", type=int, default=400)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "b" * 64,
                      "ENCRYPTION_KEYS": (Fernet.generate_key().decode(),), "ALLOWED_STORE_HOSTS": ("127.0.0.1",),
                      "CALLBACK_RATE_LIMIT": "1000000 per minute", "IDENTITY_RATE_LIMIT": "1000000 per minute"})
    fresh_schema(app)
    client = app.test_client()
    real = doctor.record_step
    times: dict[str, list[float]] = {"with the doctor's step": [], "baseline (no step)": []}
    for n in range(args.callbacks * 2):
        mode = "with the doctor's step" if n % 2 else "baseline (no step)"
        doctor.record_step = real if n % 2 else (lambda *a, **k: None)
        started = time.perf_counter()
        response = client.post("/magento/callback", data={
            "oauth_consumer_key": f"k{n:031d}", "oauth_consumer_secret": "s" * 32,
            "store_base_url": "http://127.0.0.1:8080/", "oauth_verifier": "v" * 32})
        times[mode].append(time.perf_counter() - started)
        assert response.status_code == 200, response.get_data(as_text=True)
    doctor.record_step = real
    print(f"database: {url.split('://')[0]}, {args.callbacks} callbacks each")
    stats = {}
    for mode, values in times.items():
        values.sort()
        stats[mode] = (statistics.median(values), values[int(len(values) * 0.99) - 1])
        print(f"{mode:24} p50 {stats[mode][0] * 1000:6.2f} ms   p99 {stats[mode][1] * 1000:6.2f} ms")
    (p50, p99), (b50, b99) = stats["with the doctor's step"], stats["baseline (no step)"]
    print(f"ratio (step / baseline): p50 {p50 / b50:.2f}x, p99 {p99 / b99:.2f}x")


if __name__ == "__main__":
    main()
