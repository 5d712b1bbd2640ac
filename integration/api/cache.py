"""Per-process caches for the service API's request path: who a key is, and what a call needs
of a store (its address, decrypted tokens, signature profile, health).

Each entry lives at most ``INTEGRATION_API_CACHE_SECONDS`` (default 5; 0 turns the caches
off). A change committed in this process to a key, a user or a store link (revoking a key,
disabling an account, unlinking or reauthorizing a store, a call that marks it revoked ...)
drops what it touched at once; the bound is for changes made by other processes (other gunicorn
workers, the CLI, a job worker). A store reauthorized elsewhere is not marked revoked by a call
with its old tokens: the proxy reads the link again and retries with the new ones (``stores``).
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..models import ApiKey, StoreLink, User

V = TypeVar("V")
#: Entries per cache; past that the cache starts again empty (a flood of distinct keys or
#: store ids must not grow memory without bound).
MAX_ENTRIES = 10_000


class TimedCache(Generic[V]):
    """A dict whose entries expire ``seconds`` after they were put."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._entries: dict[object, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def put(self, key, value: V) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.seconds, value)

    def forget(self, key) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class ApiCaches:
    def __init__(self, seconds: float):
        self.keys: TimedCache = TimedCache(seconds)  # by the SHA-256 of the presented key
        self.links: TimedCache = TimedCache(seconds)  # by store link id


def init_app(app: Flask) -> None:
    app.extensions["api_caches"] = ApiCaches(float(app.config["API_CACHE_SECONDS"]))


def current() -> ApiCaches:
    return current_app.extensions["api_caches"]


def _caches() -> ApiCaches | None:
    try:
        return current_app.extensions.get("api_caches")
    except RuntimeError:  # no app context: nothing of ours is cached here
        return None


@event.listens_for(Session, "after_flush")
def _forget_what_changed(session: Session, _context) -> None:
    caches = _caches()
    if caches is None:
        return
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, StoreLink):
            caches.links.forget(obj.id)
        elif isinstance(obj, (ApiKey, User)):
            caches.keys.clear()  # rare: keys are cached by their secret, not by id


@event.listens_for(Session, "do_orm_execute")
def _forget_after_bulk_changes(state) -> None:
    """``update(StoreLink)`` and the like bypass the unit of work; drop the whole cache they touch."""
    if not (state.is_update or state.is_delete):  # every query passes here: the cheap test first
        return
    caches = _caches()
    entity = state.statement.table if caches is not None else None
    if entity is None:
        return
    # SQLAlchemy hands an annotated copy of the table, never the table itself: compare by origin.
    if entity.is_derived_from(StoreLink.__table__):
        caches.links.clear()
    elif entity.is_derived_from(User.__table__):
        caches.keys.clear()
    elif entity.is_derived_from(ApiKey.__table__) and not state.execution_options.get("api_last_used"):
        caches.keys.clear()
