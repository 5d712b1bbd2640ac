"""One writer at a time on SQLite, the next one let in as soon as the last is done.

SQLite lets one connection write at a time. Another writer waits in SQLite's busy handler, which
is not woken when the lock is free: it sleeps and tries again, 1, 2, 5 … 25 ms apart, then 50 and
100 ms apart. Under load (``bench/load.py``, SQLite, every process of every worker writing) a
callback whose write takes a few milliseconds waited up to hundreds more after the lock was free.

So before a connection's first write in a transaction it takes an exclusive ``flock`` on a file
beside the database (``<database>-writer``), its own descriptor for each connection, so that two
connections of one process exclude each other as two processes do, and holds it until the
transaction ends. Every writer of the app goes through this gate first, so SQLite's own lock is
free by the time one gets in. A writer waiting at the gate tries again at most 2 ms apart, up to the
busy timeout, then fails as SQLite would ("database is locked"). Reads take no gate (WAL: readers
never wait for the writer).

Descriptors are close-on-exec, and the app's children are started with exec (``spawn``), never
forked from a process that may hold the gate: a forked copy would keep a lock it does not know of.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time

#: Statements that never write; any other takes the gate first.
READS = ("SELECT", "PRAGMA", "EXPLAIN")
BUSY_TIMEOUT = 10.0  # seconds, as ``PRAGMA busy_timeout`` (factory.py)
LONGEST_PAUSE = 0.002


class GatedConnection(sqlite3.Connection):
    """A pysqlite connection that takes the writer gate (``take_gate``) and lets it go when
    its transaction ends: commit, rollback or close."""

    gate_path: str | None = None
    _gate_fd: int | None = None
    _gate_held = False

    def take_gate(self) -> None:
        if self._gate_held or self.gate_path is None:
            return
        if self._gate_fd is None:
            self._gate_fd = os.open(self.gate_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline, pause = time.monotonic() + BUSY_TIMEOUT, 0.0002
        while True:
            try:
                fcntl.flock(self._gate_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._gate_held = True
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE)

    def _let_go(self) -> None:
        if self._gate_held and not self.in_transaction:
            fcntl.flock(self._gate_fd, fcntl.LOCK_UN)
            self._gate_held = False

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._close_gate()

    def _close_gate(self) -> None:
        if self._gate_fd is not None:
            os.close(self._gate_fd)  # and with it the lock, if held
            self._gate_fd, self._gate_held = None, False

    def __del__(self) -> None:  # a connection dropped without close() must not keep the gate
        self._close_gate()


def install(engine) -> None:
    """Gate the writes of ``engine``'s connections (made with ``factory=GatedConnection``)."""
    from sqlalchemy import event

    if engine.url.database in (None, "", ":memory:"):
        return  # one shared connection (StaticPool): nobody to wait for
    path = f"{os.path.abspath(engine.url.database)}-writer"

    @event.listens_for(engine, "connect")
    def _name_gate(dbapi_connection, _record):
        if isinstance(dbapi_connection, GatedConnection):
            dbapi_connection.gate_path = path

    @event.listens_for(engine, "before_cursor_execute")
    def _gate_writes(_conn, cursor, statement, _parameters, _context, _executemany):
        if not statement.lstrip()[:7].upper().startswith(READS):
            connection = cursor.connection
            if isinstance(connection, GatedConnection):
                connection.take_gate()
