"""Read-side of the receiver database: runs, trace trees, metric points, logs.

Plain dataclasses so the CLI, the demo and tests share one interpretation of
what a "run" is and how a trace nests.
"""

from __future__ import annotations

import errno
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from .names import (
    PENDING_ATTRIBUTE,
    RUN_ID_ATTRIBUTE,
)
from .run_sql import AGENT, RUN_ID, RUN_STATUS, run_spans_sql

_REQUIRED_TABLES: Final = frozenset({"spans", "metrics", "logs"})


class NotAReceiverDatabase(ValueError):
    """The file exists but was not written by the receiver."""


class TraceNotFoundError(KeyError):
    """No span of the requested trace is stored."""

    def __init__(self, trace_id: str, db_path: str | Path) -> None:
        super().__init__(trace_id)
        self.trace_id = trace_id
        self.db_path = str(db_path)

    def __str__(self) -> str:
        return f"trace {self.trace_id} not found in {self.db_path}"


# ---- rows -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "time_ns": self.time_ns, "attributes": self.attributes}


@dataclass(frozen=True, slots=True)
class SpanRow:
    """One stored span; ``pending`` means only the in-progress placeholder arrived."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status_code: str
    status_message: str
    attributes: dict[str, Any]
    events: list[SpanEvent]
    links: list[dict[str, Any]]
    resource: dict[str, Any]
    scope_name: str
    service_name: str | None
    pending: bool

    @property
    def in_progress(self) -> bool:
        return self.pending

    @property
    def duration_ns(self) -> int | None:
        if self.pending or self.end_ns < self.start_ns:
            return None
        return self.end_ns - self.start_ns

    @property
    def duration_ms(self) -> float | None:
        ns = self.duration_ns
        return None if ns is None else ns / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "duration_ms": self.duration_ms,
            "status_code": self.status_code,
            "status_message": self.status_message,
            "in_progress": self.pending,
            "attributes": self.attributes,
            "events": [e.to_dict() for e in self.events],
            "links": self.links,
            "resource": self.resource,
            "scope_name": self.scope_name,
            "service_name": self.service_name,
        }


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class SpanNode:
    """One span and its children. Compared by identity and walked with an explicit stack:
    the generated structural ``==``/``repr`` and recursive walks overflowed Python's stack
    on traces a few hundred spans deep. Every walk visits a node at most once, so a
    hand-built cycle of nodes cannot make one loop."""

    span: SpanRow
    children: list[SpanNode] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"SpanNode(span_id={self.span.span_id!r}, name={self.span.name!r}, "
                f"children={len(self.children)})")

    def to_dict(self) -> dict[str, Any]:
        return _forest_dicts([self])[0]

    def walk(self, depth: int = 0) -> Iterator[tuple[int, SpanNode]]:
        """Depth-first ``(depth, node)`` pairs, parents before children."""
        return _walk([self], depth)


def _forest_dicts(roots: list[SpanNode]) -> list[dict[str, Any]]:
    """Nested dicts of a forest built top-down with a stack; each node appears once."""
    out: list[dict[str, Any]] = []
    stack: list[tuple[list[SpanNode], list[dict[str, Any]]]] = [(roots, out)]
    seen: set[int] = set()
    while stack:
        nodes, into = stack.pop()
        for node in nodes:
            if id(node) in seen:
                continue
            seen.add(id(node))
            entry: dict[str, Any] = {**node.span.to_dict(), "children": []}
            into.append(entry)
            stack.append((node.children, entry["children"]))
    return out


def _walk(roots: list[SpanNode], depth: int = 0) -> Iterator[tuple[int, SpanNode]]:
    """Pre-order ``(depth, node)`` over a forest, each node once, with a stack of its own."""
    seen: set[int] = set()

    def fresh(nodes: list[SpanNode]) -> list[SpanNode]:
        new = [node for node in nodes if id(node) not in seen]
        seen.update(id(node) for node in new)
        return new

    stack = [(depth, root) for root in reversed(fresh(roots))]
    while stack:
        level, node = stack.pop()
        yield level, node
        stack.extend((level + 1, child) for child in reversed(fresh(node.children)))


@dataclass(frozen=True, slots=True)
class TraceTree:
    """A trace as a forest: real roots and orphans (parent not stored) at top level."""

    trace_id: str
    roots: list[SpanNode]
    spans: list[SpanRow]

    def walk(self) -> Iterator[tuple[int, SpanNode]]:
        """Every node once, depth first, parents before children."""
        return _walk(self.roots)

    def span(self, span_id: str) -> SpanRow:
        for span in self.spans:
            if span.span_id == span_id:
                return span
        raise KeyError(span_id)

    def named(self, name: str) -> list[SpanRow]:
        return [s for s in self.spans if s.name == name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "trace_id": self.trace_id,
            "span_count": len(self.spans),
            "roots": _forest_dicts(self.roots),
        }


@dataclass(frozen=True, slots=True)
class RunRow:
    """A top-level ``invoke_agent`` span, i.e. one agent run."""

    run_id: str
    agent: str | None
    status: str
    start_ns: int
    duration_s: float | None
    span_count: int
    trace_id: str
    span_id: str
    name: str
    service_name: str | None

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ns / 1e9, tz=UTC)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "agent": self.agent,
            "status": self.status,
            "start": self.start.isoformat(timespec="milliseconds"),
            "start_ns": self.start_ns,
            "duration_s": self.duration_s,
            "span_count": self.span_count,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "service_name": self.service_name,
        }


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One data point; ``value`` for sum/gauge, ``histogram`` for the other types."""

    name: str
    description: str
    unit: str
    type: str
    time_ns: int
    start_time_ns: int
    attributes: dict[str, Any]
    value: float | int | None
    histogram: dict[str, Any] | None
    exemplars: list[dict[str, Any]]
    temporality: str | None
    is_monotonic: bool | None
    resource: dict[str, Any]
    scope_name: str
    service_name: str | None


