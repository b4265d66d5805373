"""The SQLite decision tracker store: runs, decisions and problems in an embedded file.

The file is owner-only (0600) and in WAL mode; every write is one transaction, applied by
one background thread so the event loop never waits on the disk. ``close()`` (also run at
interpreter exit) writes everything queued before it returns.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from ..redaction import redact_secrets
from .tracker_records import (
    Decision,
    Option,
    Outcome,
    Problem,
    Run,
    RunStatus,
    RunSummary,
    StoreClosedError,
)

__all__ = ["SCHEMA_VERSION", "SQLiteTrackerStore"]

logger = logging.getLogger("otel_agentbus.runtime.tracker")

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS runs (
    execution_id     TEXT PRIMARY KEY,
    stream_id        TEXT NOT NULL,
    goal_id          TEXT,
    goal_description TEXT NOT NULL,
    input_data       TEXT NOT NULL,
    status           TEXT NOT NULL,
    started_ns       INTEGER NOT NULL,
    ended_ns         INTEGER,
    narrative        TEXT NOT NULL,
    output_data      TEXT NOT NULL,
    agent            TEXT,
    session_id       TEXT,
    trace_id         TEXT,
    span_id          TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_ns);
CREATE TABLE IF NOT EXISTS decisions (
    execution_id     TEXT NOT NULL,
    decision_id      TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    node_id          TEXT,
    intent           TEXT NOT NULL,
    decision_type    TEXT NOT NULL,
    options          TEXT NOT NULL,
    chosen_option_id TEXT NOT NULL,
    reasoning        TEXT NOT NULL,
    constraints      TEXT NOT NULL,
    input_context    TEXT NOT NULL,
    time_ns          INTEGER NOT NULL,
    outcome          TEXT,
    PRIMARY KEY (execution_id, decision_id)
);
CREATE TABLE IF NOT EXISTS problems (
    execution_id     TEXT NOT NULL,
    problem_id       TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    severity         TEXT NOT NULL,
    description      TEXT NOT NULL,
    decision_id      TEXT,
    root_cause       TEXT,
    suggested_fix    TEXT,
    node_id          TEXT,
    time_ns          INTEGER NOT NULL,
    PRIMARY KEY (execution_id, problem_id)
);
"""

_RUN_COLUMNS: Final = ("execution_id", "stream_id", "goal_id", "goal_description", "input_data",
                       "status", "started_ns", "ended_ns", "narrative", "output_data", "agent",
                       "session_id", "trace_id", "span_id")


def _dumps(value: Any) -> str:
    """JSON for a column; anything that is not JSON data is stored as its repr. Values of
    secret-looking keys are stored as ``"[redacted]"``."""
    return json.dumps(redact_secrets(value), default=repr, separators=(",", ":"))


def _create_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 unless it exists (SQLite copies the mode to -wal/-shm)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


_Write = Callable[[sqlite3.Connection], None]
_STOP: Final = object()


