"""Password hashes computed in a separate, lower-priority process, never on a web worker's CPU.

A hash is Argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane: about 17 ms of
CPU). Accounts made before it carry werkzeug's scrypt (N=2^15, r=8: about 75 ms, and below
OWASP's scrypt minimum); they still log in, and their first login stores an Argon2id hash in
its place (:func:`needs_rehash`). A burst of
logins used to compute them inside the web workers: the CPU they took was the CPU Magento's
callback needed, and Magento abandons the callback after 5 seconds. Here each process that
hashes (a gunicorn worker, the CLI) hands the work to a small pool of its own child
processes started at a higher ``nice`` value, so the kernel runs the web workers first and the
hashes on what is left. The thread asking waits on the answer without holding the
interpreter lock or the CPU.

Nothing is shared between processes or hosts: each process has its own pool, started at its
first hash (after gunicorn's fork). This module imports nothing of the app: the pool's
children are started with ``spawn`` and import only this file (argon2-cffi and werkzeug).

Settings (environment, read when the pool starts):
  INTEGRATION_HASH_PROCESSES  hashing processes per app process (default 1)
  INTEGRATION_HASH_NICE       how much lower their priority is (default 8, below the web threads' 5; 0 turns the pool
                              off: hashes then run in the calling thread)
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from werkzeug.security import check_password_hash

# OWASP Password Storage Cheat Sheet: Argon2id, m=19456 KiB, t=2, p=1.
_ARGON2 = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_pid: int | None = None


def _setting(name: str, default: int) -> int:
    value = os.environ.get(f"INTEGRATION_{name}", "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"INTEGRATION_{name} must be an integer, not {value!r}") from None


def _start_child(nice: int, parent: int) -> None:
    """Runs in each child as it starts: lower its priority, and end it with its parent (a
    worker killed by gunicorn would otherwise leave its hashing processes behind).

    ``nice`` below the parent's main thread, not below the thread that started the pool: in a
    gunicorn worker that is a general thread, already niced (``GUNICORN_GENERAL_NICE``)."""
    try:
        target = min(19, os.getpriority(os.PRIO_PROCESS, parent) + nice)
        os.setpriority(os.PRIO_PROCESS, 0, max(target, os.getpriority(os.PRIO_PROCESS, 0)))
    except OSError:  # the parent is gone already (watch_parent ends us), or no permission
        os.nice(nice)

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()


def _pool_for_this_process() -> ProcessPoolExecutor | None:
    global _pool, _pool_pid
    if _pool is not None and _pool_pid == os.getpid():
        return _pool
    with _lock:
        if _pool is not None and _pool_pid == os.getpid():
            return _pool
        nice = _setting("HASH_NICE", 8)
        if nice <= 0:
            return None
        # spawn, not fork: the parent is a threaded web worker, and a forked child would
        # inherit its locks in whatever state the other threads left them.
        _pool = ProcessPoolExecutor(max_workers=max(1, _setting("HASH_PROCESSES", 1)),
                                    mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_start_child, initargs=(nice, os.getpid()))
        _pool_pid = os.getpid()
        return _pool


def _run(func, *args):
    pool = _pool_for_this_process()
    if pool is None:
        return func(*args)
    try:
        return pool.submit(func, *args).result()
    except BrokenProcessPool:  # a child was killed (OOM, an operator): start a new pool, once
        global _pool
        with _lock:
            if _pool is pool:
                _pool = None
        return _pool_for_this_process().submit(func, *args).result()


def _argon2_hash(password: str) -> str:
    return _ARGON2.hash(password)


def _check(password_hash: str, password: str) -> bool:
    if password_hash.startswith("$argon2"):
        try:
            return _ARGON2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
    return check_password_hash(password_hash, password)  # scrypt or pbkdf2, from before Argon2id


def hash_password(password: str) -> str:
    return _run(_argon2_hash, password)


def verify_password(password_hash: str, password: str) -> bool:
    return _run(_check, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """True for a hash that is not Argon2id with today's parameters: store a new one at the next
    login that proves the password (the only time we have it)."""
    if not password_hash.startswith("$argon2id$"):
        return True
    try:
        return _ARGON2.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True
