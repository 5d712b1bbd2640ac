"""How many calls may be in flight to one store at once, so that many callers (API clients,
later the change feed and exports) cannot flood one merchant.

``hold(store_id)`` waits up to ``wait`` seconds for a slot, then raises ``StoreBusy``. Two
implementations: in this process only (the embedded default: each worker process counts
for itself), and in Redis when ``INTEGRATION_REDIS_URL`` is set, shared by every worker and
host. A Redis slot is a lease that expires, so a process that dies holding one frees it.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask, current_app

log = logging.getLogger("integration.store_cap")


class StoreBusy(Exception):
    """Every slot for this store stayed taken for the whole wait."""

    def __init__(self, store_id: int, retry_after: int = 1):
        super().__init__(f"store {store_id} has too many calls in flight")
        self.store_id, self.retry_after = store_id, retry_after


class StoreCap:
    def __init__(self, limit: int, wait: float):
        self.limit, self.wait = limit, wait

    @contextmanager
    def hold(self, store_id: int) -> Iterator[None]:
        release = self.acquire(store_id)
        try:
            yield
        finally:
            release()

    def acquire(self, store_id: int) -> Callable[[], None]:
        """Take a slot (waiting up to ``wait`` s); returns what gives it back."""
        raise NotImplementedError


class LocalCap(StoreCap):
    """Slots counted in this process."""

    def __init__(self, limit: int, wait: float):
        super().__init__(limit, wait)
        self._semaphores: dict[int, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def acquire(self, store_id: int) -> Callable[[], None]:
        with self._lock:
            semaphore = self._semaphores.get(store_id)
            if semaphore is None:
                semaphore = self._semaphores[store_id] = threading.BoundedSemaphore(self.limit)
        if not semaphore.acquire(timeout=self.wait):
            raise StoreBusy(store_id)
        return semaphore.release


# Drop expired leases, then take one if fewer than ARGV[1] are held; Redis's own clock, so
# hosts with skewed clocks agree on what has expired.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""


class RedisCap(StoreCap):
    """Slots as leases in a Redis sorted set per store (member: a random token, score: expiry).

    While Redis is unreachable, slots are counted in this process instead (logged), so an
    outage of Redis does not stop every call.
    """

    def __init__(self, client, limit: int, wait: float, lease_seconds: float, *, prefix: str = "storecap:"):
        super().__init__(limit, wait)
        self.client = client
        self.lease_ms = int(lease_seconds * 1000)
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._fallback = LocalCap(limit, wait)
        self._warned_at = 0.0

    def acquire(self, store_id: int) -> Callable[[], None]:
        import redis

        key, token = f"{self.prefix}{store_id}", secrets.token_hex(8)
        deadline = time.monotonic() + self.wait
        pause = 0.005
        try:
            while not self._acquire(keys=[key], args=[self.limit, self.lease_ms, token]):
                if time.monotonic() + pause > deadline:
                    raise StoreBusy(store_id)
                time.sleep(pause * random.uniform(0.5, 1.5))
                pause = min(pause * 2, 0.05)
        except redis.RedisError as exc:
            self._warn(exc)
            return self._fallback.acquire(store_id)

        def release() -> None:
            try:
                self.client.zrem(key, token)
            except redis.RedisError as exc:  # the lease expires by itself
                self._warn(exc)

        return release

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            log.warning("Redis unreachable for the per-store cap (%s); counting per process meanwhile",
                        type(exc).__name__)


def init_app(app: Flask) -> None:
    cfg = app.config
    limit, wait = int(cfg["STORE_CONCURRENCY"]), float(cfg["STORE_CAP_WAIT"])
    if cfg.get("REDIS_URL"):
        import redis

        client = redis.Redis.from_url(cfg["REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=1.0)
        # A lease outlives the longest call it guards: the whole deadline, twice, plus slack.
        cap: StoreCap = RedisCap(client, limit, wait, lease_seconds=2 * float(cfg["STORE_TIMEOUT"]) + 10)
    else:
        cap = LocalCap(limit, wait)
    app.extensions["store_cap"] = cap


def current() -> StoreCap:
    return current_app.extensions["store_cap"]
