"""SQLite storage for received telemetry.

One connection, one writer lock and one transaction per export request, so a
request is either stored whole or not at all. WAL mode lets the CLI and tests
read while the receiver writes. The file is created owner-only (0600) because
prompts and tool arguments often end up in span attributes.

Every row carries the receiver's clock at storage (``received_ms``, filled in by SQLite
itself, so the insert statements do not change): retention ages data by when it arrived,
not by the sender's timestamps, which may be skewed or made up. A size cap is SQLite's
``max_page_count``; a write past it, or onto a full disk, fails as :class:`StorageFull`
with the transaction rolled back, and succeeds again once pages are free.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from .convert import SPAN_COLUMNS, LogRecordRow, MetricPointRecord, SpanRecord, SpanValues
from .run_sql import RUN_INDEXES

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
"""1: spans, metrics, logs. 2: ``received_ms`` on each (added in place to a version 1 file).
3: the partial indexes that find runs (``run_sql.RUN_INDEXES``) and ``receiver_meta``
(where a running receiver says where its web view is); both added in place."""

RECEIVED_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
"""SQLite's clock in Unix milliseconds, the ``received_ms`` of a row being stored."""
_RECEIVED_COLUMN = f"received_ms INTEGER DEFAULT ({RECEIVED_NOW})"
_TABLES = ("spans", "metrics", "logs")

_SCHEMA = f"""
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
    {_RECEIVED_COLUMN},
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
    service_name    TEXT,
    {_RECEIVED_COLUMN}
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
    service_name     TEXT,
    {_RECEIVED_COLUMN}
);
CREATE INDEX IF NOT EXISTS logs_trace ON logs (trace_id);
CREATE TABLE IF NOT EXISTS receiver_meta (
    key             TEXT PRIMARY KEY,
    value           TEXT NOT NULL
);
"""


def _add_received_column(conn: sqlite3.Connection) -> None:
    """Bring a version 1 file to version 2. ``ALTER TABLE`` cannot give the new column a
    clock default, so a trigger stamps new rows instead, and rows already stored count as
    received now (they get a full retention period from the upgrade)."""
    for table in _TABLES:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if "received_ms" in columns:
            continue
        conn.execute(f"ALTER TABLE {table} ADD COLUMN received_ms INTEGER")
        conn.execute(f"UPDATE {table} SET received_ms = {RECEIVED_NOW}")
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {table}_received AFTER INSERT ON {table} "
            f"WHEN NEW.received_ms IS NULL BEGIN UPDATE {table} "
            f"SET received_ms = {RECEIVED_NOW} WHERE rowid = NEW.rowid; END")


SQLITE_FULL = 13
"""SQLite's result code for a full database: the disk, or the ``max_page_count`` cap."""


class StorageFull(RuntimeError):
    """A request was not stored because the database reached its size cap or the disk is
    full. Nothing of it was written; the transports answer HTTP 507 / RESOURCE_EXHAUSTED."""


STORAGE_FULL_MESSAGE = "receiver storage is full; nothing of this request was stored"
"""What a refused client is told (the database path stays in the receiver's log)."""


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "full" in str(exc)


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
    """Thread-safe writer for the receiver database; ``max_db_size`` (bytes) caps the file."""

    def __init__(self, path: str | os.PathLike[str], *, max_db_size: int | None = None) -> None:
        if max_db_size is not None and max_db_size <= 0:
            raise ValueError("max_db_size must be positive")
        self.path = Path(path).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private_file(self.path)
        self._lock = threading.Lock()
        self._full = False
        self._full_listeners: list[Callable[[], None]] = []
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
            # After a checkpoint the WAL is cut back to 64 MB instead of keeping its peak.
            self._conn.execute("PRAGMA journal_size_limit=67108864")
            self._conn.executescript(_SCHEMA)
            _add_received_column(self._conn)
            self._conn.executescript(RUN_INDEXES)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.max_db_size: int | None = None
            self.set_max_db_size(max_db_size)
        except BaseException:
            self._conn.close()
            raise
        self._closed = False

    def set_meta(self, key: str, value: str | None) -> None:
        """Set (or, with ``None``, remove) one ``receiver_meta`` entry."""
        with self._lock:
            if value is None:
                self._conn.execute("DELETE FROM receiver_meta WHERE key = ?", (key,))
            else:
                self._conn.execute(
                    "INSERT INTO receiver_meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def add_full_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (in the writing thread, outside the lock) whenever a write is
        refused for lack of space: the ingest counts it, the pruner wakes up."""
        self._full_listeners.append(listener)

    @property
    def page_size(self) -> int:
        return int(self._conn.execute("PRAGMA page_size").fetchone()[0])

    def set_max_db_size(self, max_db_size: int | None) -> None:
        """Cap the file at ``max_db_size`` bytes (``None``: SQLite's own limit). SQLite does
        not lower the cap below the pages in use: a larger file keeps its size and the
        pruner frees pages inside it."""
        pages = (1 << 31) - 2 if max_db_size is None else max(
            1, math.floor(max_db_size / self.page_size))
        self._conn.execute(f"PRAGMA max_page_count={pages}")
        self.max_db_size = max_db_size

    def write(
        self,
        spans: Sequence[SpanRecord] | SpanValues = (),
        metrics: Sequence[MetricPointRecord] = (),
        logs: Sequence[LogRecordRow] = (),
    ) -> None:
        """Store all rows of one request in a single transaction, or raise
        :class:`StorageFull` having stored none of them."""
        try:
            self._write(spans, metrics, logs)
        except sqlite3.OperationalError as exc:
            if not _is_full(exc):
                raise
            if not self._full:  # one warning per full spell, not one per request
                log.warning("receiver database %s is full (%s): refusing exports until "
                            "space is freed", self.path, exc)
            self._full = True
            for listener in tuple(self._full_listeners):
                listener()
            raise StorageFull(f"receiver database {self.path} is full: {exc}") from None
        if self._full:
            self._full = False
            log.warning("receiver database %s has space again: storing exports", self.path)

    def _write(
        self,
        spans: Sequence[SpanRecord] | SpanValues,
        metrics: Sequence[MetricPointRecord],
        logs: Sequence[LogRecordRow],
    ) -> None:
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
                if conn.in_transaction:  # SQLITE_FULL may have rolled back already
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