@dataclass(frozen=True, slots=True)
class LogRecord:
    time_ns: int
    observed_time_ns: int
    severity_number: int
    severity_text: str
    body: Any
    event_name: str
    attributes: dict[str, Any]
    trace_id: str | None
    span_id: str | None
    flags: int
    resource: dict[str, Any]
    scope_name: str
    service_name: str | None


# ---- access -----------------------------------------------------------------


@contextmanager
def connect(db_path: str | Path) -> Iterator[sqlite3.Connection]:
    """Open the database read-only, with clear errors for a missing or foreign file."""
    path = Path(db_path).absolute()
    if path.is_dir():
        raise NotAReceiverDatabase(f"{path} is a directory, not a receiver database file")
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "receiver database not found", str(path))
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10.0)
    try:
        conn.row_factory = sqlite3.Row
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            raise NotAReceiverDatabase(f"{path} is not a receiver database: {exc}") from None
        missing = _REQUIRED_TABLES - tables
        if missing:
            raise NotAReceiverDatabase(
                f"{path} is not a receiver database (missing tables: {', '.join(sorted(missing))})"
            )
        yield conn
    finally:
        conn.close()


def _fetch(db_path: str | Path, sql: str, params: tuple[str, ...] = ()) -> list[sqlite3.Row]:
    """All rows of one query; the connection is closed before the rows are interpreted."""
    with connect(db_path) as conn:
        return conn.execute(sql, params).fetchall()


def _json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _optional_bool(value: int | None) -> bool | None:
    """SQLite stores a flag as 0/1; NULL stays "not applicable"."""
    return None if value is None else bool(value)


def _events(text: str) -> list[SpanEvent]:
    """The ``events`` column (JSON) as typed events, so callers need not know its keys."""
    return [
        SpanEvent(name=e["name"], time_ns=e["time_ns"], attributes=e["attributes"])
        for e in _json(text)
    ]


_Row = TypeVar("_Row", SpanRow, MetricPoint, LogRecord)
_Decoder = Callable[[Any], Any]


def _reader(cls: type[_Row], decoders: Mapping[str, _Decoder]) -> Callable[[sqlite3.Row], _Row]:
    """A reader building ``cls`` from a row's same-named columns, ``decoders`` undoing how
    some are stored (JSON text, 0/1): one copy for every row type, not a field-by-field one
    each."""
    names = tuple(f.name for f in fields(cls))

    def read(row: sqlite3.Row) -> _Row:
        return cls(**{name: decoders[name](row[name]) if name in decoders else row[name]
                      for name in names})

    return read


_span: Final = _reader(SpanRow, {
    "attributes": _json, "events": _events, "links": _json, "resource": _json, "pending": bool,
})
_metric_point: Final = _reader(MetricPoint, {
    "attributes": _json, "histogram": _json, "exemplars": _json, "resource": _json,
    "is_monotonic": _optional_bool,
})
_log_record: Final = _reader(LogRecord, {"body": _json, "attributes": _json, "resource": _json})


