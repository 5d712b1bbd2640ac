"""The audit of API use, written in batches: one ``api.call`` row per request made with a key
(method, path, status, key prefix, address; never a body), and the key's last use.

A request adds its row to this process's buffer; a background thread writes what has gathered
in one transaction every ``INTEGRATION_API_AUDIT_FLUSH_SECONDS`` (default 1), sooner when
``BATCH`` rows wait, and the rest when the process exits normally (gunicorn's graceful stop,
SIGTERM, Ctrl-C). A process killed outright (SIGKILL, the OOM killer, power loss) loses the
rows of its last second at most. 0 writes each row within its request, as a single INSERT.
While the database is down the rows wait (up to ``MAX_WAITING``) and go in when it is back.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import weakref

from flask import Flask, current_app
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import DataError, IntegrityError

from ..extensions import db
from ..models import ApiKey, AuditEvent, StoreLink, User

log = logging.getLogger("integration.api")

#: Rows that make the writer go at once rather than at the next tick.
BATCH = 200
#: Rows kept while the database refuses them; past that the oldest are dropped (and logged).
MAX_WAITING = 100_000
#: ``last_used_at`` is written at most this often per key, not on every request.
LAST_USED_REFRESH = dt.timedelta(seconds=60)
#: The writer thread ends after this many idle ticks (and starts again with the next row).
IDLE_TICKS = 30

_logs: weakref.WeakSet[UsageLog] = weakref.WeakSet()
_INSERT = insert(AuditEvent.__table__)


class UsageLog:
    def __init__(self, app: Flask, every: float):
        self.app, self.every = app, every
        self._rows: list[dict] = []
        self._last_use: dict[int, tuple[dt.datetime, str | None]] = {}
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one flush at a time, so rows go in in order
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _logs.add(self)

    def add(self, row: dict, key_id: int, remote_addr: str | None) -> None:
        if self.every <= 0:
            self._write([row], {key_id: (row["at"], remote_addr)})
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's rows are the parent's to write
                self._rows, self._last_use, self._thread, self._pid = [], {}, None, os.getpid()
            self._rows.append(row)
            self._last_use[key_id] = (row["at"], remote_addr)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="api-audit", daemon=True)
                self._thread.start()
            if len(self._rows) >= BATCH:
                self._wake.set()

    def flush(self) -> int:
        """Write every waiting row now; how many went in."""
        with self._writing:
            with self._lock:
                rows, uses = self._rows, self._last_use
                self._rows, self._last_use = [], {}
            if not rows:
                return 0
            try:
                with self.app.app_context():
                    self._write(rows, uses)
            except Exception:
                with self._lock:  # back in front of the newer ones, to go in next time
                    self._rows[:0] = rows
                    for key_id, use in uses.items():
                        self._last_use.setdefault(key_id, use)
                    if len(self._rows) > MAX_WAITING:
                        dropped = len(self._rows) - MAX_WAITING
                        del self._rows[:dropped]
                        log.error("dropped %d API audit rows: the database refused them for too long", dropped)
                raise
            return len(rows)

    @staticmethod
    def _write(rows: list[dict], uses: dict[int, tuple[dt.datetime, str | None]]) -> None:
        # The table's own INSERT, one executemany: the ORM's bulk INSERT of the same rows works
        # through its bookkeeping per row first (no events or defaults of the model apply either way).
        try:
            with db.session.begin_nested():
                db.session.execute(_INSERT, rows)
        except IntegrityError:
            # A store or account deleted since the request: its rows keep their text without the
            # reference, as ON DELETE SET NULL would have left them had they been written at once.
            db.session.execute(_INSERT, _without_dangling(rows))
        except DataError:
            # A row the database refuses whatever happens (a value it cannot hold) would otherwise
            # come back in every batch and keep the others out for good: each goes in alone, and
            # the ones refused are dropped, said in the log.
            refused = 0
            for row in _without_dangling(rows):
                try:
                    with db.session.begin_nested():
                        db.session.execute(_INSERT, [row])
                except DataError:
                    refused += 1
            log.error("dropped %d API audit row(s) the database refused (values it cannot hold)", refused)
        for key_id, (at, remote_addr) in uses.items():
            # Conditional, so several workers (and batches) still write it at most once a minute.
            db.session.execute(
                update(ApiKey).where(ApiKey.id == key_id)
                .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= at - LAST_USED_REFRESH))
                .values(last_used_at=at, last_used_addr=remote_addr)
                .execution_options(synchronize_session=False, api_last_used=True))
        db.session.commit()

    def _run(self) -> None:
        idle = 0
        while True:
            self._wake.wait(self.every)
            self._wake.clear()
            try:
                idle = 0 if self.flush() else idle + 1
            except Exception:  # noqa: BLE001 - the rows wait for the next tick
                log.exception("could not write API audit rows; retrying")
                idle = 0
            if idle >= IDLE_TICKS:
                with self._lock:
                    if not self._rows:  # add() starts another when the next row comes
                        self._thread = None
                        return


def _without_dangling(rows: list[dict]) -> list[dict]:
    links = {r["store_link_id"] for r in rows} - {None}
    users = {r["user_id"] for r in rows} - {None}
    links &= set(db.session.scalars(select(StoreLink.id).where(StoreLink.id.in_(links)))) if links else set()
    users &= set(db.session.scalars(select(User.id).where(User.id.in_(users)))) if users else set()
    return [{**r, "store_link_id": r["store_link_id"] if r["store_link_id"] in links else None,
             "user_id": r["user_id"] if r["user_id"] in users else None} for r in rows]


def init_app(app: Flask) -> None:
    app.extensions["api_usage"] = UsageLog(app, float(app.config["API_AUDIT_FLUSH_SECONDS"]))


def current() -> UsageLog:
    return current_app.extensions["api_usage"]


def flush(app: Flask | None = None) -> int:
    """Write the waiting API audit rows of ``app`` (the current one by default) now."""
    return (app or current_app).extensions["api_usage"].flush()


@atexit.register
def flush_all() -> None:
    """Write what every app of this process still holds (at exit; gunicorn's ``worker_exit``)."""
    for usage in list(_logs):
        if usage._pid == os.getpid():
            try:
                usage.flush()
            except Exception:  # noqa: BLE001 - nothing more to do at exit than say so
                log.exception("could not write API audit rows at exit")
