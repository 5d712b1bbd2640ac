"""Rate-limit counters in process memory: exact limits, windows that end, no thread per hit."""

from __future__ import annotations

import threading
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from integration import ratelimit_memory
from integration.ratelimit_memory import SweptMemoryStorage


def test_memory_limits_are_exact_and_their_windows_end():
    storage = storage_from_string(ratelimit_memory.storage_uri("memory://"))
    assert isinstance(storage, SweptMemoryStorage)
    limiter, limit = FixedWindowRateLimiter(storage), parse("3 per 1 second")
    # Start at the beginning of a window so all three hits fall in it.
    time.sleep(1 - time.time() % 1)
    assert [limiter.hit(limit, "key:a") for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(limit, "key:b")  # counted per key
    time.sleep(1.05)
    assert limiter.hit(limit, "key:a")


def test_hits_start_no_threads_and_idle_counters_are_swept(monkeypatch):
    monkeypatch.setattr(ratelimit_memory, "SWEEP_EVERY", 0.2)
    storage = SweptMemoryStorage()
    limiter = FixedWindowRateLimiter(storage)
    threads = threading.active_count()
    for n in range(200):
        limiter.hit(parse("1000 per 1 second"), f"key:{n}")
    assert threading.active_count() <= threads
    assert len(storage.storage) == 200
    time.sleep(1.3)
    limiter.hit(parse("1000 per 1 second"), "key:new")  # the sweep runs inline, with a hit
    assert set(storage.storage) == {"LIMITER/key:new/1000/1/second"}


def test_dead_counters_are_swept_at_most_once_per_interval(monkeypatch):
    """The sweep is what the timer thread did, but not on every hit: a counter that expired since the last
    sweep keeps its memory until the next one is due (reading it would count nothing: see the test above)."""
    monkeypatch.setattr(ratelimit_memory, "SWEEP_EVERY", 1.0)
    storage = SweptMemoryStorage()
    storage.incr("a", 0.05)
    time.sleep(1.1)
    storage.incr("b", 60)  # a sweep is due: it frees "a"
    assert set(storage.storage) == {"b"}
    storage.incr("c", 0.01)
    time.sleep(0.05)
    storage.incr("d", 60)  # the next sweep is a second away: "c" stays in memory...
    assert set(storage.storage) == {"b", "c", "d"}
    time.sleep(1.0)
    storage.incr("e", 60)  # ...until that one frees it
    assert set(storage.storage) == {"b", "d", "e"}


def test_only_an_unset_or_plain_memory_storage_is_replaced():
    for configured in (None, "", "memory://"):
        assert isinstance(storage_from_string(ratelimit_memory.storage_uri(configured)), SweptMemoryStorage)
    for configured in ("redis://127.0.0.1:6379/5", "memcached://127.0.0.1:11211"):
        assert ratelimit_memory.storage_uri(configured) == configured
