"""Retention: a receiver left running for weeks must not fill the disk.

A background thread with a connection of its own deletes what is older than the retention
period and, when the database nears its size cap, the oldest data until it is back under a
low-water mark. It deletes whole traces (every span of the trace, with the log records
that carry its trace id) in small transactions, so the receiver's writes wait at most one
short batch for SQLite's write lock. Age is the receiver's clock when a row arrived
(``received_ms``), never the sender's timestamps. Freed pages are reused by SQLite, so
the file stops growing; it does not shrink (``VACUUM`` it offline for that).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S: Final = 7 * 24 * 3600.0
"""A week: the window in which a developer looks back at a run, and short enough that a
receiver nobody watches keeps a bounded amount of data."""
DEFAULT_MAX_DB_SIZE: Final = 2 * 1024**3
"""2 GiB: several million spans, fits beside other work on any development disk, and small
enough that SQLite's queries on it stay interactive."""
HIGH_WATER: Final = 0.90
"""Size pruning starts when the pages in use pass this share of the cap ..."""
LOW_WATER: Final = 0.80
"""... and stops below this share, so it runs in bursts rather than on every write."""
DEFAULT_INTERVAL_S: Final = 30.0
TRACES_PER_BATCH: Final = 32
"""Traces deleted per transaction: the longest the receiver's writers wait for a prune."""
MIN_GAP_S: Final = 1.0
"""After a pass woken by a full database that deleted nothing, the pruner waits this long
before the next wake counts."""
ROWS_PER_BATCH: Final = 2_000
"""Metric points or untraced log records deleted per transaction."""

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_DURATION_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_SIZE_EXPONENTS: Final = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_OFF: Final = frozenset({"off", "none", "0"})
MIN_DB_SIZE: Final = 256 * 1024
"""Below this the schema and one request barely fit: a cap that small is a typo."""


def parse_duration(text: str) -> float | None:
    """``"7d"``, ``"12h"``, ``"90m"``, ``"3600"`` (seconds) or ``"off"`` (``None``)."""
    if text.strip().lower() in _OFF:
        return None
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"bad duration {text!r}: expected e.g. 7d, 12h, 30m, 90s or off")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive (or off)")
    return seconds


