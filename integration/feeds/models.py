"""What the change feeds keep: where each store's feed of each entity stands, a fingerprint of
every record last emitted, and the jobs people see (syncs, with progress and errors)."""

from __future__ import annotations

import datetime as dt
import hashlib

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from ..models import StoreLink, store_link_key, utcnow


class FeedState(db.Model):
    """One store's feed of one entity. ``lease_owner``/``lease_expires_at`` is the lock: a sync
    claims it with a conditional UPDATE and a worker that dies lets it expire. Failures and
    ``backoff_until`` are kept alike on every feed of a store: a failing store is one problem."""

    __tablename__ = "feed_states"
    __table_args__ = (UniqueConstraint("store_link_id", "entity", name="uq_feed_states_store_entity"),
                      Index("ix_feed_states_next_run", "next_run_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    store_link_id: Mapped[int] = mapped_column(ForeignKey("store_links.id", ondelete="CASCADE"))
    entity: Mapped[str] = mapped_column(String(16))
    #: The newest ``updated_at`` (store time, UTC) of a record emitted; the next pass reads from
    #: a little before it (the overlap window).
    cursor: Mapped[dt.datetime | None]
    last_run_at: Mapped[dt.datetime | None]
    last_success_at: Mapped[dt.datetime | None]
    last_reconcile_at: Mapped[dt.datetime | None]
    records_seen: Mapped[int] = mapped_column(default=0)
    next_run_at: Mapped[dt.datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[dt.datetime | None]
    failures: Mapped[int] = mapped_column(default=0)
    backoff_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Why the feed does nothing (e.g. the store has no MSI source items).
    note: Mapped[str | None] = mapped_column(String(255))
    #: A pass from nothing (the first, or ``--full``) read by page numbers, kept between the jobs
    #: that share it: how many records (by position) its pages covered, so a run with another page
    #: size goes on from there too (None: no such pass under way), when it began, the
    #: newest ``updated_at`` it met, how many records it read, and the ``total_count`` every page
    #: reported (-1 once two pages disagreed: the catalogue changed meanwhile).
    pass_offset: Mapped[int | None]
    pass_started_at: Mapped[dt.datetime | None]
    pass_newest: Mapped[dt.datetime | None]
    pass_read: Mapped[int] = mapped_column(default=0, server_default="0")
    pass_total: Mapped[int | None]

    store_link: Mapped[StoreLink] = relationship()


#: The longest record id kept as it is (``FeedRecord.record_id``).
RECORD_ID_LENGTH = 128


def record_key(record_id: str) -> str:
    """How a record is known in ``feed_records`` and in its events: its id as the store gave it,
    or, for one the column cannot hold as it is (longer than ``RECORD_ID_LENGTH``, as an MSI key
    ``sku@source`` can be: source codes run to 255 characters; or a hostile store's, with a NUL
    or a lone surrogate, which PostgreSQL refuses in text), ``sha256:`` and its hex digest. The
    record itself, in the event, still says what the store sent."""
    if len(record_id) <= RECORD_ID_LENGTH and "\x00" not in record_id:
        if record_id.isascii():
            return record_id
        try:
            record_id.encode("utf-8")
            return record_id
        except UnicodeEncodeError:
            pass
    return "sha256:" + hashlib.sha256(record_id.encode("utf-8", "surrogatepass")).hexdigest()


class FeedRecord(db.Model):
    """The last version of one record that became an event: a fingerprint of its content
    without volatile fields, and the ``updated_at`` it had (never moved backwards)."""

    __tablename__ = "feed_records"
    __table_args__ = (UniqueConstraint("store_link_id", "entity", "record_id", name="uq_feed_records_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    store_link_id: Mapped[int] = mapped_column(store_link_key("CASCADE"))
    entity: Mapped[str] = mapped_column(String(16))
    record_id: Mapped[str] = mapped_column(String(RECORD_ID_LENGTH))  # record_key()
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256, hex
    updated_at: Mapped[dt.datetime | None]
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Job(db.Model):
    """A background job as people see it: state, progress, counts, error."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_id", "state", "id"),)

    QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = "queued", "running", "finished", "failed", "cancelled"
    STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="sync")
    store_link_id: Mapped[int | None] = mapped_column(ForeignKey("store_links.id", ondelete="CASCADE"), index=True)
    entity: Mapped[str | None] = mapped_column(String(16))
    full: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    done: Mapped[int] = mapped_column(default=0)
    total: Mapped[int | None]
    created: Mapped[int] = mapped_column(default=0)
    updated: Mapped[int] = mapped_column(default=0)
    deleted: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    #: An export (``kind="export"``): what was asked for, and the file made, under the
    #: instance folder's ``exports/`` until ``file_expires_at``. Never a path from outside.
    export_format: Mapped[str | None] = mapped_column(String(8))
    export_since: Mapped[str | None] = mapped_column(String(19))
    file_name: Mapped[str | None] = mapped_column(String(128))
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    file_expires_at: Mapped[dt.datetime | None]
    #: A running export's lease (a sync's is its feed's): renewed with every page, left to
    #: expire by a worker that dies, after which the tick takes the job up again.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[dt.datetime | None]
    #: The job's entry in the runner's queue, and when it was put there: a queued job whose entry
    #: the runner no longer holds (Redis restarted) is queued again under a new key.
    queue_key: Mapped[str | None] = mapped_column(String(64))
    queued_at: Mapped[dt.datetime | None]
    #: How often the job was taken up again after its worker died.
    takeovers: Mapped[int] = mapped_column(default=0, server_default="0")

    store_link: Mapped[StoreLink | None] = relationship()

    @property
    def downloadable(self) -> bool:
        return (self.kind == "export" and self.state == self.FINISHED and self.file_name is not None
                and (self.file_expires_at is None or self.file_expires_at > utcnow()))

    @property
    def finished(self) -> bool:
        return self.state in (self.FINISHED, self.FAILED, self.CANCELLED)

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "store_id": self.store_link_id, "entity": self.entity,
                "full": self.full, "state": self.state, "done": self.done, "total": self.total,
                "created": self.created, "updated": self.updated, "deleted": self.deleted, "error": self.error,
                "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
                "finished_at": _iso(self.finished_at), "format": self.export_format,
                "downloadable": self.downloadable}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None
