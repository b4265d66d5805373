"""The bus events an adapter publishes, in the payload shapes the instrument API, the decision
tracker and the telemetry mirror use, built in one place.

Adapters whose framework reports a start and an end in separate callbacks (the OpenAI Agents
SDK's tracing processor, finished GenAI spans) publish raw events through an
:class:`EventWriter`; once the core offers start/end handles, only this module changes.
Every publish is guarded: a fault (a closed bus, a value that is not JSON) is counted and
logged once by the adapter's :class:`FaultCounter`, never raised into the framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from .. import semconv as sc
from ..bus import EventBus
from ..events import EMPTY_CORRELATION, Correlation, Event, Scope, Severity, Source
from ..kinds import (
    DECISION_MADE,
    LLM_FAILED,
    LLM_REQUEST,
    LLM_RESPONSE,
    NODE_LOOP_COMPLETED,
    NODE_LOOP_FAILED,
    NODE_LOOP_ITERATION,
    NODE_LOOP_STARTED,
    PROBLEM_REPORTED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_STARTED,
    TOOL_CALL_COMPLETED,
    TOOL_CALL_STARTED,
)
from ..runs import json_safe
from ._common import FaultCounter

BRIDGED_ATTRS: Final[Mapping[str, Any]] = {sc.EVENT_BRIDGED: True}
"""Event attributes of an event that describes telemetry exported already (a span another
instrumentation made): the mirror records its metrics but builds no span of its own."""

_PROBLEM_SEVERITY: Final = {"critical": Severity.ERROR, "warning": Severity.WARN,
                            "minor": Severity.INFO}


COVERED_SCOPES: set[str] = set()
"""Instrumentation scopes whose spans an installed adapter publishes already (pydantic-ai's,
while its adapter is installed): the GenAI bridge skips them, so no event comes twice."""


CANCELLATIONS: Final = frozenset({"CancelledError", "KeyboardInterrupt", "SystemExit",
                                  "GeneratorExit"})
"""Exceptions that end a run as cancelled rather than failed (as ``RunScope`` does)."""


def is_bridged(event: Event) -> bool:
    """True for an event published for telemetry that was exported already."""
    return bool(event.attrs.get(sc.EVENT_BRIDGED))


class EventWriter:
    """Publishes one adapter's events on one bus; every method returns the published event,
    or None when publishing failed (the fault is counted, the framework goes on)."""

    def __init__(self, bus: EventBus, faults: FaultCounter, *, bridged: bool = False) -> None:
        self.bus = bus
        self.faults = faults
        self.bridged = bridged

    def publish(self, kind: str, payload: Mapping[str, Any], scope: Scope, source: Source,
                *, severity: Severity = Severity.INFO, time_ns: int | None = None,
                correlation: Correlation | None = None) -> Event | None:
        try:
            event = Event(kind, payload, scope=scope, source=source, severity=severity,
                          time_ns=time_ns, correlation=correlation or EMPTY_CORRELATION,
                          attrs=BRIDGED_ATTRS if self.bridged else None)
            self.bus.publish_nowait(event)
        except Exception as error:  # never into the framework's callback
            self.faults.record(error)
            return None
        return event

    # ------------------------------------------------------------------ runs
    def run_started(self, scope: Scope, *, input: Any = None, traceparent: str | None = None,
                    time_ns: int | None = None,
                    correlation: Correlation | None = None) -> Event | None:
        payload: dict[str, Any] = {}
        if input is not None:
            payload["input"] = json_safe(input)
        if traceparent:
            payload["traceparent"] = traceparent
        return self.publish(RUN_STARTED, payload, scope,
                            Source("agent", scope.agent or ""), time_ns=time_ns,
                            correlation=correlation)

    def run_ended(self, scope: Scope, *, error: str | None = None,
                  error_type: str | None = None, output: Any = None,
                  cancelled: str | None = None, time_ns: int | None = None,
                  correlation: Correlation | None = None) -> Event | None:
        """Completed, failed (``error``) or cancelled (``cancelled`` is the reason)."""
        source = Source("agent", scope.agent or "")
        if cancelled is not None:
            return self.publish(RUN_CANCELLED, {"reason": cancelled}, scope, source,
                                severity=Severity.WARN, time_ns=time_ns,
                                correlation=correlation)
        if error is None:
            payload = {} if output is None else {"output": json_safe(output)}
            return self.publish(RUN_COMPLETED, payload, scope, source,
                                time_ns=time_ns, correlation=correlation)
        return self.publish(RUN_FAILED,
                            {"error": error, "error_type": error_type or sc.ERROR_TYPE_FALLBACK},
                            scope, source, severity=Severity.ERROR, time_ns=time_ns,
                            correlation=correlation)

    # ----------------------------------------------------------------- nodes
    def node_started(self, scope: Scope, *, time_ns: int | None = None,
                     correlation: Correlation | None = None) -> Event | None:
        return self.publish(NODE_LOOP_STARTED, {}, scope,
                            Source("node", scope.node_id or ""), time_ns=time_ns,
                            correlation=correlation)

    def node_iteration(self, scope: Scope, iteration: int, *,
                       time_ns: int | None = None) -> Event | None:
        return self.publish(NODE_LOOP_ITERATION, {"iteration": iteration}, scope,
                            Source("node", scope.node_id or ""), time_ns=time_ns)

    def node_ended(self, scope: Scope, *, iterations: int | None = None,
                   error: str | None = None, error_type: str | None = None,
                   time_ns: int | None = None,
                   correlation: Correlation | None = None) -> Event | None:
        payload: dict[str, Any] = {} if iterations is None else {"iterations": iterations}
        source = Source("node", scope.node_id or "")
        if error is None:
            return self.publish(NODE_LOOP_COMPLETED, payload, scope, source,
                                time_ns=time_ns, correlation=correlation)
        payload.update(error=error, error_type=error_type or sc.ERROR_TYPE_FALLBACK)
        return self.publish(NODE_LOOP_FAILED, payload, scope, source,
                            severity=Severity.ERROR, time_ns=time_ns, correlation=correlation)

    # ------------------------------------------------------------------- LLM
    def llm_request(self, scope: Scope, call_id: str, *, model: str | None,
                    provider: str | None = None, messages: Any = None,
                    time_ns: int | None = None,
                    correlation: Correlation | None = None) -> Event | None:
        payload: dict[str, Any] = {"call_id": call_id}
        if model:
            payload["model"] = model
        if provider:
            payload["provider"] = provider
        if messages is not None:
            payload["messages"] = json_safe(messages)
        return self.publish(LLM_REQUEST, payload, scope,
                            Source("llm", provider or model or ""), time_ns=time_ns,
                            correlation=correlation)

    def llm_ended(self, scope: Scope, call_id: str, *, model: str | None,
                  provider: str | None = None, usage: Mapping[str, Any] | None = None,
                  output: Any = None, error: str | None = None, error_type: str | None = None,
                  time_ns: int | None = None,
                  correlation: Correlation | None = None) -> Event | None:
        """``usage`` holds the keys ``LLMCall.record_usage`` fills: input_tokens,
        output_tokens, cache_read_input_tokens, reasoning_output_tokens, finish_reasons,
        response_model (others are dropped)."""
        payload: dict[str, Any] = {"call_id": call_id}
        if model:
            payload["model"] = model
        source = Source("llm", provider or model or "")
        if error is not None:
            payload.update(error=error, error_type=error_type or sc.ERROR_TYPE_FALLBACK)
            return self.publish(LLM_FAILED, payload, scope, source,
                                severity=Severity.ERROR, time_ns=time_ns,
                                correlation=correlation)
        for key, value in (usage or {}).items():
            if key in _USAGE_KEYS and value is not None:
                payload[key] = value
        if output is not None:
            payload["content"] = json_safe(output)
        return self.publish(LLM_RESPONSE, payload, scope, source, time_ns=time_ns,
                            correlation=correlation)

    # ----------------------------------------------------------------- tools
    def tool_started(self, scope: Scope, call_id: str, name: str, *, arguments: Any = None,
                     description: str | None = None, tool_type: str = "function",
                     time_ns: int | None = None,
                     correlation: Correlation | None = None) -> Event | None:
        payload: dict[str, Any] = {"tool_call_id": call_id, "tool_name": name,
                                   "tool_type": tool_type}
        if arguments is not None:
            payload["arguments"] = json_safe(arguments)
        if description:
            payload["description"] = description
        return self.publish(TOOL_CALL_STARTED, payload, scope, Source("tool", name),
                            time_ns=time_ns, correlation=correlation)

    def tool_ended(self, scope: Scope, call_id: str, name: str, *, result: Any = None,
                   error: str | None = None, error_type: str | None = None,
                   time_ns: int | None = None,
                   correlation: Correlation | None = None) -> Event | None:
        payload: dict[str, Any] = {"tool_call_id": call_id, "tool_name": name,
                                   "is_error": error is not None}
        if error is not None:
            payload.update(error=error, error_type=error_type or sc.ERROR_TYPE_FALLBACK)
        elif result is not None:
            payload["result"] = json_safe(result)
        return self.publish(TOOL_CALL_COMPLETED, payload, scope, Source("tool", name),
                            severity=Severity.ERROR if error is not None else Severity.INFO,
                            time_ns=time_ns, correlation=correlation)

    # ------------------------------------------------- decisions and problems
    def decision(self, scope: Scope, *, decision_id: str, intent: str,
                 options: Sequence[str], chosen: str, reasoning: str = "",
                 decision_type: str = "unknown", action_type: str = "unknown",
                 time_ns: int | None = None) -> Event | None:
        """``agent.decision.made`` in the tracker's shape: options are option dicts by id."""
        payload = {
            "decision_id": decision_id, "intent": intent,
            "options": [{"id": option, "action_type": action_type} for option in options],
            "chosen": chosen, "reasoning": reasoning, "decision_type": decision_type,
        }
        return self.publish(DECISION_MADE, payload, scope,
                            Source("agent", scope.agent or ""), time_ns=time_ns)

    def problem(self, scope: Scope, *, problem_id: str, severity: str, description: str,
                root_cause: str | None = None, suggested_fix: str | None = None,
                time_ns: int | None = None) -> Event | None:
        """``agent.problem.reported`` in the tracker's shape (severity critical / warning /
        minor)."""
        payload: dict[str, Any] = {"problem_id": problem_id, "severity": severity,
                                   "description": description}
        if root_cause is not None:
            payload["root_cause"] = root_cause
        if suggested_fix is not None:
            payload["suggested_fix"] = suggested_fix
        return self.publish(PROBLEM_REPORTED, payload, scope,
                            Source("agent", scope.agent or ""),
                            severity=_PROBLEM_SEVERITY.get(severity, Severity.WARN),
                            time_ns=time_ns)


_USAGE_KEYS: Final = frozenset({"input_tokens", "output_tokens", "cache_read_input_tokens",
                                "reasoning_output_tokens", "finish_reasons", "response_model"})
