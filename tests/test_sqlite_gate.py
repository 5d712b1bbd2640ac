"""SQLite's writers queue at the writer gate (integration/sqlite_gate.py) and each is let in as
soon as the one before has committed, rolled back or closed. These tests use a SQLite file of
their own whatever database the suite runs on: the gate exists only for SQLite."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading

import pytest
from sqlalchemy import text

from integration import create_app, sqlite_gate
from integration.extensions import db

from .conftest import _config


@pytest.fixture
def gated(tmp_path):
    path = tmp_path / "gate.sqlite"
    app = create_app(_config(f"sqlite:///{path}", tmp_path))
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT)"))
        yield app, f"{path}-writer"
        db.engine.dispose()


def _in_thread(work) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = work()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _write(app, body: str):
    def work():
        with app.app_context(), db.engine.begin() as connection:
            connection.execute(text("INSERT INTO note (body) VALUES (:b)"), {"b": body})
    return work


def _count(app) -> int:
    with app.app_context(), db.engine.connect() as connection:
        return connection.execute(text("SELECT count(*) FROM note")).scalar_one()


class _Holder:
    """Another process's writer at the gate: an exclusive flock of its own on the file."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        os.close(self.fd)


def test_a_write_waits_at_the_gate_until_the_writer_before_it_is_done(gated):
    app, gate = gated
    holder = _Holder(gate)
    thread, outcome = _in_thread(_write(app, "queued"))
    thread.join(0.5)
    assert thread.is_alive() and _count(app) == 0  # held at the gate, not written past it
    holder.release()
    thread.join(5)
    assert not thread.is_alive() and "error" not in outcome
    assert _count(app) == 1


def test_reads_do_not_wait_at_the_gate(gated):
    app, gate = gated
    holder = _Holder(gate)
    try:
        thread, outcome = _in_thread(lambda: _count(app))
        thread.join(5)
        assert outcome == {"value": 0}
    finally:
        holder.release()


@pytest.mark.parametrize("ending", ["commit", "rollback", "failed statement", "close"])
def test_the_gate_is_let_go_however_the_transaction_ends(gated, ending):
    app, _ = gated
    with app.app_context():
        connection = db.engine.connect()
        transaction = connection.begin()
        connection.execute(text("INSERT INTO note (body) VALUES ('first')"))
        if ending == "commit":
            transaction.commit()
        elif ending == "rollback":
            transaction.rollback()
        elif ending == "failed statement":
            with pytest.raises(Exception):
                connection.execute(text("INSERT INTO note (id, body) VALUES (1, 'clash'), (1, 'clash')"))
            transaction.rollback()
        else:
            connection.invalidate()  # the DBAPI connection closed with its transaction open
        # The next writer, on another connection (this one is still checked out), gets in at
        # once: a gate kept would hold it for the busy timeout, 10 s, and then refuse it.
        thread, outcome = _in_thread(_write(app, "next"))
        thread.join(5)
        connection.close()
    assert not thread.is_alive() and "error" not in outcome
    assert _count(app) == (2 if ending == "commit" else 1)


def test_a_writer_held_past_the_busy_timeout_is_refused_as_sqlite_would(gated, monkeypatch):
    app, gate = gated
    monkeypatch.setattr(sqlite_gate, "BUSY_TIMEOUT", 0.3)
    holder = _Holder(gate)
    try:
        thread, outcome = _in_thread(_write(app, "late"))
        thread.join(5)
        assert isinstance(outcome.get("error").orig, sqlite3.OperationalError)
        assert "database is locked" in str(outcome["error"])
    finally:
        holder.release()
    assert _count(app) == 0


def test_a_connection_dropped_without_closing_lets_the_gate_go(gated):
    import gc

    app, gate = gated
    with app.app_context():
        path = db.engine.url.database
    dropped = sqlite3.connect(path, factory=sqlite_gate.GatedConnection)
    dropped.gate_path = gate
    dropped.take_gate()  # as before a write, then the connection is lost with its transaction
    del dropped
    gc.collect()
    thread, outcome = _in_thread(_write(app, "after"))
    thread.join(5)
    assert not thread.is_alive() and "error" not in outcome
