"""One page of the runs list, filtered and newest first, with each run's totals.

The web view asks for this on every visit and, while a run is going, every few seconds, so
it must not grow with the database: the page's runs come from the partial run indexes
(``run_sql``) walked newest first and stopped after ``limit`` rows (keyset pagination, no
``OFFSET``), and the totals (tokens, tool calls, decisions, problems) are computed only for
the traces on the page.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from ..semconv import (
    ERROR_TYPE,
    EV_DECISION,
    EV_PROBLEM,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    OP_CHAT,
    OP_EXECUTE_TOOL,
)
from .names import OPERATION_ATTRIBUTE
from .run_sql import AGENT, RUN_ID, RUN_STATUS, attribute, run_spans_sql

MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 50
MAX_NS: Final = 2**63 - 1
"""The latest time SQLite's 64-bit integers (and OTLP's nanoseconds) can hold."""
MIN_SEARCH: Final = 4
"""A run id or trace id search needs this many characters (fewer match almost anything)."""
LLM_OPERATIONS: Final = (OP_CHAT, "text_completion", "generate_content")
"""GenAI operation names of model calls, whose token usage adds up to a run's."""


class BadRunQuery(ValueError):
    """A list parameter that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class RunQuery:
    """Filters and the page position; every field optional."""

    agent: str | None = None
    status: str | None = None
    search: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    limit: int = DEFAULT_LIMIT
    before: tuple[int, str, str] | None = None
    """Keyset cursor: runs strictly older than (start_ns, trace_id, span_id)."""

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise BadRunQuery(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")
        for name, value in (("since", self.since_ns), ("until", self.until_ns)):
            if value is not None and not 0 <= value <= MAX_NS:
                raise BadRunQuery(f"{name}: out of range (from 1970 to 2262, as "
                                  "nanoseconds since the epoch fit 64 bits)")
        if self.search is not None and len(self.search.strip()) < MIN_SEARCH:
            raise BadRunQuery(f"q: give at least {MIN_SEARCH} characters of a run id or "
                              "trace id")


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One row of the runs list."""

    run_id: str
    trace_id: str
    span_id: str
    agent: str | None
    name: str
    service_name: str | None
    status: str
    start_ns: int
    end_ns: int | None
    """``None`` while the run is in progress."""
    span_count: int
    input_tokens: int | None
    output_tokens: int | None
    tool_calls: int
    decisions: int
    problems: int
    error: str | None

    @property
    def duration_ms(self) -> float | None:
        return None if self.end_ns is None else max(0, self.end_ns - self.start_ns) / 1e6

    def to_dict(self) -> dict[str, Any]:
        start = datetime.fromtimestamp(self.start_ns / 1e9, tz=UTC)
        return {
            "run_id": self.run_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "agent": self.agent,
            "name": self.name,
            "service_name": self.service_name,
            "status": self.status,
            "start_ns": str(self.start_ns),
            "start_iso": start.isoformat(timespec="milliseconds"),
            "duration_ms": self.duration_ms,
            "span_count": self.span_count,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tool_calls": self.tool_calls,
            "decisions": self.decisions,
            "problems": self.problems,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class RunPage:
    runs: list[RunSummary]
    next_cursor: str | None
    """Pass as ``before`` for the next (older) page; ``None`` on the last page."""


# ---- cursor ------------------------------------------------------------------------


def encode_cursor(run: RunSummary) -> str:
    raw = json.dumps([run.start_ns, run.trace_id, run.span_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, str, str]:
    """The position a :func:`encode_cursor` string holds; ``BadRunQuery`` if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        start, trace_id, span_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadRunQuery(f"before: not a cursor from this list: {text[:40]!r}") from None
    if not (isinstance(start, int) and isinstance(trace_id, str) and isinstance(span_id, str)):
        raise BadRunQuery(f"before: not a cursor from this list: {text[:40]!r}")
    return start, trace_id, span_id


# ---- queries -----------------------------------------------------------------------

_COLUMNS: Final = (
    f"s.trace_id, s.span_id, s.name, s.start_ns, s.end_ns, s.status_code, s.status_message, "
    f"s.pending, s.service_name, {RUN_ID} AS run_id, {AGENT} AS agent, "
    f"{RUN_STATUS} AS status, {attribute(GEN_AI_USAGE_INPUT_TOKENS, 's')} AS input_tokens, "
    f"{attribute(GEN_AI_USAGE_OUTPUT_TOKENS, 's')} AS output_tokens, "
    f"{attribute(ERROR_TYPE, 's')} AS error_type"
)
_ORDER: Final = "ORDER BY start_ns DESC, trace_id DESC, span_id DESC"


def _where(query: RunQuery) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.agent is not None:
        clauses.append(f"{AGENT} = ?")
        params.append(query.agent)
    if query.status is not None:
        clauses.append(f"{RUN_STATUS} = ?")
        params.append(query.status)
    if query.since_ns is not None:
        clauses.append("s.start_ns >= ?")
        params.append(query.since_ns)
    if query.until_ns is not None:
        clauses.append("s.start_ns <= ?")
        params.append(query.until_ns)
    if query.search is not None:
        text = query.search.strip()
        # substr() rather than LIKE: ids may hold % or _, which LIKE would read as wildcards.
        clauses.append(f"(substr({RUN_ID}, 1, ?) = ? OR substr(s.trace_id, 1, ?) = ?)")
        params += [len(text), text, len(text), text.lower()]
    if query.before is not None:
        # The plain bound lets SQLite walk the index from the cursor on.
        clauses.append("s.start_ns <= ? AND (s.start_ns, s.trace_id, s.span_id) < (?, ?, ?)")
        params += [query.before[0], *query.before]
    return " AND ".join(clauses) or "1", params


def query_runs(conn: sqlite3.Connection, query: RunQuery) -> RunPage:
    """One page of runs, newest first, with totals."""
    where, params = _where(query)
    sql = run_spans_sql(_COLUMNS, where, _ORDER, "LIMIT ?")
    rows = conn.execute(sql, [*params, *params, query.limit + 1]).fetchall()
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    totals = trace_totals(conn, {row["trace_id"] for row in rows})
    runs = [_summary(row, totals.get(row["trace_id"], _NO_TOTALS)) for row in rows]
    return RunPage(runs, encode_cursor(runs[-1]) if more and runs else None)


def runs_in_trace(conn: sqlite3.Connection, trace_id: str) -> list[RunSummary]:
    """Every run of one trace, oldest first."""
    sql = run_spans_sql(_COLUMNS, "s.trace_id = ?", "ORDER BY start_ns, span_id")
    rows = conn.execute(sql, [trace_id, trace_id]).fetchall()
    totals = trace_totals(conn, {trace_id})
    return [_summary(row, totals.get(trace_id, _NO_TOTALS)) for row in rows]


def find_run_trace(conn: sqlite3.Connection, run_id: str) -> str | None:
    """The trace of the run with id ``run_id`` (the newest, should two share it)."""
    sql = run_spans_sql("s.trace_id, s.start_ns", f"{RUN_ID} = ?", "ORDER BY start_ns DESC",
                        "LIMIT 1")
    row = conn.execute(sql, [run_id, run_id]).fetchone()
    return None if row is None else str(row[0])


def run_facets(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
    """Every agent name and every status among stored runs, for the list's filters."""
    sql = run_spans_sql(f"{AGENT} AS agent, {RUN_STATUS} AS status")
    agents: set[str] = set()
    statuses: set[str] = set()
    for agent, status in conn.execute(f"SELECT DISTINCT agent, status FROM ({sql})"):
        if agent is not None:
            agents.add(str(agent))
        statuses.add(str(status))
    return sorted(agents), sorted(statuses)


# ---- totals ------------------------------------------------------------------------

_LLM_OPS: Final = ", ".join(f"'{op}'" for op in LLM_OPERATIONS)
_OPERATION: Final = attribute(OPERATION_ATTRIBUTE)


def _event_count(name: str) -> str:
    # instr() first: most spans have no such event and their JSON is not parsed at all.
    return (f"SUM(CASE WHEN instr(events, '\"{name}\"') = 0 THEN 0 ELSE ("
            f"SELECT COUNT(*) FROM json_each(events) e "
            f"WHERE json_extract(e.value, '$.name') = '{name}') END)")


_TOTALS_SQL: Final = f"""
SELECT trace_id,
       SUM(pending = 0) AS span_count,
       SUM({_OPERATION} = '{OP_EXECUTE_TOOL}') AS tool_calls,
       SUM(CASE WHEN {_OPERATION} IN ({_LLM_OPS})
           THEN {attribute(GEN_AI_USAGE_INPUT_TOKENS)} END) AS input_tokens,
       SUM(CASE WHEN {_OPERATION} IN ({_LLM_OPS})
           THEN {attribute(GEN_AI_USAGE_OUTPUT_TOKENS)} END) AS output_tokens,
       {_event_count(EV_DECISION)} AS decisions,
       {_event_count(EV_PROBLEM)} AS problems
FROM spans WHERE trace_id IN (SELECT value FROM json_each(?)) GROUP BY trace_id
"""


@dataclass(frozen=True, slots=True)
class _Totals:
    span_count: int = 0
    tool_calls: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    decisions: int = 0
    problems: int = 0


_NO_TOTALS: Final = _Totals()


def trace_totals(conn: sqlite3.Connection, trace_ids: Iterable[str]) -> dict[str, _Totals]:
    ids = sorted(trace_ids)
    if not ids:
        return {}
    totals: dict[str, _Totals] = {}
    for row in conn.execute(_TOTALS_SQL, (json.dumps(ids),)):
        totals[row[0]] = _Totals(
            int(row[1] or 0), int(row[2] or 0), _int_or_none(row[3]), _int_or_none(row[4]),
            int(row[5] or 0), int(row[6] or 0))
    return totals


def _int_or_none(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error_text(row: sqlite3.Row) -> str | None:
    if row["status_code"] != "ERROR":
        return None
    kind, message = str(row["error_type"] or ""), str(row["status_message"] or "")
    if kind and not message.startswith(kind):
        return f"{kind}: {message}" if message else kind
    return message or kind or "error"


def _summary(row: sqlite3.Row, totals: _Totals) -> RunSummary:
    pending = bool(row["pending"])
    # The run span carries the run's usage when the mirror made it; other producers leave
    # it to the model-call spans, summed per trace.
    input_tokens = _int_or_none(row["input_tokens"])
    output_tokens = _int_or_none(row["output_tokens"])
    if input_tokens is None and output_tokens is None:
        input_tokens, output_tokens = totals.input_tokens, totals.output_tokens
    agent = row["agent"]
    return RunSummary(
        run_id=str(row["run_id"]),
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        agent=None if agent is None else str(agent),
        name=row["name"],
        service_name=row["service_name"],
        status=str(row["status"]),
        start_ns=int(row["start_ns"]),
        end_ns=None if pending else int(row["end_ns"]),
        span_count=totals.span_count,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tool_calls=totals.tool_calls,
        decisions=totals.decisions,
        problems=totals.problems,
        error=_error_text(row),
    )
