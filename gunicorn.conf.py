"""gunicorn settings (read automatically by `gunicorn app:app` from this folder).

Threads matter here: a token exchange waits on the store for up to INTEGRATION_STORE_DEADLINE,
and Magento gives our callback only 5 seconds, so a worker must not be blocked by one
slow store. Override with GUNICORN_* variables or command-line flags.
"""

import multiprocessing
import os

from gunicorn.glogging import Logger

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", max(2, multiprocessing.cpu_count())))
# gthread plus a lane of threads (GUNICORN_CALLBACK_THREADS, default 4) that only Magento's
# callback uses, so that a burst of logins cannot make it queue (integration/serving.py).
worker_class = "integration.serving.CallbackLaneWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60
graceful_timeout = 20
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
# The TLS proxy in front sets X-Forwarded-Proto; only trust it from these addresses.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def post_worker_init(worker):
    # Background jobs of the embedded default (no INTEGRATION_REDIS_URL) start with each
    # worker rather than at its first request, so pending webhooks go out after a restart, and
    # run in a job process of the worker at a lower priority (integration/jobs/process.py).
    from integration import jobs

    jobs.start(worker.wsgi, own_process=True)


def worker_exit(server, worker):
    # API audit rows still buffered (INTEGRATION_API_AUDIT_FLUSH_SECONDS) go in as the worker stops,
    # before the interpreter waits on its threads (atexit does it too, later, for other servers).
    from integration import jobs
    from integration.apikeys import usage

    usage.flush_all()
    # The job process ends with its worker, and the worker waits for it: a stopped server leaves
    # no job running behind it.
    jobs.stop(worker.wsgi)


class _MaskingLogger(Logger):
    """Access-log lines with credentials masked: the API refuses a key sent in a query
    string, but the request line carrying it is logged all the same."""

    def atoms(self, resp, req, environ, request_time):
        from integration.logs import redact  # in the worker, where the app is loaded anyway

        atoms = super().atoms(resp, req, environ, request_time)
        for name in ("r", "q", "U"):
            if isinstance(atoms.get(name), str):
                atoms[name] = redact(atoms[name])
        return atoms


logger_class = _MaskingLogger


def child_exit(server, worker):
    # With PROMETHEUS_MULTIPROC_DIR set, a dead worker's live gauges must not be summed any more.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
