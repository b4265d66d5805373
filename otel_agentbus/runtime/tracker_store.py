"""Where the decision tracker keeps runs, decisions, outcomes and problems.

The records are what seed 003 calls ``Run``, ``Decision``, ``Option``, ``Outcome`` and
problems. Two stores share one interface: ``SQLiteTrackerStore`` (embedded, a file the
owner alone can read, WAL, one transaction per write, written on a background thread so
the event loop never waits on the disk) and ``InMemoryTrackerStore`` (tests, or opting
out of persistence; bounded). ``close()`` writes everything queued before it returns.
"""

from __future__ import annotations

import atexit
import enum
import json
import logging
import os
import queue
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, runtime_checkable

from ..redaction import redact_secrets

logger = logging.getLogger("otel_agentbus.runtime.tracker")

SCHEMA_VERSION: Final = 1


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DecisionType(enum.StrEnum):
    """What kind of choice a decision was (Hive's ``DecisionType``)."""

    TOOL_SELECTION = "tool_selection"
    PARAMETER_CHOICE = "parameter_choice"
    PATH_CHOICE = "path_choice"
    OUTPUT_FORMAT = "output_format"
    RETRY_STRATEGY = "retry_strategy"
    DELEGATION = "delegation"
    CUSTOM = "custom"


