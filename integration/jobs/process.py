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
import time

from ..children import READY, channel_and_args, load_app, spawn

log = logging.getLogger("integration.jobs")

#: The largest job message sent to the process; a larger one runs in the worker.
MAX_MESSAGE = 64 * 1024


class ProcessEngine:
    """The worker's side: the jobs interface, forwarded to its job process."""

    #: A process that ended is started again at the next job, but not sooner than this.
    RESTART_AFTER = 5.0

    def __init__(self, jobs, fallback):
        self.jobs = jobs
        self.fallback = fallback  # this process's own threads (EmbeddedEngine)
        self._lock = threading.Lock()
        self._proc = None
        self._channel: socket.socket | None = None
        self._ready = False
        self._pid: int | None = None
        self._started_at = float("-inf")

    @property
    def started(self) -> bool:
        return self._pid == os.getpid()

    def start(self) -> None:
        if self.started:  # on every request: no lock
            return
        with self._lock:
            if not self.started:
                self._pid = os.getpid()
                self._spawn()

    def _spawn(self) -> None:
        try:
            self._proc, self._channel = spawn("integration.jobs.process")
        except OSError:
            log.exception("could not start the job process; jobs run on this worker's threads")
            self._proc = self._channel = None
        self._ready = False
        self._started_at = time.monotonic()

    def _is_ready(self) -> bool:
        """Whether the process has loaded the app (it says so once); notices it gone."""
        if self._ready:
            return True
        if self._channel is None:
            return False
        try:
            said = self._channel.recv(64)
        except BlockingIOError:
            return False
        except OSError:
            said = b""
        if said == READY:
            self._ready = True
            return True
        self._forget()
        return False

    def _forget(self) -> None:
        log.warning("the job process ended (exit status %s); jobs run on this worker's threads until it is back",
                    self._proc.poll() if self._proc else None)
        if self._channel is not None:
            self._channel.close()
        self._channel, self._proc, self._ready = None, None, False

    def _send(self, message: tuple) -> bool:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_MESSAGE:
            return False
        with self._lock:
            if self._pid != os.getpid():
                return False
            if self._channel is None and time.monotonic() - self._started_at >= self.RESTART_AFTER:
                self._spawn()
            if not self._is_ready():
                return False
            try:
                self._channel.send(data, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False  # its queue is full
            except OSError:
                self._forget()
                return False
            return True

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
            if self._channel is not None:
                self._channel.close()  # the process finishes what it runs, then ends
            self._channel, self._proc, self._ready, self._pid = None, None, False, None
        self.fallback.stop(wait=wait)


def run(channel: socket.socket, gunicorn_args: list[str]) -> None:
    """The process's side: load the app, run its embedded engine, take jobs from the worker."""
    from . import _state

    _cfg, app = load_app(gunicorn_args)
    os.nice(max(0, app.config["JOBS_NICE"]))  # before the engine starts its threads: they inherit it
    engine = _state(app).runner()  # the embedded engine: nothing set this process up to forward
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
