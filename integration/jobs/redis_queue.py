"""The RQ engine: jobs in a Redis queue, run by ``flask --app app worker`` processes.

Periodic tasks: every worker runs a small clock, and for each tick of each task the one
worker that wins ``SET ... NX PX interval`` in Redis enqueues it, so a task runs once per
interval across all hosts however many workers there are. A task is queued at most once at
a time (``wake`` and ticks coalesce); a key left by a worker killed at the wrong moment
expires by itself.
"""

from __future__ import annotations

import logging

from flask import current_app
from redis import Redis
from rq import Queue, Retry
from rq.job import Job, JobStatus

from . import RETRY_INTERVALS, call_in_app, process_id, resolve

log = logging.getLogger("integration.jobs")

QUEUE = "integration"
KEY_PREFIX = "integration:jobs:"
#: A job running longer than this is stopped by RQ and counts as failed (``INTEGRATION_JOBS_TIMEOUT``).
#: Long work (a first pass over a large catalogue) goes on in a new job well before it.
JOB_TIMEOUT = 600
#: The states of an RQ job that will still run (or is running).
HELD = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
#: How long a "task is queued" marker may outlive a worker that died holding it.
QUEUED_MARKER_TTL = 300


class RedisEngine:
    def __init__(self, jobs):
        self.jobs = jobs
        self.redis = Redis.from_url(jobs.redis_url, socket_timeout=10, socket_connect_timeout=5,
                                    health_check_interval=30)
        self.queue = Queue(QUEUE, connection=self.redis)

    def start(self) -> None:
        """Web processes only enqueue; ``flask --app app worker`` runs the jobs."""

    def stop(self, wait: bool = True) -> None:
        self.redis.close()

    def enqueue(self, path: str, args, kwargs, retries: int, intervals=RETRY_INTERVALS, key=None) -> None:
        retry = Retry(max=retries, interval=[int(i) for i in intervals]) if retries else None
        self.queue.enqueue(run_function, path, tuple(args), dict(kwargs), retry=retry, job_timeout=self.timeout,
                           description=path, job_id=key)

    @property
    def timeout(self) -> int:
        return int(self.jobs.app.config.get("JOBS_TIMEOUT") or JOB_TIMEOUT)

    def pending(self, keys: set[str]) -> set[str]:
        ordered = sorted(keys)
        found = Job.fetch_many(ordered, connection=self.redis) if ordered else []
        return {key for key, job in zip(ordered, found) if job is not None and job.get_status(refresh=False) in HELD}

    def wake(self, name: str) -> None:
        if name not in self.jobs.periodic:
            return
        if self.redis.set(f"{KEY_PREFIX}queued:{name}", process_id(), nx=True, ex=QUEUED_MARKER_TTL):
            self.queue.enqueue(run_periodic, name, job_timeout=self.timeout, description=f"periodic {name}",
                               result_ttl=0)

    def tick(self) -> None:
        """Enqueue every periodic task whose interval has passed (once across all workers)."""
        for task in self.jobs.periodic.values():
            if self.redis.set(f"{KEY_PREFIX}tick:{task.name}", process_id(), nx=True,
                              px=max(int(task.interval * 1000), 1)):
                self.wake(task.name)


def run_function(path: str, args, kwargs):
    """What an RQ job runs: the function, in a fresh app context of the worker's app."""
    return call_in_app(current_app._get_current_object(), resolve(path), args, kwargs)


def run_periodic(name: str) -> None:
    jobs = current_app.extensions["jobs"]
    # Cleared before running: a wake while this runs queues one more run, which then sees
    # whatever was committed after this run looked.
    jobs.runner().redis.delete(f"{KEY_PREFIX}queued:{name}")
    call_in_app(current_app._get_current_object(), jobs.periodic[name].func)
