"""The web view's JSON answers: reading request parameters and shaping documents.

Kept apart from the routing (``app.py``) so what the browser receives can be tested
without a server. Every function here only reads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ..queries import normalize_trace_id
from ..run_list import (
    DEFAULT_LIMIT,
    BadRunQuery,
    RunQuery,
    RunSummary,
    decode_cursor,
    find_run_trace,
    query_runs,
    run_facets,
)
from .links import WebLinks
from .trace_view import span_detail, trace_document

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class NotFound(LookupError):
    """A run, trace or span the database does not hold; the message says which."""


def parse_time(value: str, name: str) -> int:
    """ns since the epoch from an ISO-8601 time (UTC unless it says otherwise), a date, or
    an integer of nanoseconds."""
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRunQuery(f"{name}: expected an ISO-8601 time (2026-12-07T18:00:00Z) or "
                          f"nanoseconds since the epoch, got {value[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def run_query(params: Mapping[str, str]) -> RunQuery:
    """The list's filters from query parameters; ``BadRunQuery`` names a bad one."""
    def text(name: str) -> str | None:
        value = params.get(name, "").strip()
        return value or None

    limit_text = text("limit") or str(DEFAULT_LIMIT)
    try:
        limit = int(limit_text)
    except ValueError:
        raise BadRunQuery(f"limit: expected a whole number, got {limit_text[:20]!r}") from None
    since, until, before = text("since"), text("until"), text("before")
    return RunQuery(
        agent=text("agent"),
        status=text("status"),
        search=text("q"),
        since_ns=None if since is None else parse_time(since, "since"),
        until_ns=None if until is None else parse_time(until, "until"),
        limit=limit,
        before=None if before is None else decode_cursor(before),
    )


def run_links(run_id: str, trace_id: str, links: WebLinks) -> dict[str, str | None]:
    return {
        "run": f"/runs/{quote(run_id, safe='')}",
        "trace": f"/traces/{trace_id}",
        "jaeger": links.jaeger(trace_id),
        "grafana": links.grafana(trace_id),
    }


def describe_run(run: RunSummary, links: WebLinks) -> dict[str, Any]:
    return {**run.to_dict(), "links": run_links(run.run_id, run.trace_id, links)}


def runs_answer(conn: sqlite3.Connection, query: RunQuery, links: WebLinks) -> dict[str, Any]:
    page = query_runs(conn, query)
    agents, statuses = run_facets(conn)
    return {
        "runs": [describe_run(run, links) for run in page.runs],
        "next": page.next_cursor,
        "agents": agents,
        "statuses": statuses,
    }


def trace_id_for_run(conn: sqlite3.Connection, run_id: str) -> str:
    trace_id = find_run_trace(conn, run_id)
    if trace_id is None:
        raise NotFound(f"no run with id {run_id!r} is stored")
    return trace_id


def checked_trace_id(trace_id: str) -> str:
    try:
        return normalize_trace_id(trace_id)
    except ValueError as exc:
        raise BadRunQuery(str(exc)) from None


def trace_answer(conn: sqlite3.Connection, trace_id: str, links: WebLinks) -> dict[str, Any]:
    document = trace_document(conn, trace_id, lambda run: describe_run(run, links))
    if document is None:
        raise NotFound(f"no span of trace {trace_id} is stored")
    run = document["run"]
    document["links"] = {
        "run": None if run is None else run["links"]["run"],
        "trace": f"/traces/{trace_id}",
        "jaeger": links.jaeger(trace_id),
        "grafana": links.grafana(trace_id),
    }
    return document


def span_answer(conn: sqlite3.Connection, trace_id: str, span_id: str) -> dict[str, Any]:
    try:
        return span_detail(conn, trace_id, span_id)
    except KeyError as exc:
        raise NotFound(str(exc)) from None