def parse_size(text: str) -> int | None:
    """``"2GB"``, ``"500MB"``, ``"1.5GiB"``, ``"1048576"`` (bytes) or ``"off"`` (``None``).
    KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024."""
    if text.strip().lower() in _OFF:
        return None
    match = _SIZE.match(text)
    if match is None or (match.group(3) and not match.group(2)):
        raise ValueError(f"bad size {text!r}: expected e.g. 2GB, 500MB, 1GiB or off")
    base = 1024 if match.group(3) else 1000
    size = int(float(match.group(1)) * base ** _SIZE_EXPONENTS[match.group(2).lower()])
    if size < MIN_DB_SIZE:
        raise ValueError(f"size {text!r} is below the minimum of {MIN_DB_SIZE} bytes")
    return size


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What to keep: ``max_age_s`` seconds since arrival and ``max_db_size`` bytes (``None``
    turns either off), checked every ``interval_s`` seconds and whenever a write finds the
    database full."""

    max_age_s: float | None = DEFAULT_RETENTION_S
    max_db_size: int | None = DEFAULT_MAX_DB_SIZE
    interval_s: float = DEFAULT_INTERVAL_S

    def __post_init__(self) -> None:
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError("retention must be positive (or None for no age limit)")
        if self.max_db_size is not None and self.max_db_size < MIN_DB_SIZE:
            raise ValueError(f"max_db_size must be at least {MIN_DB_SIZE} bytes (or None)")
        if self.interval_s <= 0:
            raise ValueError("the pruning interval must be positive")

    @property
    def active(self) -> bool:
        return self.max_age_s is not None or self.max_db_size is not None


@dataclass(frozen=True, slots=True)
class PruneStats:
    """What the pruner deleted since it started."""

    passes: int = 0
    traces: int = 0
    spans: int = 0
    metric_points: int = 0
    log_records: int = 0


class Pruner:
    """Runs :func:`prune` in a daemon thread on its own connection to ``db_path``."""

    def __init__(self, db_path: str | Path, policy: RetentionPolicy) -> None:
        self.db_path = Path(db_path).absolute()
        self.policy = policy
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats = PruneStats()
        self._thread: threading.Thread | None = None

    def start(self) -> Pruner:
        if self._thread is None and self.policy.active:
            self._thread = threading.Thread(target=self._run, name="receiver-pruner",
                                            daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Prune now (the store calls this when a write found the database full)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def stats(self) -> PruneStats:
        with self._lock:
            return self._stats

    def _run(self) -> None:
        conn = connect(self.db_path)
        try:
            woken = False
            while not self._stop.is_set():
                self._wake.clear()  # a wake during the pass below brings another pass
                try:
                    deleted = prune(conn, self.policy, stop=self._stop)
                except sqlite3.Error as exc:  # e.g. locked for 30 s: try again next time
                    log.warning("pruning %s failed: %s", self.db_path, exc)
                    deleted = PruneStats()
                with self._lock:
                    s = self._stats
                    self._stats = PruneStats(
                        s.passes + 1, s.traces + deleted.traces, s.spans + deleted.spans,
                        s.metric_points + deleted.metric_points,
                        s.log_records + deleted.log_records)
                if deleted.traces or deleted.metric_points or deleted.log_records:
                    log.info("pruned %s: %d traces (%d spans), %d metric points, %d log "
                             "records", self.db_path, deleted.traces, deleted.spans,
                             deleted.metric_points, deleted.log_records)
                elif woken:  # a full disk, nothing to prune: refusals must not spin the pruner
                    self._stop.wait(MIN_GAP_S)
                woken = self._wake.wait(self.policy.interval_s)
        finally:
            conn.close()


def connect(db_path: Path) -> sqlite3.Connection:
    """The pruner's own connection: autocommit, WAL, waiting for the receiver's writes."""
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0,
                           check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in pages holding data: the file size less its free pages, which SQLite reuses."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    return (pages - free) * page_size


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def prune(conn: sqlite3.Connection, policy: RetentionPolicy, *,
          now_ms: int | None = None, stop: threading.Event | None = None) -> PruneStats:
    """One pass: by age, then by size; returns what it deleted."""
    total = PruneStats()
    if policy.max_age_s is not None:
        cutoff = (now_ms if now_ms is not None else _now_ms()) - int(policy.max_age_s * 1000)
        total = _add(total, _prune_by_age(conn, cutoff, stop))
    if policy.max_db_size is not None and used_bytes(conn) > HIGH_WATER * policy.max_db_size:
        total = _add(total, _prune_by_size(conn, int(LOW_WATER * policy.max_db_size), stop))
    return total


def _add(a: PruneStats, b: PruneStats) -> PruneStats:
    return PruneStats(a.passes + b.passes, a.traces + b.traces, a.spans + b.spans,
                      a.metric_points + b.metric_points, a.log_records + b.log_records)


def _delete_traces(conn: sqlite3.Connection, trace_ids: list[str]) -> PruneStats:
    """Delete whole traces, with their log records, in one short transaction."""
    if not trace_ids:
        return PruneStats()
    marks = ", ".join("?" for _ in trace_ids)
    conn.execute("BEGIN IMMEDIATE")
    try:
        spans = conn.execute(f"DELETE FROM spans WHERE trace_id IN ({marks})", trace_ids)
        logs = conn.execute(f"DELETE FROM logs WHERE trace_id IN ({marks})", trace_ids)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return PruneStats(traces=len(trace_ids), spans=spans.rowcount, log_records=logs.rowcount)


_UNTRACED: Final = ("(trace_id IS NULL OR NOT EXISTS "
                    "(SELECT 1 FROM spans s WHERE s.trace_id = logs.trace_id))")
"""Log records that belong to no stored trace: pruned on their own, not with a trace."""


def _delete_rows(conn: sqlite3.Connection, table: str, where: str,
                 params: tuple[int, ...] = ()) -> int:
    """Delete up to :data:`ROWS_PER_BATCH` of the oldest matching rows (by arrival)."""
    cursor = conn.execute(
        f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where} "
        f"ORDER BY id LIMIT {ROWS_PER_BATCH})", params)
    return int(cursor.rowcount)


def _prune_by_age(conn: sqlite3.Connection, cutoff_ms: int,
                  stop: threading.Event | None) -> PruneStats:
    """Delete traces whose every span arrived before ``cutoff_ms``, then metric points and
    untraced log records that did. Rows arrive in rowid order, so the scan reads only
    the expired prefix of the table, plus one batch."""
    total = PruneStats()
    after = 0
    while stop is None or not stop.is_set():
        rows = conn.execute(
            "SELECT rowid, trace_id, received_ms FROM spans WHERE rowid > ? "
            "ORDER BY rowid LIMIT 512", (after,)).fetchall()
        if not rows:
            break
        after = rows[-1][0]
        candidates = list(dict.fromkeys(
            t for _, t, received in rows if (received or 0) < cutoff_ms))
        expired = [t for t in candidates if (conn.execute(
            "SELECT MAX(received_ms) FROM spans WHERE trace_id = ?", (t,)).fetchone()[0]
            or 0) < cutoff_ms]
        for start in range(0, len(expired), TRACES_PER_BATCH):
            total = _add(total, _delete_traces(conn, expired[start:start + TRACES_PER_BATCH]))
        if any((received or 0) >= cutoff_ms for _, _, received in rows):
            break  # past the expired prefix
    for table, extra, field in (("metrics", "", "metric_points"),
                                ("logs", f" AND {_UNTRACED}", "log_records")):
        # Ids follow arrival, so the first row young enough to keep bounds the scan.
        first_kept = _oldest(conn, f"SELECT id FROM {table} WHERE received_ms >= {cutoff_ms} "
                                   "ORDER BY id LIMIT 1")
        bound = "" if first_kept is None else f" AND id < {first_kept}"
        while stop is None or not stop.is_set():
            deleted = _delete_rows(conn, table, f"received_ms < ?{bound}{extra}", (cutoff_ms,))
            total = _add(total, PruneStats(**{field: deleted}))
            if deleted < ROWS_PER_BATCH:
                break
    return total


def _oldest(conn: sqlite3.Connection, sql: str) -> int | None:
    row = conn.execute(sql).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _prune_by_size(conn: sqlite3.Connection, target_bytes: int,
                   stop: threading.Event | None) -> PruneStats:
    """Delete the oldest data, a batch at a time from whichever of traces, metric points
    and untraced log records arrived first, until the pages in use fit ``target_bytes``."""
    total = PruneStats()
    batch = 1  # doubling up to TRACES_PER_BATCH: a small file is not emptied in one go
    while used_bytes(conn) > target_bytes and (stop is None or not stop.is_set()):
        heads = {
            "spans": _oldest(conn, "SELECT received_ms FROM spans ORDER BY rowid LIMIT 1"),
            "metrics": _oldest(conn, "SELECT received_ms FROM metrics ORDER BY id LIMIT 1"),
            "logs": _oldest(conn, f"SELECT received_ms FROM logs WHERE {_UNTRACED} "
                                  "ORDER BY id LIMIT 1"),
        }
        present = {table: at for table, at in heads.items() if at is not None}
        if not present:
            break
        table = min(present, key=present.__getitem__)
        if table == "spans":
            rows = conn.execute("SELECT trace_id FROM spans ORDER BY rowid LIMIT ?",
                                (batch * 16,)).fetchall()
            oldest = list(dict.fromkeys(r[0] for r in rows))[:batch]
            total = _add(total, _delete_traces(conn, oldest))
            batch = min(batch * 2, TRACES_PER_BATCH)
        elif table == "metrics":
            total = _add(total, PruneStats(metric_points=_delete_rows(conn, "metrics", "1")))
        else:
            total = _add(total, PruneStats(log_records=_delete_rows(conn, "logs", _UNTRACED)))
    return total