class SQLiteTrackerStore:
    """Runs in an SQLite file: owner-only (0600), WAL, one transaction per write.

    Writes are queued and applied in order by one background thread, so the tracker's
    calls cost the event loop a queue put; reads wait for the queue to drain first, so a
    read always sees every earlier write. ``close()`` (also run at interpreter exit)
    writes what is queued, then closes the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _create_private_file(self.path)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                     timeout=30.0)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise
        self._lock = threading.Lock()   # the connection: writer thread vs readers
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._closed = False
        self._conn_closed = False
        self.write_errors = 0
        self.writes = 0
        self._thread = threading.Thread(target=self._writer, name="otel-agentbus-tracker-store",
                                        daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # ------------------------------------------------------------------ writer
    def _writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            write: _Write = item  # type: ignore[assignment]
            with self._lock:
                conn = self._conn
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        write(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    self.writes += 1
                except Exception:
                    self.write_errors += 1
                    logger.exception("tracker store %s: a write failed", self.path)

    def _submit(self, write: _Write) -> None:
        if self._closed:
            raise StoreClosedError(f"tracker store {self.path} is closed")
        self._queue.put(write)

    # ------------------------------------------------------------------ writes
    def run_started(self, run: Run) -> None:
        row = (run.execution_id, run.stream_id, run.goal_id, run.goal_description,
               _dumps(run.input_data), run.status.value, run.started_ns, run.ended_ns,
               run.narrative, _dumps(run.output_data), run.agent, run.session_id,
               run.trace_id, run.span_id)

        def write(conn: sqlite3.Connection) -> None:
            # A reused execution id starts over: its old records go with the old run.
            conn.execute("DELETE FROM decisions WHERE execution_id = ?", (run.execution_id,))
            conn.execute("DELETE FROM problems WHERE execution_id = ?", (run.execution_id,))
            conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(_RUN_COLUMNS)}) "
                         f"VALUES ({', '.join('?' for _ in _RUN_COLUMNS)})", row)

        self._submit(write)

    def decision_made(self, decision: Decision) -> None:
        row = (decision.execution_id, decision.id, decision.node_id, decision.intent,
               decision.decision_type, _dumps([o.to_dict() for o in decision.options]),
               decision.chosen_option_id, decision.reasoning,
               _dumps(list(decision.active_constraints)), _dumps(decision.input_context),
               decision.time_ns,
               None if decision.outcome is None else _dumps(decision.outcome.to_dict()))

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO decisions (execution_id, decision_id, seq, node_id, "
                "intent, decision_type, options, chosen_option_id, reasoning, constraints, "
                "input_context, time_ns, outcome) VALUES (?, ?, (SELECT COUNT(*) FROM "
                "decisions WHERE execution_id = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row[0], row[1], row[0], *row[2:]),
            )

        self._submit(write)

    def outcome_recorded(self, execution_id: str, decision_id: str, outcome: Outcome) -> None:
        text = _dumps(outcome.to_dict())

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE decisions SET outcome = ? WHERE execution_id = ? "
                         "AND decision_id = ?", (text, execution_id, decision_id))

        self._submit(write)

    def problem_reported(self, problem: Problem) -> None:
        row = (problem.execution_id, problem.id, problem.severity, problem.description,
               problem.decision_id, problem.root_cause, problem.suggested_fix,
               problem.node_id, problem.time_ns)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO problems (execution_id, problem_id, seq, severity, "
                "description, decision_id, root_cause, suggested_fix, node_id, time_ns) "
                "VALUES (?, ?, (SELECT COUNT(*) FROM problems WHERE execution_id = ?), "
                "?, ?, ?, ?, ?, ?, ?)", (row[0], row[1], row[0], *row[2:]),
            )

        self._submit(write)

    def run_ended(self, run: Run) -> None:
        values = (run.status.value, run.ended_ns, run.narrative, _dumps(run.output_data),
                  run.execution_id)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE runs SET status = ?, ended_ns = ?, narrative = ?, "
                         "output_data = ? WHERE execution_id = ?", values)

        self._submit(write)

    # ------------------------------------------------------------------- reads
    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self.flush()
        with self._lock:
            if self._conn_closed:
                raise StoreClosedError(f"tracker store {self.path} is closed")
            return list(self._conn.execute(sql, params).fetchall())

    def get_run(self, execution_id: str) -> Run | None:
        rows = self._read(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE execution_id = ?",
                          (execution_id,))
        if not rows:
            return None
        values = dict(zip(_RUN_COLUMNS, rows[0], strict=True))
        run = Run(
            execution_id=values["execution_id"], stream_id=values["stream_id"],
            goal_id=values["goal_id"], goal_description=values["goal_description"],
            input_data=json.loads(values["input_data"]), status=RunStatus(values["status"]),
            started_ns=values["started_ns"], ended_ns=values["ended_ns"],
            narrative=values["narrative"], output_data=json.loads(values["output_data"]),
            agent=values["agent"], session_id=values["session_id"],
            trace_id=values["trace_id"], span_id=values["span_id"],
        )
        run.decisions = self.get_decisions(execution_id)
        run.problems = self._problems(execution_id)
        return run

    def get_decisions(self, execution_id: str) -> list[Decision]:
        rows = self._read(
            "SELECT decision_id, node_id, intent, decision_type, options, chosen_option_id, "
            "reasoning, constraints, input_context, time_ns, outcome FROM decisions "
            "WHERE execution_id = ? ORDER BY seq", (execution_id,))
        return [Decision(
            id=r[0], execution_id=execution_id, node_id=r[1], intent=r[2], decision_type=r[3],
            options=tuple(Option.from_dict(o) for o in json.loads(r[4])),
            chosen_option_id=r[5], reasoning=r[6], active_constraints=tuple(json.loads(r[7])),
            input_context=json.loads(r[8]), time_ns=r[9],
            outcome=None if r[10] is None else Outcome.from_dict(json.loads(r[10])),
        ) for r in rows]

    def _problems(self, execution_id: str) -> list[Problem]:
        rows = self._read(
            "SELECT problem_id, severity, description, decision_id, root_cause, "
            "suggested_fix, node_id, time_ns FROM problems WHERE execution_id = ? ORDER BY seq",
            (execution_id,))
        return [Problem(id=r[0], execution_id=execution_id, severity=r[1], description=r[2],
                        decision_id=r[3], root_cause=r[4], suggested_fix=r[5], node_id=r[6],
                        time_ns=r[7]) for r in rows]

    def list_runs(self, *, stream_id: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunSummary]:
        where, params = [], []
        if stream_id is not None:
            where.append("r.stream_id = ?")
            params.append(stream_id)
        if status is not None:
            where.append("r.status = ?")
            params.append(str(status))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._read(
            "SELECT r.execution_id, r.stream_id, r.goal_id, r.status, r.started_ns, r.ended_ns, "
            "r.narrative, r.agent, r.trace_id, "
            "(SELECT COUNT(*) FROM decisions d WHERE d.execution_id = r.execution_id), "
            "(SELECT COUNT(*) FROM problems p WHERE p.execution_id = r.execution_id) "
            f"FROM runs r {clause} ORDER BY r.started_ns DESC LIMIT ?", (*params, int(limit)))
        return [RunSummary(execution_id=r[0], stream_id=r[1], goal_id=r[2],
                           status=RunStatus(r[3]), started_ns=r[4], ended_ns=r[5],
                           narrative=r[6], agent=r[7], trace_id=r[8], decision_count=r[9],
                           problem_count=r[10]) for r in rows]

    # --------------------------------------------------------------- lifecycle
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write queued so far is applied; False on timeout."""
        if not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Apply what is queued, stop the writer, close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("tracker store %s: writer did not finish within %ss", self.path,
                         timeout)
            return
        with self._lock:
            self._conn.close()
            self._conn_closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SQLiteTrackerStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
