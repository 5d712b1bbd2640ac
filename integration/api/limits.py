"""The API's rate limit: ``INTEGRATION_API_RATE_LIMIT`` per key (per address for requests
without a valid key), a fixed window counted in the app's rate-limit storage: process memory,
or Redis when configured, where every worker and host shares the count. While Redis is
unreachable, requests are counted in this process (logged) and Redis is tried again after a
back-off, as Flask-Limiter does for the other limits.

Not a Flask-Limiter limit on the blueprint: its passes over every request (which limits apply,
its request context, its headers) cost the proxy more CPU than the count itself, and its
headers would stretch the ``Retry-After`` of a store-busy 429 to the end of the key's window.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from flask import Flask, current_app
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import Storage
from limits.strategies import FixedWindowRateLimiter

from ..ratelimit_memory import SweptMemoryStorage

log = logging.getLogger("integration.api")

#: Seconds before an unreachable storage is tried again, doubling up to the last.
RETRY_STORAGE_AFTER = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
_UNREACHABLE = (StorageError, redis.RedisError, OSError)


class RateLimit:
    """One limit, counted per caller in ``storage``."""

    def __init__(self, rate: str, storage: Storage):
        self.item: RateLimitItem = parse(rate)
        self._shared = FixedWindowRateLimiter(storage)
        self._local = FixedWindowRateLimiter(SweptMemoryStorage())
        self._lock = threading.Lock()
        self._failures = 0
        self._retry_at = 0.0  # while in the future, the shared storage is not asked

    def hit(self, caller: str) -> int | None:
        """Count one request of ``caller``: ``None`` if it is within the limit, otherwise
        the seconds until the window ends (for ``Retry-After``)."""
        if self._failures and time.monotonic() < self._retry_at:
            return self._count(self._local, caller)
        try:
            answer = self._count(self._shared, caller)
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return self._count(self._local, caller)
        if self._failures:
            with self._lock:
                self._failures = 0
            log.info("rate-limit storage reachable again: API requests counted there")
        return answer

    def _count(self, strategy: FixedWindowRateLimiter, caller: str) -> int | None:
        if strategy.hit(self.item, "api", caller):
            return None
        reset_at = strategy.get_window_stats(self.item, "api", caller).reset_time
        return max(int(reset_at - time.time()), 1)

    def _unreachable(self, exc: Exception) -> None:
        with self._lock:
            if not self._failures:
                log.warning("rate-limit storage unreachable (%s): counting API requests in this process",
                            type(exc).__name__)
            wait = RETRY_STORAGE_AFTER[min(self._failures, len(RETRY_STORAGE_AFTER) - 1)]
            self._failures += 1
            self._retry_at = time.monotonic() + wait


def init_app(app: Flask, storage: Storage) -> None:
    app.extensions["api_rate_limit"] = RateLimit(app.config["API_RATE_LIMIT"], storage)


def current() -> RateLimit:
    return current_app.extensions["api_rate_limit"]
