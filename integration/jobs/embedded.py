"""The embedded engine: a few threads in the app's own process (no Redis).

Why threads and not a separate process: the jobs that run here (webhook deliveries) wait on
the network and the database almost all the time, and release the interpreter lock while
they wait; ``bench/webhooks.py`` measures the callback's latency while 5,000 deliveries go
out. A separate process would need a second queue between the processes (Redis is exactly
what this mode does without) and a supervisor. CPU-bound jobs (parsing large catalogues)
must run on RQ workers instead.

Each process runs its own clock for the periodic tasks; they claim their work in the
database, so several processes (gunicorn workers) share it safely.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import RETRY_INTERVALS, call_in_app, process_id, resolve

log = logging.getLogger("integration.jobs")


class EmbeddedEngine:
    def __init__(self, jobs, workers: int = 2):
        self.jobs = jobs
        self.workers = max(1, workers)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid: int | None = None
        self._clock: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wakeup = threading.Condition(self._lock)
        self._timers: list[tuple[float, int, tuple]] = []  # (when, seq, (path, args, kwargs, retries_left, intervals))
        self._seq = itertools.count()
        self._next_tick: dict[str, float] = {}
        self._running: set[str] = set()   # periodic tasks queued or running
        self._again: set[str] = set()     # woken while running: run once more afterwards
        self._backlog: list[tuple] = []   # enqueued before start()

    # --- lifecycle ----------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._pool is not None and self._pid == process_id()

    def start(self) -> None:
        if self.started:  # the common case, on every request: no lock
            return
        with self._lock:
            if self.started:
                return
            # After a fork the parent's threads are gone: start afresh in this process.
            self._pid = process_id()
            self._stopping = threading.Event()  # the previous clock, if any, keeps its own
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="jobs")
            now = time.monotonic()
            self._next_tick = {name: now for name in self.jobs.periodic}  # sweep at start-up
            self._clock = threading.Thread(target=self._run_clock, args=(self._stopping,), name="jobs-clock",
                                           daemon=True)
            self._clock.start()
            backlog, self._backlog = self._backlog, []
        for item in backlog:
            self._submit(*item)

    def stop(self, wait: bool = True) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._stopping.set()
            self._wakeup.notify_all()
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)

    # --- the interface --------------------------------------------------------------

    def enqueue(self, path: str, args, kwargs, retries: int, intervals=RETRY_INTERVALS, key=None) -> None:
        item = (path, tuple(args), dict(kwargs), retries, tuple(intervals) or RETRY_INTERVALS)
        if not self.started:
            if self.jobs.app.config.get("JOBS_AUTOSTART"):
                self.start()
            else:
                with self._lock:
                    self._backlog.append(item)
                return
        self._submit(*item)

    def pending(self, keys: set[str]) -> set[str]:
        """Queues live in each process's memory: another process's entries cannot be seen from
        here, and a process that restarted has no queue left to find them in."""
        return keys

    def wake(self, name: str) -> None:
        if self.started and name in self.jobs.periodic:
            self._run_periodic(name)

    # --- internals ------------------------------------------------------------------

    def _submit(self, path, args, kwargs, retries_left, intervals) -> None:
        pool = self._pool
        if pool is None:
            return
        try:
            pool.submit(self._run_job, path, args, kwargs, retries_left, intervals)
        except RuntimeError:  # shutting down
            pass

    def _run_job(self, path, args, kwargs, retries_left, intervals) -> None:
        try:
            call_in_app(self.jobs.app, resolve(path), args, kwargs)
        except Exception:  # noqa: BLE001 - a job's failure must not kill the runner
            if retries_left > 0:
                delay = intervals[0]
                log.warning("job %s failed; retrying in %s s", path, delay, exc_info=True)
                self._later(delay, (path, args, kwargs, retries_left - 1, intervals[1:] or intervals[-1:]))
            else:
                log.exception("job %s failed", path)

    def _later(self, delay: float, item: tuple) -> None:
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), item))
            self._wakeup.notify_all()

    def _run_periodic(self, name: str) -> None:
        with self._lock:
            if name in self._running:
                self._again.add(name)
                return
            self._running.add(name)
            pool = self._pool
        if pool is None:
            return
        try:
            pool.submit(self._periodic_body, name)
        except RuntimeError:
            with self._lock:
                self._running.discard(name)

    def _periodic_body(self, name: str) -> None:
        while True:
            try:
                call_in_app(self.jobs.app, self.jobs.periodic[name].func)
            except Exception:  # noqa: BLE001
                log.exception("periodic task %s failed", name)
            with self._lock:
                if name in self._again and not self._stopping.is_set():
                    self._again.discard(name)
                    continue
                self._running.discard(name)
                return

    def _run_clock(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            now = time.monotonic()
            due_tasks, due_jobs = [], []
            with self._lock:
                for name, task in self.jobs.periodic.items():
                    if self._next_tick.get(name, now) <= now:
                        due_tasks.append(name)
                        self._next_tick[name] = now + task.interval
                while self._timers and self._timers[0][0] <= now:
                    due_jobs.append(heapq.heappop(self._timers)[2])
                upcoming = list(self._next_tick.values()) + [t[0] for t in self._timers[:1]]
                wait = max(0.01, min(upcoming) - now) if upcoming else 1.0
            for name in due_tasks:
                self._run_periodic(name)
            for item in due_jobs:
                self._submit(*item)
            with self._lock:
                if not stopping.is_set():
                    self._wakeup.wait(timeout=min(wait, 1.0))
