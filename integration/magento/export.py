"""Streaming exports of a store's products, orders or customers, resumable without duplicates.

Records are fetched in ascending ``entity_id`` order, page by page (memory stays bounded).
Writing to a file, every page is flushed and then recorded in a sidecar state file
(``<output>.state.json``: how many bytes and records of the data are complete, the last id, the CSV columns
seen so far). A rerun after an interruption cuts the data back to that length and asks only for
ids above the last one (keyset paging, not page numbers, which would shift when records are
added meanwhile). Nothing is ever read back out of a CSV line.

CSV needs every column before the first row, and Magento leaves out fields that are null, so a
field can first appear on the last page. A CSV export therefore collects the records as JSON
Lines (``<output>.part.jsonl``) and writes the CSV, with every column any record had, once all
of them are in: the file appears complete or not at all. Cells hold strings as they are and
everything else as JSON (numbers, ``true``/``false``, arrays, objects); null is an empty cell.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import tempfile
from collections.abc import Callable, Iterable
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
STATE_SUFFIX = ".state.json"
PART_SUFFIX = ".part.jsonl"


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


def format_for(fmt: str | None, output: str | None) -> str:
    """``fmt`` if given, else CSV for an ``--output`` ending in ``.csv``, else JSON Lines."""
    if fmt is None:
        return "csv" if output and output.lower().endswith(".csv") else "jsonl"
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose jsonl or csv")
    return fmt


def export(client: StoreClient, entity: str, output: str | None, *, fmt: str | None = None,
           since: str | None = None, concurrency: int = 1, page_size: int = 100, stdout: IO[str] | None = None,
           on_total: Callable[[int], None] | None = None, on_record: Callable[[], None] | None = None,
           on_resume: Callable[[int], None] | None = None) -> int:
    """Write every record to ``output`` (or ``stdout``); returns how many were fetched this run.
    ``on_resume`` hears, before any request, how many records an interrupted ``output`` already
    holds (``on_total`` then counts only the rest)."""
    if entity not in ENTITIES:
        raise ExportError(f"unknown entity {entity!r}; choose one of {', '.join(ENTITIES)}")
    fmt = format_for(fmt, output)
    spec = ENTITIES[entity]
    since = parse_since(since) if since else None
    criteria = SearchCriteria().order_by(spec.filter_field, "ASC")
    if since:
        criteria.where("updated_at", since, "gteq")

    def fetch(after) -> Iterable[dict]:
        c = criteria.copy()
        if after is not None:
            c.where(spec.filter_field, after, "gt")
        for record in client.iter_search(spec.path, c, page_size=page_size, concurrency=concurrency,
                                         on_total=on_total):
            yield record
            if on_record:
                on_record()

    if output is None:
        return _to_stream(fetch(None), fmt, stdout, page_size)
    job = _Job.open(output, entity, fmt, since)
    if on_resume and job.state["last_id"] is not None:
        on_resume(job.state["records"])
    written = job.run(fetch(job.state["last_id"]), spec.id_field, page_size)
    job.finish()
    return written


def _json_line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def _to_stream(records: Iterable[dict], fmt: str, stdout: IO[str], page_size: int) -> int:
    written = 0
    if fmt == "jsonl":
        for record in records:
            stdout.write(_json_line(record))
            written += 1
            if written % page_size == 0:
                stdout.flush()
        stdout.flush()
        return written
    columns: dict[str, None] = {}
    with tempfile.TemporaryFile("w+", encoding="utf-8") as part:
        for record in records:
            columns.update(dict.fromkeys(record))
            part.write(_json_line(record))
            written += 1
        part.seek(0)
        _write_csv(part, list(columns), stdout)
    stdout.flush()
    return written


class _Job:
    """One export to a file: the data (the output itself for JSON Lines, a part file for CSV) and
    its state file, which only ever describes data already flushed to disk."""

    def __init__(self, output: str, state: dict):
        self.output, self.state = output, state
        self.state_path = output + STATE_SUFFIX
        self.data_path = output + PART_SUFFIX if state["format"] == "csv" else output

    @classmethod
    def open(cls, output: str, entity: str, fmt: str, since: str | None) -> _Job:
        fresh = {"entity": entity, "format": fmt, "since": since, "last_id": None, "bytes": 0, "columns": [],
                 "records": 0}
        state_path = output + STATE_SUFFIX
        if not os.path.exists(state_path):
            if os.path.exists(output) and os.path.getsize(output) > 0:
                raise ExportError(f"{output} exists and is not an interrupted export (there is no {state_path}); "
                                  "choose another --output or delete it")
            job = cls(output, fresh)
            with open(job.data_path, "w", encoding="utf-8"):
                pass
            job._save()
            return job
        try:
            with open(state_path, encoding="utf-8") as f:
                state = json.load(f)
            started = {key: state[key] for key in ("entity", "format", "since")}
            int(state["bytes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"{state_path} is damaged ({exc}); delete it and {output} to start over") from None
        if started != {"entity": entity, "format": fmt, "since": since}:
            raise ExportError(f"{output} is an interrupted export of {started['entity']} as {started['format']}"
                              f"{' since ' + started['since'] if started['since'] else ''}; run that again to "
                              "finish it, or choose another --output")
        job = cls(output, {**fresh, **state})  # a state file from before "records" counts from 0
        size = os.path.getsize(job.data_path) if os.path.exists(job.data_path) else -1
        if size < state["bytes"]:
            raise ExportError(f"{job.data_path} is shorter than {state_path} says; delete both to start over")
        return job

    def run(self, records: Iterable[dict], id_field: str, page_size: int) -> int:
        """Append ``records``, checkpointing after every ``page_size`` of them."""
        written, before = 0, self.state["records"]
        columns = dict.fromkeys(self.state["columns"])
        with open(self.data_path, "r+b") as data:
            data.truncate(self.state["bytes"])  # whatever an interrupted run wrote after its last checkpoint
            data.seek(self.state["bytes"])
            last_id = None
            for record in records:
                try:
                    last_id = record[id_field]
                except (KeyError, TypeError):
                    raise ExportError(f"the store sent a record without {id_field!r}") from None
                columns.update(dict.fromkeys(record))
                data.write(_json_line(record).encode("utf-8"))
                written += 1
                if written % page_size == 0:
                    self._checkpoint(data, last_id, columns, before + written)
            if written % page_size:
                self._checkpoint(data, last_id, columns, before + written)
        return written

    def _checkpoint(self, data: IO[bytes], last_id, columns: dict, records: int) -> None:
        data.flush()
        os.fsync(data.fileno())  # the data is on disk before the state says it is
        self.state.update(last_id=last_id, bytes=data.tell(), columns=list(columns), records=records)
        self._save()

    def finish(self) -> None:
        """Every record is in: write the CSV (when asked for) and drop the state."""
        if self.state["format"] == "csv":
            tmp = self.output + ".tmp"  # created like any output file (umask), renamed when whole
            with open(tmp, "w", encoding="utf-8", newline="") as out, open(self.data_path, encoding="utf-8") as part:
                _write_csv(part, self.state["columns"], out)
            os.replace(tmp, self.output)
            os.unlink(self.data_path)
        os.unlink(self.state_path)

    def _save(self) -> None:
        _replace_atomically(self.state_path, json.dumps(self.state, ensure_ascii=False))


def _replace_atomically(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _write_csv(lines: Iterable[str], columns: list[str], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for line in lines:
        record = json.loads(line)
        writer.writerow([_cell(record.get(name)) for name in columns])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
