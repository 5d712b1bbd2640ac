"""The embedded runner in a process of its own, below the web worker's priority (gunicorn only).

Why: without Redis, background jobs (syncs, probes, deliveries, exports) ran on threads of each
web worker, sharing its interpreter lock with the threads that answer logins, pages and Magento.
A thread cannot yield that lock by priority (a niced job thread starved), but a process can yield
the CPU: each worker starts one job process at ``INTEGRATION_JOBS_NICE`` (default 10) and sends it
the jobs its requests enqueue; the process runs them, and the periodic tasks, on the same
``EmbeddedEngine`` the threads used (``INTEGRATION_JOBS_THREADS`` threads). ``INTEGRATION_JOBS_PROCESS=0``
keeps the threads.

Until the process is ready, and while it is gone (it is started again), the worker runs what is
enqueued on its own threads, as before: nothing is refused. What a killed job process held is
lost as a killed worker's was; the periodic tasks find their work in the database again.

    python -m integration.jobs.process FD -- <gunicorn's arguments>
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import sys
import threading

from ..children import READY, Child, channel_and_args, load_app

log = logging.getLogger("integration.jobs")

#: The largest job message sent to the process; a larger one runs in the worker.
MAX_MESSAGE = 64 * 1024
#: How long a stopping worker waits for its job process to finish the jobs it runs (their leases
#: let another process take up what is cut short).
STOP_WAIT = 10.0


class ProcessEngine:
    """The worker's side: the jobs interface, forwarded to its job process."""

    def __init__(self, jobs, fallback):
        self.jobs = jobs
        self.fallback = fallback  # this process's own threads (EmbeddedEngine)
        self._lock = threading.Lock()
        self._child = Child("integration.jobs.process", "job process", log)
        self._pid: int | None = None

    @property
    def started(self) -> bool:
        return self._pid == os.getpid()

    def start(self) -> None:
        if self.started:  # on every request: no lock
            return
        with self._lock:
            if not self.started:
                self._pid = os.getpid()
                self._child.start()

    def _send(self, message: tuple) -> bool:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_MESSAGE:
            return False
        with self._lock:
            return self.started and self._child.usable() and self._child.send(data)

    # --- the interface (jobs.__init__) ------------------------------------------------

    def enqueue(self, path, args, kwargs, retries, intervals, key=None) -> None:
        if not self._send(("enqueue", path, tuple(args), dict(kwargs), retries, tuple(intervals))):
            self.fallback.enqueue(path, args, kwargs, retries, intervals, key=key)

    def pending(self, keys: set[str]) -> set[str]:
        return self.fallback.pending(keys)  # in process memory either way: not visible from here

    def wake(self, name: str) -> None:
        if not self._send(("wake", name)):
            self.fallback.wake(name)

    def stop(self, wait: bool = True) -> None:
        with self._lock:
            # The process finishes what it runs, then ends; a worker that stops waits for that (bounded).
            self._child.close(wait=STOP_WAIT if wait else 0.0)
            self._pid = None
        self.fallback.stop(wait=wait)


def run(channel: socket.socket, gunicorn_args: list[str]) -> None:
    """The process's side: load the app, run its embedded engine, take jobs from the worker."""
    from . import _state, settle_collector

    _cfg, app = load_app(gunicorn_args)
    os.nice(max(0, app.config["JOBS_NICE"]))  # before the engine starts its threads: they inherit it
    engine = _state(app).runner()  # the embedded engine: nothing set this process up to forward
    settle_collector()  # before the engine starts: its threads' first jobs find the collector settled
    engine.start()
    channel.sendall(READY)
    log.info("job process %s ready for worker %s (nice %s)", os.getpid(), os.getppid(), os.nice(0))
    try:
        while True:
            try:
                data = channel.recv(MAX_MESSAGE)
            except ConnectionError:
                data = b""
            if not data:  # the worker has gone
                break
            try:
                kind, *rest = pickle.loads(data)  # from our own worker, over a socket pair: trusted
            except Exception:  # noqa: BLE001
                log.exception("unreadable job message ignored")
                continue
            if kind == "enqueue":
                path, args, kwargs, retries, intervals = rest
                engine.enqueue(path, args, kwargs, retries, intervals)
            elif kind == "wake":
                engine.wake(rest[0])
    finally:
        engine.stop(wait=False)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends with its worker (see callback_process)
    run(*channel_and_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
