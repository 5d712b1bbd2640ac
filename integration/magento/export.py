"""Streaming exports of a store's products, orders or customers, resumable without duplicates.

Records are fetched in ascending ``entity_id`` order and written one line each, so an
interrupted file ends in a known record: a rerun drops any half-written last line and
asks only for ids above the last complete one (keyset paging, not page numbers, which
would shift when records are added meanwhile).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from .client import StoreClient
from .search import SearchCriteria


@dataclass(frozen=True)
class Entity:
    path: str
    id_field: str  # the key in each record
    filter_field: str = "entity_id"  # the field Magento filters and sorts on


ENTITIES = {
    "products": Entity("products", "id"),
    "orders": Entity("orders", "entity_id"),
    "customers": Entity("customers/search", "id"),
}
FORMATS = ("jsonl", "csv")


class ExportError(ValueError):
    pass


def parse_since(value: str) -> str:
    """An ISO date or date-time, as Magento's ``updated_at`` filter wants it (UTC)."""
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ExportError(f"--since must be an ISO date such as 2024-05-01 or 2024-05-01T12:00:00Z, not {value!r}") \
            from None
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def export(client: StoreClient, entity: str, output: str | None, *, fmt: str = "jsonl", since: str | None = None,
           concurrency: int = 1, page_size: int = 100, stdout: IO[str] | None = None,
           on_total: Callable[[int], None] | None = None, on_record: Callable[[], None] | None = None) -> int:
    """Write every record to ``output`` (or ``stdout``); returns how many were written this run."""
    if entity not in ENTITIES:
        raise ExportError(f"unknown entity {entity!r}; choose one of {', '.join(ENTITIES)}")
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose jsonl or csv")
    spec = ENTITIES[entity]
    criteria = SearchCriteria().order_by(spec.filter_field, "ASC")
    if since:
        criteria.where("updated_at", parse_since(since), "gteq")
    header: list[str] | None = None
    if output:
        last_id, header = _resume_point(output, fmt, spec)
        if last_id is not None:
            criteria.where(spec.filter_field, last_id, "gt")
        stream = open(output, "a", encoding="utf-8", newline="")
    else:
        stream = stdout
    written = 0
    try:
        writer = _Writer(stream, fmt, header)
        for record in client.iter_search(spec.path, criteria, page_size=page_size, concurrency=concurrency,
                                         on_total=on_total):
            writer.write(record)
            written += 1
            if on_record:
                on_record()
            if written % page_size == 0:
                stream.flush()
    finally:
        if output:
            stream.close()
        elif stream is not None:
            stream.flush()
    return written


class _Writer:
    def __init__(self, stream: IO[str], fmt: str, header: list[str] | None):
        self.stream, self.fmt, self.header = stream, fmt, header
        self.csv = None

    def write(self, record: dict) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
            return
        if self.csv is None:
            new_file = self.header is None
            self.header = self.header or list(record)
            self.csv = csv.DictWriter(self.stream, fieldnames=self.header, extrasaction="ignore", lineterminator="\n")
            if new_file:
                self.csv.writeheader()
        self.csv.writerow({k: _cell(record.get(k)) for k in self.header})


def _cell(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def _resume_point(path: str, fmt: str, spec: Entity) -> tuple[object | None, list[str] | None]:
    """The id of the last complete record in ``path`` (after dropping a torn last line)."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None, None
    with open(path, "rb+") as f:
        data_end = _truncate_torn_line(f)
        if data_end == 0:
            return None, None
        f.seek(0)
        head = f.readline().decode("utf-8")
        last = _last_line(f, data_end).decode("utf-8")
    try:
        if fmt == "jsonl":
            return json.loads(last)[spec.id_field], None
        header = next(csv.reader(io.StringIO(head)))
        if last == head:
            return None, header
        row = dict(zip(header, next(csv.reader(io.StringIO(last))), strict=False))
        return int(row[spec.id_field]), header
    except (ValueError, KeyError, StopIteration) as exc:
        raise ExportError(f"{path} does not look like an earlier {fmt} export of this kind ({exc}); "
                          "choose another --output or delete it") from None


def _truncate_torn_line(f) -> int:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    pos = size
    while pos > 0:
        step = min(65536, pos)
        f.seek(pos - step)
        chunk = f.read(step)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            end = pos - step + nl + 1
            if end != size:
                f.truncate(end)
            return end
        pos -= step
    f.truncate(0)
    return 0


def _last_line(f, end: int) -> bytes:
    """The line before the final newline at ``end - 1``, read backwards in chunks."""
    pos, buf = end - 1, b""
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        nl = buf.rfind(b"\n")
        if nl >= 0:
            return buf[nl + 1:]
    return buf
