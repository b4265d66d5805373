"""Hive's ``framework.observability.set_trace_context`` (imported by seed 003): the ids of
the run in progress, for log correlation, in a context variable of the calling task.

``StreamDecisionTracker.start_run`` sets them; with telemetry attached ``trace_id`` is the
run's own OpenTelemetry trace id (the seed makes up a random one).
"""

from __future__ import annotations

from contextvars import ContextVar

_TRACE_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar(
    "otel_agentbus_hive_trace_context", default=None)


def set_trace_context(**fields: str | None) -> None:
    """Hive's ``framework.observability.set_trace_context``: ids for log correlation
    (``trace_id``, ``execution_id``, ``run_id``, ``goal_id``, ``stream_id``), kept in a
    context variable of the calling task."""
    current = dict(_TRACE_CONTEXT.get() or {})
    current.update({key: str(value) for key, value in fields.items() if value is not None})
    _TRACE_CONTEXT.set(current)


def get_trace_context() -> dict[str, str]:
    """The ids ``set_trace_context`` set in this task (a copy; empty when none)."""
    return dict(_TRACE_CONTEXT.get() or {})