_RUNS_SQL: Final = run_spans_sql(
    "s.*, (SELECT COUNT(*) FROM spans c WHERE c.trace_id = s.trace_id AND c.pending = 0) "
    f"AS span_count, {RUN_ID} AS run_id, {AGENT} AS agent, {RUN_STATUS} AS status",
    order="ORDER BY start_ns, trace_id, span_id")


def list_runs(db_path: str | Path) -> list[RunRow]:
    """Top-level agent runs (an ``invoke_agent`` span not under another one, or the pending
    record of a run not ended yet), oldest first."""
    runs: list[RunRow] = []
    for row in _fetch(db_path, _RUNS_SQL):
        span = _span(row)
        agent = row["agent"]
        duration = span.duration_ns
        runs.append(
            RunRow(
                run_id=str(row["run_id"]),
                agent=None if agent is None else str(agent),
                status=str(row["status"]),
                start_ns=span.start_ns,
                duration_s=None if duration is None else duration / 1e9,
                span_count=int(row["span_count"]),
                trace_id=span.trace_id,
                span_id=span.span_id,
                name=span.name,
                service_name=span.service_name,
            )
        )
    return runs


def normalize_trace_id(trace_id: str) -> str:
    """Lower-case 32-hex-digit form; raises ``ValueError`` for anything else."""
    text = trace_id.strip().lower()
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"invalid trace id {trace_id!r}: expected 32 hex digits")
    return text


def _build_forest(spans: list[SpanRow]) -> list[SpanNode]:
    """Nest ``spans`` (in start order) under their parents, in time linear in their number.

    Roots are spans whose parent is not stored or is the span itself. Malformed input can
    put spans in a parent cycle, which no root reaches: the earliest span of each cycle is
    then cut from its parent and becomes a root, the rest of the cycle nested under it."""
    order = {s.span_id: i for i, s in enumerate(spans)}
    parent_of: dict[str, str] = {}
    children: dict[str, list[str]] = {}
    root_ids: list[str] = []
    for span in spans:
        parent = span.parent_span_id or ""
        if parent in order and parent != span.span_id:
            parent_of[span.span_id] = parent
            children.setdefault(parent, []).append(span.span_id)
        else:
            root_ids.append(span.span_id)
    placed: set[str] = set()

    def reach(start: str) -> None:
        stack = [start]
        placed.add(start)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in placed:
                    placed.add(child)
                    stack.append(child)

    for span_id in root_ids:
        reach(span_id)
    cut: set[str] = set()
    for span in spans:
        if span.span_id in placed:
            continue
        # Unplaced, so are all its ancestors: going up must come back round to a cycle.
        path: dict[str, int] = {}
        current = span.span_id
        while current not in path:
            path[current] = len(path)
            current = parent_of[current]
        cycle = list(path)[path[current]:]
        first = min(cycle, key=order.__getitem__)
        cut.add(first)
        reach(first)
    nodes = {s.span_id: SpanNode(s) for s in spans}
    roots: list[SpanNode] = []
    for span in spans:  # start order, so children lists come out sorted
        node = nodes[span.span_id]
        parent_id = parent_of.get(span.span_id)
        if parent_id is None or span.span_id in cut:
            roots.append(node)
        else:
            nodes[parent_id].children.append(node)
    return roots


def get_trace(db_path: str | Path, trace_id: str) -> TraceTree:
    """All spans of one trace, as a tree and as a flat list sorted by start time."""
    tid = normalize_trace_id(trace_id)
    rows = _fetch(db_path, "SELECT * FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id",
                  (tid,))
    if not rows:
        raise TraceNotFoundError(tid, Path(db_path).absolute())
    spans = [_span(r) for r in rows]
    # A pending record told the backend its span was running; once that span is stored
    # the record only clutters the tree.
    finished = {s.span_id for s in spans if not s.pending}
    spans = [s for s in spans if not (s.pending and (s.parent_span_id or "") in finished)]
    return TraceTree(trace_id=tid, roots=_build_forest(spans), spans=spans)


class NoMatchingTraceError(TraceNotFoundError):
    """No stored trace id or run id is, or starts with, the reference."""

    def __str__(self) -> str:
        return (f"no trace id or run id is or starts with {self.trace_id!r} "
                f"in {self.db_path}")


