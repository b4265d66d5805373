"""A trace as the web view draws it: a waterfall of spans, a timeline of decisions,
outcomes and problems, and one span's detail on demand.

The waterfall document leaves attributes out (a 10,000-span trace stays a few MB); the
browser asks for one span's attributes and events when it is clicked. Absolute times are
strings of nanoseconds (they exceed JavaScript's exact integers); offsets within the trace
are microseconds.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ...semconv import EV_DECISION, EV_OUTCOME, EV_PROBLEM, PENDING_SPAN_PREFIX
from ..names import OPERATION_ATTRIBUTE
from ..run_list import RunSummary, runs_in_trace
from ..run_sql import attribute

MAX_SPANS: Final = 20_000
"""Spans drawn per trace; a larger trace shows its first ones by start, marked truncated."""
TIMELINE_EVENTS: Final = {EV_DECISION: "decision", EV_OUTCOME: "outcome", EV_PROBLEM: "problem"}
_SUMMARY_LIMIT: Final = 160


class SpanNotFound(KeyError):
    def __str__(self) -> str:
        return f"span {self.args[0]} not found in trace {self.args[1]}"


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def trace_version(conn: sqlite3.Connection, trace_id: str) -> str | None:
    """A tag that changes whenever a span of the trace is stored (the ETag of its
    document); ``None`` if the trace has no spans."""
    count, received, pending = conn.execute(
        "SELECT COUNT(*), MAX(received_ms), SUM(pending) FROM spans WHERE trace_id = ?",
        (trace_id,)).fetchone()
    return None if not count else f"{count}-{received}-{pending}"


@dataclass(slots=True)
class _Span:
    span_id: str
    parent: str | None
    name: str
    operation: str | None
    start_ns: int
    end_ns: int | None
    status: str
    status_message: str
    pending: bool
    event_count: int
    service_name: str | None


_SPANS_SQL: Final = f"""
SELECT span_id, parent_span_id, name, {attribute(OPERATION_ATTRIBUTE)} AS operation,
       start_ns, end_ns, status_code, status_message, pending,
       json_array_length(events) AS event_count, service_name,
       CASE WHEN instr(events, '"agentbus.') = 0 THEN NULL ELSE events END AS marked_events
