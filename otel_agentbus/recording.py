"""``decision()``, ``outcome()``, ``problem()``: record what an agent chose and what went wrong,
from anywhere inside an instrumented scope.

They publish ``agent.decision.made``, ``agent.decision.outcome`` and
``agent.problem.reported`` with the payload the decision tracker publishes, so the mirror
turns them into span events (``agentbus.decision`` ...) and the decision metrics count them.
The event goes to the innermost open scope: the scope whose span is the current span (a tool
call, an LLM call, a node iteration, a run, or an adapter's :class:`~otel_agentbus.handles.
SpanHandle`), inside the run that scope belongs to.

Outside any run they raise :class:`NoScopeError`: a decision that belongs to no run would be
recorded nowhere a reader looks for it (no run span, no tracker execution), and a silent
no-op would hide a missing ``@agent`` or ``install()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry import trace

from .bus import EventBus
from .events import Event, Scope, Severity, Source
from .handles import current_handle
from .kinds import (
    DECISION_MADE,
    DECISION_OUTCOME,
    PROBLEM_REPORTED,
    TOOL_CALL_STARTED,
)
from .runs import current_run, json_safe

__all__ = ["NoScopeError", "decision", "outcome", "problem"]

_PROBLEM_SEVERITY: Final = {
    "critical": Severity.ERROR, "error": Severity.ERROR, "warning": Severity.WARN,
    "warn": Severity.WARN, "minor": Severity.INFO, "info": Severity.INFO,
}
_ids = itertools.count(1)


class NoScopeError(RuntimeError):
    """``decision()`` / ``outcome()`` / ``problem()`` called outside any instrumented run."""


def _current_span_id() -> int:
    return trace.get_current_span().get_span_context().span_id


def _span_id_of(event: Event | None) -> int | None:
    context = getattr(event, "_span_context", None) if event is not None else None
    return getattr(context, "span_id", None)


def _where(what: str) -> tuple[EventBus, Scope, Source, dict[str, Any]]:
    """The bus, scope, source and addressing payload (``tool_call_id``) of the innermost
    open scope; the one whose span is current wins, else the innermost known one."""
    from .instrument import current_node_loop, current_tool_call

    span_id = _current_span_id()
    tool = current_tool_call()
    handle = current_handle()
    run = current_run()
    if tool is not None and tool.run is not None and tool.started is not None and (
            _span_id_of(tool.started) == span_id or handle is None):
        return tool.run.bus, tool.started.scope, Source("tool", tool.name), {
            "tool_call_id": tool.tool_call_id}
    if handle is not None and (_span_id_of(handle.event) == span_id or run is None
                               or run is handle.run):
        start = handle.event
        extra: dict[str, Any] = {}
        if start.kind == TOOL_CALL_STARTED and "tool_call_id" in start.payload:
            extra["tool_call_id"] = start.payload["tool_call_id"]
        return handle.bus, start.scope, start.source, extra
    if run is not None:
        loop = current_node_loop()
        scope = run.scope if loop is None else run.child_scope(loop.node_id)
        return run.bus, scope, Source("agent", run.scope.agent or ""), {}
    raise NoScopeError(
        f"{what}() outside any run: call it inside an @agent function, an agent_run() "
        "block, or a framework an adapter instrumented (install())")


def _publish(kind: str, payload: dict[str, Any], what: str,
             severity: Severity = Severity.INFO) -> Event:
    bus, scope, source, extra = _where(what)
    payload.update(extra)
    event = Event(kind, {key: value for key, value in payload.items() if value is not None},
                  scope=scope, source=source, severity=severity)
    bus.publish_nowait(event)
    return event


def decision(intent: str, options: Sequence[str | Mapping[str, Any]], chosen: str,
             reasoning: str = "", *, decision_type: str = "custom",
             context: Mapping[str, Any] | None = None) -> str:
    """Record that the agent chose ``chosen`` among ``options`` (option ids, or seed-003
    option dicts with an ``id``); returns the decision id for :func:`outcome`."""
    if not isinstance(intent, str) or not intent:
        raise ValueError(f"intent must be a non-empty str, got {intent!r}")
    built: list[dict[str, Any]] = []
    for option in options:
        if isinstance(option, str):
            built.append({"id": option})
        elif isinstance(option, Mapping) and option.get("id"):
            built.append(json_safe(dict(option)))
        else:
            raise ValueError(f"an option is an id (str) or a dict with an 'id', got {option!r}")
    ids = {option["id"] for option in built}
    if str(chosen) not in ids:
        raise ValueError(f"chosen {chosen!r} is not one of the options {sorted(ids)}")
    decision_id = f"dec-{next(_ids)}"
    _publish(DECISION_MADE, {
        "decision_id": decision_id, "intent": intent, "options": built, "chosen": str(chosen),
        "reasoning": reasoning, "decision_type": str(decision_type),
        "context": json_safe(dict(context)) if context else None,
    }, "decision")
    return decision_id


def outcome(decision_id: str, success: bool, *, result: Any = None, error: str | None = None,
            summary: str = "") -> None:
    """Record what came of a decision (``decision_id`` as :func:`decision` returned it)."""
    if not isinstance(decision_id, str) or not decision_id:
        raise ValueError(f"decision_id must be a non-empty str, got {decision_id!r}")
    _publish(DECISION_OUTCOME, {
        "decision_id": decision_id, "success": bool(success), "summary": summary,
        "result": json_safe(result) if result is not None else None,
        "error": str(error) if error is not None else None,
    }, "outcome", Severity.INFO if success else Severity.WARN)


def problem(severity: str, description: str, *, decision_id: str | None = None,
            root_cause: str | None = None, suggested_fix: str | None = None) -> str:
    """Report a problem (severity ``critical``, ``warning`` or ``minor``); returns its id."""
    level = _PROBLEM_SEVERITY.get(str(severity).lower())
    if level is None:
        raise ValueError(f"severity must be one of {sorted(_PROBLEM_SEVERITY)}, "
                         f"got {severity!r}")
    if not isinstance(description, str) or not description:
        raise ValueError(f"description must be a non-empty str, got {description!r}")
    problem_id = f"prob-{next(_ids)}"
    _publish(PROBLEM_REPORTED, {
        "problem_id": problem_id, "severity": severity, "description": description,
        "decision_id": decision_id, "root_cause": root_cause, "suggested_fix": suggested_fix,
    }, "problem", level)
    return problem_id
