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
    import gc

    from integration import jobs

    jobs.start(worker.wsgi, own_process=True)
    # What is loaded by now (the app, its libraries) lives as long as the worker: kept out of the
    # collector's way, as the job workers do, so a full collection no longer walks all of it.
    gc.freeze()


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

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        try:
            self.access_log.info(self.cfg.access_log_format, _Atoms(self, resp, req, environ, request_time))
        except Exception:  # as gunicorn: a line that cannot be formatted is an error logged, not raised
            import traceback

            self.error(traceback.format_exc())


#: Atoms read from the environ as they are (its variable, and the default when it is missing).
_FROM_ENVIRON = {"h": ("REMOTE_ADDR", "-"), "m": ("REQUEST_METHOD", None), "H": ("SERVER_PROTOCOL", None),
                 "f": ("HTTP_REFERER", "-"), "a": ("HTTP_USER_AGENT", "-")}


class _Atoms(dict):
    """gunicorn's access-log atoms of one request, each worked out when the format names it:
    gunicorn builds them all (one for every request header, response header and environ
    variable) and copies them again, a third of a worker's own CPU a request. The same values
    under gunicorn's rules (``atoms``, ``SafeAtoms``): ``"`` escaped, ``-`` for an atom that does
    not exist, ``{…}`` names in any case; the request line, path and query masked."""

    def __init__(self, logger, resp, req, environ, request_time):
        super().__init__(l="-")  # logging formats with a mapping only when it is not empty
        self._logger, self._resp, self._req, self._environ, self._time = logger, resp, req, environ, request_time

    def __getitem__(self, key):
        value = self._atom(key)
        return value.replace('"', '\\"') if isinstance(value, str) else value

    def _atom(self, key):
        environ, resp, took = self._environ, self._resp, self._time
        if key.startswith("{"):
            key = key.lower()
            pairs = {"i": getattr(self._req, "headers", self._req), "o": resp.headers, "e": environ}.get(key[-1:], ())
            if hasattr(pairs, "items"):
                pairs = pairs.items()
            found = "-"
            for name, value in pairs:  # the last of a name, as gunicorn's dict of them keeps
                if "{%s}%s" % (name.lower(), key[-1]) == key:
                    found = value
            return found
        if key in ("r", "U", "q"):
            from integration.logs import redact_url  # in the worker, where the app is loaded anyway

            value = ("%s %s %s" % (environ["REQUEST_METHOD"], environ["RAW_URI"], environ["SERVER_PROTOCOL"])
                     if key == "r" else environ.get("PATH_INFO" if key == "U" else "QUERY_STRING"))
            return redact_url(value) if isinstance(value, str) else value
        if key in _FROM_ENVIRON:
            return environ.get(*_FROM_ENVIRON[key])
        sent = getattr(resp, "sent", None)
        if key == "l":
            return "-"
        if key == "u":
            return self._logger._get_user(environ) or "-"
        if key == "t":
            return self._logger.now()
        if key == "s":
            return resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        if key == "b":
            return sent is not None and str(sent) or "-"
        if key == "B":
            return sent
        if key == "T":
            return took.seconds
        if key == "D":
            return took.seconds * 1000000 + took.microseconds
        if key == "M":
            return took.seconds * 1000 + int(took.microseconds / 1000)
        if key == "L":
            return "%d.%06d" % (took.seconds, took.microseconds)
        if key == "p":
            return "<%s>" % os.getpid()
        return "-"


logger_class = _MaskingLogger


def child_exit(server, worker):
    # With PROMETHEUS_MULTIPROC_DIR set, a dead worker's live gauges must not be summed any more.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