FROM spans WHERE trace_id = ? ORDER BY start_ns, span_id LIMIT ?
"""


def trace_document(conn: sqlite3.Connection, trace_id: str,
                   describe_run: Callable[[RunSummary], dict[str, Any]],
                   now_ns: int | None = None) -> dict[str, Any] | None:
    """The waterfall document of one trace, ``None`` if no span of it is stored; runs are
    given as ``describe_run`` makes them (with the page's links)."""
    rows = conn.execute(_SPANS_SQL, (trace_id, MAX_SPANS + 1)).fetchall()
    if not rows:
        return None
    truncated = len(rows) > MAX_SPANS
    rows = rows[:MAX_SPANS]
    spans = _stand_in_for_open_runs([_span(row) for row in rows])
    now = time.time_ns() if now_ns is None else now_ns
    start = min(s.start_ns for s in spans)
    in_progress = any(s.pending for s in spans)
    end = max((s.end_ns for s in spans if s.end_ns is not None), default=start)
    if in_progress:
        end = max(end, now)
    names = {s.span_id: s.name for s in spans}
    timeline = [item for row in rows if row["marked_events"] is not None
                for item in _timeline_items(row, names, start)]
    timeline.sort(key=lambda item: item["time_us"])
    runs = [describe_run(run) for run in runs_in_trace(conn, trace_id)]
    return {
        "trace_id": trace_id,
        "run": runs[0] if runs else None,
        "runs": runs,
        "start_ns": str(start),
        "start_iso": iso(start),
        "duration_us": (end - start) / 1e3,
        "in_progress": in_progress,
        "span_count": len(spans),
        "truncated": truncated,
        "spans": [_span_dict(s, depth, start) for depth, s in _depth_first(spans)],
        "timeline": timeline,
    }


def _span(row: sqlite3.Row) -> _Span:
    pending = bool(row["pending"])
    return _Span(
        span_id=row["span_id"], parent=row["parent_span_id"] or None, name=row["name"],
        operation=None if row["operation"] is None else str(row["operation"]),
        start_ns=int(row["start_ns"]), end_ns=None if pending else int(row["end_ns"]),
        status=row["status_code"], status_message=row["status_message"], pending=pending,
        event_count=int(row["event_count"] or 0), service_name=row["service_name"])


def _stand_in_for_open_runs(spans: list[_Span]) -> list[_Span]:
    """Let a run's pending record stand in for the run span until that span arrives.

    The record is the run span's child; while the run is open its parent is not stored and
    the run's finished spans would float as roots. Given the run span's id, the record
    gathers them under it, and is drawn as the run, still going. Once the run span is
    stored, the record is dropped (the CLI's ``get_trace`` does the same)."""
    stored = {s.span_id for s in spans if not s.pending}
    kept: list[_Span] = []
    taken: set[str] = set()
    for span in spans:
        if not span.pending:
            kept.append(span)
        elif span.parent is None or span.parent in stored:
            continue  # its span has arrived, or it belongs to nothing we can show
        elif span.parent not in taken:
            taken.add(span.parent)
            span.span_id, span.parent = span.parent, None
            span.name = _run_name(span.name)
            kept.append(span)
    return kept


def _run_name(pending_name: str) -> str:
    """``"agentbus.pending invoke_agent x"`` → ``"invoke_agent x"`` (the mirror's record
    name is the run span's, prefixed)."""
    head, sep, rest = pending_name.partition(" ")
    return rest if sep and head == PENDING_SPAN_PREFIX else pending_name


def _depth_first(spans: list[_Span]) -> list[tuple[int, _Span]]:
    """Parents before children, siblings by start; spans in a parent cycle become roots
    (iteratively: traces can be thousands of spans deep)."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[_Span]] = {}
    roots: list[_Span] = []
    for span in spans:  # already by start
        if span.parent is not None and span.parent in ids and span.parent != span.span_id:
            children.setdefault(span.parent, []).append(span)
        else:
            roots.append(span)
    order: list[tuple[int, _Span]] = []
    seen: set[str] = set()

    def visit(root: _Span) -> None:
        stack = [(0, root)]
        while stack:
            depth, span = stack.pop()
            if span.span_id in seen:
                continue
            seen.add(span.span_id)
            order.append((depth, span))
            stack.extend((depth + 1, child)
                         for child in reversed(children.get(span.span_id, ())))

    for root in roots:
        visit(root)
    for span in spans:  # a cycle no root reaches: cut at its earliest span
        if span.span_id not in seen:
            visit(span)
    return order


def _span_dict(span: _Span, depth: int, trace_start: int) -> dict[str, Any]:
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent,
        "depth": depth,
        "name": span.name,
        "operation": span.operation,
        "start_us": (span.start_ns - trace_start) / 1e3,
        "duration_us": None if span.end_ns is None else max(0, span.end_ns - span.start_ns) / 1e3,
        "status": span.status,
        "status_message": span.status_message,
        "pending": span.pending,
        "event_count": span.event_count,
        "service_name": span.service_name,
    }


def _timeline_items(row: sqlite3.Row, names: dict[str, str],
                    trace_start: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for event in json.loads(row["marked_events"]):
        kind = TIMELINE_EVENTS.get(event.get("name"))
        if kind is None:
            continue
        attributes = event.get("attributes") or {}
        items.append({
            "kind": kind,
            "name": event["name"],
            "time_us": (int(event["time_ns"]) - trace_start) / 1e3,
            "span_id": row["span_id"],
            "span_name": names.get(row["span_id"], row["name"]),
            "summary": _summary(kind, attributes),
            "attributes": attributes,
        })
    return items


_SUMMARY_KEYS: Final = {
    "decision": ("chosen", "intent", "reasoning"),
    "outcome": ("success", "summary", "result", "error"),
    "problem": ("severity", "description", "message", "kind"),
}


def _summary(kind: str, attributes: dict[str, Any]) -> str:
    """A short ``key=value`` line from the attributes that say most about the item."""
    prefix = f"agentbus.{kind}."
    short = {key.removeprefix(prefix): value for key, value in attributes.items()}
    wanted = [key for key in _SUMMARY_KEYS[kind] if key in short]
    keys = wanted or sorted(short)[:3]
    text = " ".join(f"{key}={_text(short[key])}" for key in keys)
    return text if len(text) <= _SUMMARY_LIMIT else text[:_SUMMARY_LIMIT - 1] + "…"


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


# ---- one span ----------------------------------------------------------------------


def span_detail(conn: sqlite3.Connection, trace_id: str, span_id: str) -> dict[str, Any]:
    """Everything stored of one span; a run's pending stand-in is found by the run span's
    id (the id the waterfall gave it)."""
    row = conn.execute("SELECT * FROM spans WHERE trace_id = ? AND span_id = ?",
                       (trace_id, span_id)).fetchone()
    if row is None:
        row = conn.execute(
            "SELECT * FROM spans WHERE trace_id = ? AND parent_span_id = ? AND pending = 1 "
            "ORDER BY start_ns LIMIT 1", (trace_id, span_id)).fetchone()
    if row is None:
        raise SpanNotFound(span_id, trace_id)
    start = conn.execute("SELECT MIN(start_ns) FROM spans WHERE trace_id = ?",
                         (trace_id,)).fetchone()[0]
    pending = bool(row["pending"])
    return {
        "span_id": span_id,
        "parent_span_id": None if pending else row["parent_span_id"] or None,
        "name": _run_name(row["name"]) if pending else row["name"],
        "kind": row["kind"],
        "operation": json.loads(row["attributes"]).get(OPERATION_ATTRIBUTE),
        "start_ns": str(row["start_ns"]),
        "start_iso": iso(row["start_ns"]),
        "start_us": (row["start_ns"] - start) / 1e3,
        "duration_us": None if pending else max(0, row["end_ns"] - row["start_ns"]) / 1e3,
        "status": row["status_code"],
        "status_message": row["status_message"],
        "pending": pending,
        "attributes": json.loads(row["attributes"]),
        "events": [{"name": e["name"], "time_us": (int(e["time_ns"]) - start) / 1e3,
                    "attributes": e.get("attributes") or {}}
                   for e in json.loads(row["events"])],
        "links": json.loads(row["links"]),
        "resource": json.loads(row["resource"]),
        "scope_name": row["scope_name"],
        "scope_version": row["scope_version"],
        "service_name": row["service_name"],
    }