class AmbiguousTraceReference(ValueError):
    """A prefix matching more than one trace: the message lists the candidates."""

    def __init__(self, reference: str, candidates: list[tuple[str, str]]) -> None:
        self.reference = reference
        self.candidates = candidates
        shown = [f"  {what} {ident}" + ("" if what == "trace" else f"  (trace {trace})")
                 for what, ident, trace in _describe(candidates)]
        more = len(shown) - _MAX_CANDIDATES
        lines = shown[:_MAX_CANDIDATES] + ([f"  ... and {more} more"] if more > 0 else [])
        super().__init__(
            f"{reference!r} matches {len({t for _, t in candidates})} traces; "
            "give more characters:\n" + "\n".join(lines))


_MAX_CANDIDATES: Final = 10


def _describe(candidates: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """``(run id or "", trace id)`` pairs as ``(what, id, trace)`` rows for a message."""
    return [("run", ident, trace) if ident else ("trace", trace, trace)
            for ident, trace in candidates]


_RUN_ID_SQL: Final = f"""
SELECT DISTINCT json_extract(attributes, '$."{RUN_ID_ATTRIBUTE}"') AS run_id, trace_id
FROM spans
WHERE json_extract(attributes, '$."{RUN_ID_ATTRIBUTE}"') IS NOT NULL
  AND substr(json_extract(attributes, '$."{RUN_ID_ATTRIBUTE}"'), 1, ?) = ?
ORDER BY run_id, trace_id
"""
_TRACE_PREFIX_SQL: Final = """
SELECT DISTINCT trace_id FROM spans WHERE substr(trace_id, 1, ?) = ? ORDER BY trace_id
"""


def resolve_trace_id(db_path: str | Path, reference: str) -> str:
    """The trace id a ``trace`` argument names: a trace id, a run id, or a prefix of
    either that only one trace matches (exact matches win over prefixes)."""
    ref = reference.strip()
    if not ref:
        raise ValueError("empty trace reference: give a trace id, a run id or a prefix")
    with connect(db_path) as conn:
        runs = [(str(r[0]), str(r[1]))
                for r in conn.execute(_RUN_ID_SQL, (len(ref), ref)).fetchall()]
        hex_ref = ref.lower()
        traces = [str(r[0]) for r in conn.execute(
            _TRACE_PREFIX_SQL, (len(hex_ref), hex_ref)).fetchall()]
    if hex_ref in traces:
        return hex_ref
    exact = {trace for run_id, trace in runs if run_id == ref}
    if len(exact) == 1:
        return exact.pop()
    candidates = [("", trace) for trace in traces] + runs
    matched = {trace for _, trace in candidates}
    if len(matched) == 1:
        return matched.pop()
    if not matched:
        raise NoMatchingTraceError(ref, Path(db_path).absolute())
    raise AmbiguousTraceReference(ref, candidates)


def trace_ids(db_path: str | Path) -> list[str]:
    """Every stored trace id, by first span start."""
    rows = _fetch(db_path, "SELECT trace_id FROM spans GROUP BY trace_id ORDER BY MIN(start_ns)")
    return [r[0] for r in rows]


def metric_points(db_path: str | Path, name: str) -> list[MetricPoint]:
    """Every stored data point of metric ``name``, in time order."""
    rows = _fetch(db_path, "SELECT * FROM metrics WHERE name = ? ORDER BY time_ns, id", (name,))
    return [_metric_point(r) for r in rows]


def log_records(db_path: str | Path, trace_id: str | None = None) -> list[LogRecord]:
    """Stored log records (optionally only those of one trace), in time order."""
    sql = "SELECT * FROM logs"
    params: tuple[str, ...] = ()
    if trace_id is not None:
        sql += " WHERE trace_id = ?"
        params = (normalize_trace_id(trace_id),)
    sql += " ORDER BY CASE WHEN time_ns > 0 THEN time_ns ELSE observed_time_ns END, id"
    return [_log_record(r) for r in _fetch(db_path, sql, params)]


__all__ = [
    "PENDING_ATTRIBUTE",
    "AmbiguousTraceReference",
    "LogRecord",
    "MetricPoint",
    "NoMatchingTraceError",
    "NotAReceiverDatabase",
    "RunRow",
    "SpanEvent",
    "SpanNode",
    "SpanRow",
    "TraceNotFoundError",
    "TraceTree",
    "get_trace",
    "list_runs",
    "log_records",
    "metric_points",
    "normalize_trace_id",
    "resolve_trace_id",
    "trace_ids",
]
