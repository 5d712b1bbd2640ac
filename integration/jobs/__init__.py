"""Background work: one interface, two engines.

* ``INTEGRATION_REDIS_URL`` set: jobs go to an RQ queue in Redis and run in
  ``flask --app app worker`` processes (any number, on any hosts sharing the database and
  Redis), with RQ's retries and scheduler. Web processes only enqueue.
* Otherwise (the embedded default): the same functions run on a small thread pool; under
  gunicorn in a job process of each worker at a lower priority (``process``), elsewhere
  (``flask run``, tests) inside the app's process.

Job state that users see lives in the database either way; nothing here is needed to
survive a restart (periodic tasks find their work in the database again).

    jobs.enqueue(func, *args, retries=3, **kwargs)   # func: a module-level function
    jobs.enqueue(func, *args, key="feeds-12-ab")     # an entry the caller can ask about later
    jobs.pending({"feeds-12-ab"})                     # the keys still queued, waiting or running
    jobs.periodic(app, "webhooks.dispatch", func, interval=2.0)
    jobs.wake("webhooks.dispatch")                   # run it now rather than at the next tick

Every job runs inside an app context with its own database session.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

log = logging.getLogger("integration.jobs")

#: Seconds between retries of a failed job (the last value repeats).
RETRY_INTERVALS = (10, 60, 300)
#: Allocations between two collections of the young generation in a job runner (Python's default:
#: 700). A page of records allocates tens of thousands of objects that die young by their
#: reference counts; collecting every 700 walks them anyway and moves survivors on, and the
#: older generations' collections follow.
YOUNG_GENERATION = 20_000


class JobsError(RuntimeError):
    """Background work is misconfigured (e.g. ``worker`` without Redis)."""


@dataclass(frozen=True)
class Periodic:
    name: str
    func: Callable[[], object]
    interval: float


@dataclass
class Jobs:
    """Per-app state: the engine in use and the periodic tasks registered."""

    app: Flask
    redis_url: str | None
    periodic: dict[str, Periodic] = field(default_factory=dict)
    engine: object = None
    own_process: bool = False  # the embedded engine in a job process of its own (jobs.process)

    def runner(self):
        if self.engine is None:
            if self.redis_url:
                from .redis_queue import RedisEngine

                self.engine = RedisEngine(self)
            else:
                from .embedded import EmbeddedEngine

                self.engine = EmbeddedEngine(self, workers=int(self.app.config.get("JOBS_EMBEDDED_THREADS", 2)))
                if self.own_process:
                    from .process import ProcessEngine

                    self.engine = ProcessEngine(self, fallback=self.engine)
        return self.engine


def settle_collector() -> None:
    """For a process that runs jobs, once it has loaded the app (``flask worker``, the job
    process): what is loaded by now lives as long as the process, so it is kept out of the
    collector's way (``gc.freeze``: a full collection no longer walks the whole app), and the
    young generation is collected every ``YOUNG_GENERATION`` allocations rather than 700."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION, middle, old)


def init_app(app: Flask) -> None:
    redis_url = app.config.get("JOBS_REDIS_URL")
    app.config.setdefault("JOBS_AUTOSTART", not app.testing)
    state = Jobs(app, redis_url)
    app.extensions["jobs"] = state

    if not redis_url:
        @app.before_request
        def _start_embedded():  # the first request in each process starts its runner
            if app.config["JOBS_AUTOSTART"]:
                state.runner().start()

    from .cli import worker

    app.cli.add_command(worker)


def _state(app: Flask | None = None) -> Jobs:
    return (app or current_app).extensions["jobs"]


def periodic(app: Flask, name: str, func: Callable[[], object], interval: float) -> None:
    """Run ``func`` every ``interval`` seconds: on the embedded runner in every process
    (``func`` must be safe to run concurrently), on RQ once per interval across all workers."""
    _state(app).periodic[name] = Periodic(name, func, float(interval))


def enqueue(func: Callable, *args, retries: int = 0, key: str | None = None, **kwargs) -> None:
    """Run ``func(*args, **kwargs)`` in the background, retrying up to ``retries`` times if
    it raises (after ``RETRY_INTERVALS`` seconds, the last one repeating). ``key`` (letters,
    digits, ``-``, ``_``; unique) names the queue entry for ``pending``."""
    intervals = tuple(current_app.config.get("JOBS_RETRY_INTERVALS", RETRY_INTERVALS))
    _state().runner().enqueue(func_path(func), args, kwargs, retries, intervals, key=key)


def pending(keys: set[str]) -> set[str]:
    """Which of these queue entries the runner still holds (queued, waiting for a retry, or
    running). With RQ an entry Redis lost (a restart) is not among them. The embedded runner
    holds its entries in one process and cannot see the others': it answers all of them."""
    return _state().runner().pending(set(keys))


def wake(name: str) -> None:
    """Run the periodic task ``name`` soon. Never raises: the task's next tick (here or in
    another process) does the same work, so this only saves the wait."""
    try:
        _state().runner().wake(name)
    except Exception:  # noqa: BLE001 - Redis down or similar; the tick will catch up
        log.warning("could not wake background task %s; it runs at its next tick", name, exc_info=True)


def start(app: Flask, own_process: bool = False) -> None:
    """Start this process's embedded runner (no-op with RQ: workers run the jobs). A gunicorn
    worker asks for ``own_process``: the runner then lives in a child process at a lower priority
    (``jobs.process``), unless ``INTEGRATION_JOBS_PROCESS=0``."""
    state = _state(app)
    if own_process and state.engine is None and app.config.get("JOBS_PROCESS", True):
        state.own_process = True
    state.runner().start()


def stop(app: Flask, wait: bool = True) -> None:
    state = _state(app)
    if state.engine is not None:
        state.engine.stop(wait=wait)


def func_path(func: Callable) -> str:
    path = f"{func.__module__}:{func.__qualname__}"
    if "<" in path:
        raise JobsError(f"{path} is not a module-level function; background jobs must be importable")
    return path


def resolve(path: str) -> Callable:
    import importlib

    module, _, name = path.partition(":")
    target = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def call_in_app(app: Flask, func: Callable, args=(), kwargs=None):
    """Run one job: a fresh app context, hence a fresh database session, removed afterwards."""
    from ..extensions import db

    with app.app_context():
        try:
            return func(*args, **(kwargs or {}))
        finally:
            db.session.remove()


def process_id() -> int:
    return os.getpid()
