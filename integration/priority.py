"""Who gets the CPU first when two cores are not enough: Magento's callback, then pages and API
calls, then password hashes. Linux schedules threads, not processes, so a thread can lower its own
priority (``setpriority`` with its thread id changes that thread alone): the web workers' general
threads do (``serving``), the callback lane's do not. Hashing runs in niced child processes
(``password_hashing``).

Not the embedded job threads: a thread niced below busy threads of its own process waits for the
interpreter lock as well as for a core, and the test suite saw an intake job starve for a minute
while a browser reloaded a page of the same process in a loop. Background work that must yield
belongs on RQ workers started with ``nice`` (README, Deploying)."""

from __future__ import annotations

import os
import threading


def lower_this_threads_priority(nice: int) -> None:
    """Raise the calling thread's nice value by ``nice``. Best effort: where threads cannot have
    their own priority, nothing changes."""
    if nice <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (AttributeError, OSError):
        pass
