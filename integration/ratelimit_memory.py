"""Rate-limit counters in process memory, without a thread per request.

limits' ``MemoryStorage`` drops expired counters on a timer thread that lives 10 ms and is
started again by the next hit: under steady traffic nearly one new thread per request, about
1 ms of CPU each (measured on the signing proxy). Here the same sweep runs inline, at most once
a second. Limits stay exact: a counter's own expiry is checked whenever it is read, as before;
the sweep only frees the memory of counters nobody reads any more.
"""

from __future__ import annotations

import threading
import time

from limits.storage import MemoryStorage

SCHEME = "swept-memory"
SWEEP_EVERY = 1.0


class SweptMemoryStorage(MemoryStorage):
    STORAGE_SCHEME = [SCHEME]  # limits registers the class under this URI scheme

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options):
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._sweeping = threading.Lock()
        self._next_sweep = time.monotonic() + SWEEP_EVERY

    # MemoryStorage calls this (name-mangled) before every hit to start its timer thread.
    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now >= self._next_sweep and self._sweeping.acquire(blocking=False):
            try:
                self._next_sweep = now + SWEEP_EVERY
                self._MemoryStorage__expire_events()
            finally:
                self._sweeping.release()


def storage_uri(configured: str | None) -> str:
    """The storage for Flask-Limiter: the configured one (Redis), or process memory swept inline."""
    if not configured or configured == "memory://":
        return f"{SCHEME}://"
    return configured
