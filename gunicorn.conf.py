"""gunicorn settings (read automatically by `gunicorn app:app` from this folder).

Threads matter here: a token exchange waits on the store for up to INTEGRATION_STORE_DEADLINE,
and Magento gives our callback only 5 seconds, so a worker must not be blocked by one
slow store. Override with GUNICORN_* variables or command-line flags.
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", max(2, multiprocessing.cpu_count())))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60
graceful_timeout = 20
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
# The TLS proxy in front sets X-Forwarded-Proto; only trust it from these addresses.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_worker_init(worker):
    # Background jobs of the embedded default (no INTEGRATION_REDIS_URL) start with each
    # worker rather than at its first request, so pending webhooks go out after a restart.
    from integration import jobs

    jobs.start(worker.wsgi)
