"""SQLite storage for received telemetry.

One connection, one writer lock and one transaction per export request, so a
request is either stored whole or not at all. WAL mode lets the CLI and tests
read while the receiver writes. The file is created owner-only (0600) because
prompts and tool arguments often end up in span attributes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from .convert import SPAN_COLUMNS, LogRecordRow, MetricPointRecord, SpanRecord, SpanValues

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id        TEXT NOT NULL,
    span_id         TEXT NOT NULL,
    parent_span_id  TEXT,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    start_ns        INTEGER NOT NULL,
    end_ns          INTEGER NOT NULL,
    status_code     TEXT NOT NULL,
    status_message  TEXT NOT NULL,
    attributes      TEXT NOT NULL,
    events          TEXT NOT NULL,
    links           TEXT NOT NULL,
    resource        TEXT NOT NULL,
    scope_name      TEXT NOT NULL,
    scope_version   TEXT NOT NULL,
    service_name    TEXT,
    trace_state     TEXT NOT NULL,
    pending         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_start ON spans (start_ns);
CREATE TABLE IF NOT EXISTS metrics (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    unit            TEXT NOT NULL,
    type            TEXT NOT NULL,
    time_ns         INTEGER NOT NULL,
    start_time_ns   INTEGER NOT NULL,
    attributes      TEXT NOT NULL,
    value,
    histogram       TEXT,
    exemplars       TEXT NOT NULL,
    temporality     TEXT,
    is_monotonic    INTEGER,
    resource        TEXT NOT NULL,
    scope_name      TEXT NOT NULL,
    service_name    TEXT
);
CREATE INDEX IF NOT EXISTS metrics_name ON metrics (name, time_ns);
CREATE TABLE IF NOT EXISTS logs (
    id               INTEGER PRIMARY KEY,
    time_ns          INTEGER NOT NULL,
    observed_time_ns INTEGER NOT NULL,
    severity_number  INTEGER NOT NULL,
    severity_text    TEXT NOT NULL,
    body             TEXT NOT NULL,
    event_name       TEXT NOT NULL,
    attributes       TEXT NOT NULL,
    trace_id         TEXT,
    span_id          TEXT,
    flags            INTEGER NOT NULL,
    resource         TEXT NOT NULL,
    scope_name       TEXT NOT NULL,
    service_name     TEXT
);
CREATE INDEX IF NOT EXISTS logs_trace ON logs (trace_id);
"""


def _insert_sql(table: str, columns: Sequence[str], rows: int = 1) -> str:
    """``INSERT`` of ``rows`` rows in one statement, every value a parameter."""
    row = f"({', '.join('?' for _ in columns)})"
    values = ", ".join(row for _ in range(rows))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"


_SPAN_COLUMNS = SpanRecord._fields
# A later record replaces an earlier one with the same ids, except that a
# "pending" placeholder never overwrites the finished span (exporters may
# deliver them out of order).
_UPSERT_CLAUSE = (
    " ON CONFLICT (trace_id, span_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SPAN_COLUMNS if c not in ("trace_id", "span_id"))
    + " WHERE excluded.pending = 0 OR spans.pending = 1"
)
_SPANS_PER_STATEMENT = 1024
"""Spans per multi-row upsert. ``executemany`` steps SQLite once per row, and Python's
sqlite3 releases the GIL around every step; when the receiver shares a process with a busy
agent (the embedded receiver), getting the GIL back can take a switch interval (5 ms) each
time, so a 512-span request took seconds while the agent ran. One statement steps SQLite
once for up to 1,024 rows (18 parameters a row, below SQLite's limit of 32,766)."""
_upsert_sql_cache: dict[int, str] = {}


def _upsert_spans_sql(rows: int) -> str:
    """The upsert of ``rows`` spans in one statement (same semantics as row by row)."""
    sql = _upsert_sql_cache.get(rows)
    if sql is None:
        sql = _insert_sql("spans", _SPAN_COLUMNS, rows) + _UPSERT_CLAUSE
        if len(_upsert_sql_cache) < 256:
            _upsert_sql_cache[rows] = sql
    return sql


def _upsert_spans(conn: sqlite3.Connection, spans: SpanValues) -> None:
    values, step = spans.values, _SPANS_PER_STATEMENT * SPAN_COLUMNS
    for start in range(0, len(values), step):
        chunk = values[start:start + step]
        conn.execute(_upsert_spans_sql(len(chunk) // SPAN_COLUMNS), chunk)


_INSERT_METRIC = _insert_sql("metrics", MetricPointRecord._fields)
_INSERT_LOG = _insert_sql("logs", LogRecordRow._fields)


def create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 unless it exists (SQLite copies it to -wal/-shm)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


class Store:
    """Thread-safe writer for the receiver database."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private_file(self.path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            # Bursts of exports: a 32 MB page cache keeps the primary-key index in memory,
            # and checkpointing every 8,192 pages (32 MB) rather than 1,000 halves the
            # fsyncs. Together they made a stored span about a third cheaper.
            self._conn.execute("PRAGMA cache_size=-32768")
            self._conn.execute("PRAGMA wal_autocheckpoint=8192")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    def write(
        self,
        spans: Sequence[SpanRecord] | SpanValues = (),
        metrics: Sequence[MetricPointRecord] = (),
        logs: Sequence[LogRecordRow] = (),
    ) -> None:
        """Store all rows of one request in a single transaction."""
        values = spans if isinstance(spans, SpanValues) else SpanValues.of(spans)
        if not (values.count or metrics or logs):
            return
        with self._lock:
            if self._closed:
                raise RuntimeError(f"store {self.path} is closed")
            conn = self._conn
            if not (metrics or logs) and values.count <= _SPANS_PER_STATEMENT:
                # One statement is one transaction of its own: no BEGIN/COMMIT round trips.
                conn.execute(_upsert_spans_sql(values.count), values.values)
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                if values.count:
                    _upsert_spans(conn, values)
                if metrics:
                    conn.executemany(_INSERT_METRIC, metrics)
                if logs:
                    conn.executemany(_INSERT_LOG, logs)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close the connection; SQLite checkpoints the WAL on the last close."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