@dataclass(frozen=True, slots=True)
class Option:
    """One option the agent considered."""

    id: str
    description: str = ""
    action_type: str = "unknown"
    action_params: Mapping[str, Any] = field(default_factory=dict)
    pros: tuple[str, ...] = ()
    cons: tuple[str, ...] = ()
    confidence: float = 0.5

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Option:
        """Seed 003's option dict (``id`` required; the rest defaults as in the seed)."""
        if not isinstance(data, Mapping) or not data.get("id"):
            raise ValueError(f"an option needs a non-empty 'id', got {data!r}")
        confidence = data.get("confidence", 0.5)
        return cls(
            id=str(data["id"]),
            description=str(data.get("description", "")),
            action_type=str(data.get("action_type", "unknown")),
            action_params=dict(data.get("action_params") or {}),
            pros=tuple(str(p) for p in data.get("pros") or ()),
            cons=tuple(str(c) for c in data.get("cons") or ()),
            confidence=float(confidence) if confidence is not None else 0.5,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "description": self.description, "action_type": self.action_type,
            "action_params": dict(self.action_params), "pros": list(self.pros),
            "cons": list(self.cons), "confidence": self.confidence,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened after a decision was acted on."""

    success: bool
    result: Any = None
    error: str | None = None
    summary: str = ""
    state_changes: Mapping[str, Any] = field(default_factory=dict)
    tokens_used: int = 0
    latency_ms: int = 0
    time_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success, "result": self.result, "error": self.error,
            "summary": self.summary, "state_changes": dict(self.state_changes),
            "tokens_used": self.tokens_used, "latency_ms": self.latency_ms,
            "time_ns": self.time_ns,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            success=bool(data["success"]), result=data.get("result"), error=data.get("error"),
            summary=data.get("summary", ""), state_changes=data.get("state_changes") or {},
            tokens_used=int(data.get("tokens_used", 0)),
            latency_ms=int(data.get("latency_ms", 0)), time_ns=int(data.get("time_ns", 0)),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """One recorded decision; ``outcome`` is filled in by ``record_outcome``."""

    id: str
    execution_id: str
    intent: str
    options: tuple[Option, ...]
    chosen_option_id: str
    reasoning: str
    node_id: str | None = None
    decision_type: str = DecisionType.CUSTOM.value
    active_constraints: tuple[str, ...] = ()
    input_context: Mapping[str, Any] = field(default_factory=dict)
    time_ns: int = 0
    outcome: Outcome | None = None

    @property
    def chosen_option(self) -> Option | None:
        return next((o for o in self.options if o.id == self.chosen_option_id), None)

    @property
    def was_successful(self) -> bool | None:
        return None if self.outcome is None else self.outcome.success


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem reported during a run."""

    id: str
    execution_id: str
    severity: str
    description: str
    decision_id: str | None = None
    root_cause: str | None = None
    suggested_fix: str | None = None
    node_id: str | None = None
    time_ns: int = 0


@dataclass(slots=True)
class Run:
    """One execution's run with everything recorded in it. Getters hand out copies."""

    execution_id: str
    stream_id: str
    goal_id: str | None = None
    goal_description: str = ""
    input_data: Mapping[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    started_ns: int = 0
    ended_ns: int | None = None
    narrative: str = ""
    output_data: Mapping[str, Any] = field(default_factory=dict)
    agent: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The run id: the execution id (one id on the bus, in the trace and the store)."""
        return self.execution_id

    @property
    def duration_ms(self) -> float | None:
        return None if self.ended_ns is None else (self.ended_ns - self.started_ns) / 1e6

    def copy(self) -> Run:
        return replace(self, decisions=list(self.decisions), problems=list(self.problems))

    def summary(self) -> RunSummary:
        return RunSummary(
            execution_id=self.execution_id, stream_id=self.stream_id, goal_id=self.goal_id,
            status=self.status, started_ns=self.started_ns, ended_ns=self.ended_ns,
            narrative=self.narrative, agent=self.agent, trace_id=self.trace_id,
            decision_count=len(self.decisions), problem_count=len(self.problems),
        )


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run without its decisions, for listings."""

    execution_id: str
    stream_id: str
    goal_id: str | None
    status: RunStatus
    started_ns: int
    ended_ns: int | None
    narrative: str
    agent: str | None
    trace_id: str | None
    decision_count: int
    problem_count: int


class StoreClosedError(RuntimeError):
    """Writing to a tracker store after ``close()``."""


@runtime_checkable
class TrackerStore(Protocol):
    """What the tracker needs from a store. Writes must not block for long: they are
    called on the event loop."""

    def run_started(self, run: Run) -> None: ...
    def decision_made(self, decision: Decision) -> None: ...
    def outcome_recorded(self, execution_id: str, decision_id: str, outcome: Outcome) -> None: ...
    def problem_reported(self, problem: Problem) -> None: ...
    def run_ended(self, run: Run) -> None: ...
    def get_run(self, execution_id: str) -> Run | None: ...
    def list_runs(self, *, stream_id: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunSummary]: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------- memory
class InMemoryTrackerStore:
    """Runs kept in memory; at most ``max_runs`` (the oldest ended runs go first)."""

    def __init__(self, *, max_runs: int = 1000) -> None:
        if not isinstance(max_runs, int) or max_runs < 1:
            raise ValueError(f"max_runs must be an int >= 1, got {max_runs!r}")
        self.max_runs = max_runs
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError("the in-memory tracker store is closed")

    def run_started(self, run: Run) -> None:
        with self._lock:
            self._check()
            self._runs.pop(run.execution_id, None)
            self._runs[run.execution_id] = run.copy()
            if len(self._runs) > self.max_runs:
                victim = next((k for k, r in self._runs.items()
                               if r.status is not RunStatus.RUNNING), None)
                self._runs.pop(victim if victim is not None else next(iter(self._runs)))

    def decision_made(self, decision: Decision) -> None:
        with self._lock:
            self._check()
            run = self._runs.get(decision.execution_id)
            if run is not None:
                run.decisions.append(decision)

    def outcome_recorded(self, execution_id: str, decision_id: str, outcome: Outcome) -> None:
        with self._lock:
            self._check()
            run = self._runs.get(execution_id)
            if run is None:
                return
            for index, decision in enumerate(run.decisions):
                if decision.id == decision_id:
                    run.decisions[index] = replace(decision, outcome=outcome)
                    return

    def problem_reported(self, problem: Problem) -> None:
        with self._lock:
            self._check()
            run = self._runs.get(problem.execution_id)
            if run is not None:
                run.problems.append(problem)

    def run_ended(self, run: Run) -> None:
        with self._lock:
            self._check()
            stored = self._runs.get(run.execution_id)
            if stored is None:
                self._runs[run.execution_id] = stored = run.copy()
            stored.status = run.status
            stored.ended_ns = run.ended_ns
            stored.narrative = run.narrative
            stored.output_data = run.output_data

    def get_run(self, execution_id: str) -> Run | None:
        with self._lock:
            run = self._runs.get(execution_id)
            return None if run is None else run.copy()

    def list_runs(self, *, stream_id: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunSummary]:
        with self._lock:
            runs = [r.summary() for r in reversed(self._runs.values())
                    if (stream_id is None or r.stream_id == stream_id)
                    and (status is None or r.status == status)]
        runs.sort(key=lambda r: r.started_ns, reverse=True)
        return runs[:limit]

    def get_decisions(self, execution_id: str) -> list[Decision]:
        run = self.get_run(execution_id)
        return [] if run is None else run.decisions

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        self._closed = True


# ---------------------------------------------------------------------------- SQLite
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
