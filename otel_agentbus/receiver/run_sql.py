"""The SQL that finds agent runs among stored spans, shared by ``list_runs`` (the CLI)
and the web view's paginated list, so both agree on what a run is.

A run is an ``invoke_agent`` span not nested under another one, or, while it is still
open, the pending record its mirror exported at its start (a child of the run span, which
is not stored yet). Both halves are served by partial indexes the store creates
(``spans_runs``, ``spans_pending``), so listing runs reads only run rows, not every span:
the condition below must stay textually the same as those indexes' ``WHERE``.
"""

from __future__ import annotations

from typing import Final

from .names import (
    AGENT_ATTRIBUTE,
    INVOKE_AGENT,
    OPERATION_ATTRIBUTE,
    RUN_ID_ATTRIBUTE,
    RUN_STATUS_ATTRIBUTE,
)


def attribute(name: str, table: str = "") -> str:
    """SQL for one span attribute's value (``attributes`` is a JSON object)."""
    prefix = f"{table}." if table else ""
    return f"json_extract({prefix}attributes, '$.\"{name}\"')"


IS_AGENT_SPAN: Final = f"{attribute(OPERATION_ATTRIBUTE)} = '{INVOKE_AGENT}'"
"""The ``spans_runs`` index's condition."""
IS_PENDING: Final = "pending = 1"
"""The ``spans_pending`` index's condition."""

RUN_INDEXES: Final = f"""
CREATE INDEX IF NOT EXISTS spans_runs ON spans (start_ns) WHERE {IS_AGENT_SPAN};
CREATE INDEX IF NOT EXISTS spans_pending ON spans (start_ns) WHERE {IS_PENDING};
"""

_NOT_NESTED: Final = f"""NOT EXISTS (
      SELECT 1 FROM spans p
      WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
        AND {attribute(OPERATION_ATTRIBUTE, 'p')} = '{INVOKE_AGENT}')"""
_PARENT_NOT_STORED: Final = """NOT EXISTS (
      SELECT 1 FROM spans r WHERE r.trace_id = s.trace_id AND r.span_id = s.parent_span_id)"""

RUN_STATUS: Final = f"""(CASE
    WHEN s.pending = 1 THEN 'running'
    WHEN COALESCE({attribute(RUN_STATUS_ATTRIBUTE, 's')}, '') != ''
      THEN CAST({attribute(RUN_STATUS_ATTRIBUTE, 's')} AS TEXT)
    WHEN s.status_code = 'ERROR' THEN 'failed'
    ELSE 'completed' END)"""
"""A run's status: running while only its pending record is stored, else what the mirror
set on the run span, else failed or completed by the span's status."""
RUN_ID: Final = f"COALESCE(NULLIF(CAST({attribute(RUN_ID_ATTRIBUTE, 's')} AS TEXT), ''), s.span_id)"
AGENT: Final = attribute(AGENT_ATTRIBUTE, "s")


def run_spans_sql(columns: str, where: str = "1", order: str = "", limit: str = "") -> str:
    """Run spans (both halves) with ``columns`` of ``spans s``, each half filtered by
    ``where`` (which may use :data:`RUN_STATUS`, :data:`RUN_ID`, :data:`AGENT`)."""
    # Each half is its own SELECT so each can use its partial index (SQLite picks one when
    # the query's WHERE contains the index's condition as written, hence unqualified).
    return f"""
SELECT * FROM (
  SELECT {columns} FROM spans s
  WHERE {IS_AGENT_SPAN} AND s.pending = 0 AND {_NOT_NESTED} AND ({where})
  UNION ALL
  SELECT {columns} FROM spans s
  WHERE {IS_PENDING} AND {_PARENT_NOT_STORED} AND ({where})
) {order} {limit}"""
