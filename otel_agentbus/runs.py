"""The run lifecycle shared by the runtime, the decorators and the invocation API.

``RunScope`` publishes ``agent.run.started`` on entry and exactly one of ``completed``,
``failed`` or ``cancelled`` on exit, whatever happens, so the mirror's run span always
ends and says how. Inside it, ``current_run()`` gives children (nodes, LLM calls, tools)
the run's scope, conversation id included, and the run span is the current
OpenTelemetry span. End events are published without waiting (they are must-deliver,
never dropped), so a cancelled task can still report its own cancellation.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context

from .bus import BusClosedError, EventBus
from .events import Event, Scope, Severity, Source, new_event_id
from .kinds import RUN_CANCELLED, RUN_COMPLETED, RUN_FAILED, RUN_STARTED
from .redaction import redact_secrets
from .tracecontext import context_of

logger = logging.getLogger("otel_agentbus.runs")

_CURRENT_RUN: contextvars.ContextVar[RunHandle | None] = contextvars.ContextVar(
    "otel_agentbus_current_run", default=None
)


def current_run() -> RunHandle | None:
    """The run the calling code is part of, if any."""
    return _CURRENT_RUN.get()


def error_payload(error: BaseException) -> dict[str, str]:
    """The ``error`` / ``error_type`` fields the mirror turns into a failed span's cause."""
    return {"error": str(error) or type(error).__name__, "error_type": type(error).__name__}


def json_safe(value: Any) -> Any:
    """``value`` if it is JSON data, else its ``repr`` (outputs and inputs are free-form);
    either way with the values of secret-looking keys redacted (``redact_secrets``)."""
    try:
        value = redact_secrets(value)
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


class RunHandle:
    """What code inside a run can see and set."""

    def __init__(self, bus: EventBus, scope: Scope) -> None:
        self.bus = bus
        self.scope = scope
        self.output: Any = None
        self.cancel_reason: str | None = None
        """Set before cancelling the run's task (e.g. "timeout") to say why."""
        self.started: Event | None = None
        self.status: str | None = None
        """completed, failed or cancelled once the run has ended."""

    @property
    def run_id(self) -> str:
        assert self.scope.run_id is not None
        return self.scope.run_id

    def child_scope(self, node_id: str | None = None) -> Scope:
        """The scope for an event inside this run (optionally inside a node)."""
        return self.scope if node_id is None else self.scope._replace(node_id=node_id)

    def publish(self, kind: str, payload: Mapping[str, Any] | None = None, *,
                node_id: str | None = None, source: Source | None = None,
                severity: Severity | str = Severity.INFO) -> Event:
        """Publish an event of this run without waiting; returns it, stamped."""
        event = Event(kind, payload, scope=self.child_scope(node_id),
                      source=source or Source("agent", self.scope.agent or ""),
                      severity=severity)
        self.bus.publish_nowait(event)
        return event

    def _publish_end(self, kind: str, payload: Mapping[str, Any],
                     severity: Severity) -> None:
        """End events must never replace the agent's own outcome: a closed bus is logged."""
        try:
            self.publish(kind, payload, severity=severity)
        except BusClosedError:
            logger.warning("run %s ended (%s) after its bus closed; event not published",
                           self.scope.run_id, kind)


class RunScope:
    """``async with RunScope(bus, "planner") as run:`` (or plain ``with``)."""

    def __init__(
        self,
        bus: EventBus,
        agent: str,
        *,
        run_id: str | None = None,
        session_id: str | None = None,
        stream_id: str | None = None,
        graph_id: str | None = None,
        input: Any = None,
        traceparent: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        if not isinstance(agent, str) or not agent:
            raise ValueError(f"agent must be a non-empty str, got {agent!r}")
        parent = current_run()
        if session_id is None and parent is not None:
            session_id = parent.scope.session_id  # a sub-agent stays in the conversation
        self.handle = RunHandle(bus, Scope(
            run_id=run_id or f"run-{new_event_id()}", stream_id=stream_id, agent=agent,
            session_id=session_id, graph_id=graph_id,
        ))
        self._input = input
        self._traceparent = traceparent
        self._correlation_id = correlation_id
        self._run_token: contextvars.Token[RunHandle | None] | None = None
        self._otel_token: object = None

    def _enter(self) -> RunHandle:
        handle = self.handle
        payload: dict[str, Any] = {}
        if self._input is not None:
            payload["input"] = json_safe(self._input)
        if self._traceparent:
            payload["traceparent"] = self._traceparent
        if self._correlation_id:
            payload["correlation_id"] = self._correlation_id
        handle.started = handle.publish(RUN_STARTED, payload)
        self._run_token = _CURRENT_RUN.set(handle)
        self._otel_token = otel_context.attach(context_of(handle.started))
        return handle

    def _exit(self, error: BaseException | None) -> None:
        handle = self.handle
        try:
            if error is None:
                handle.status = "completed"
                payload = {} if handle.output is None else {"output": json_safe(handle.output)}
                handle._publish_end(RUN_COMPLETED, payload, Severity.INFO)
            elif isinstance(error, BaseException) and type(error).__name__ in (
                "CancelledError", "KeyboardInterrupt", "SystemExit", "GeneratorExit",
            ):
                handle.status = "cancelled"
                handle._publish_end(RUN_CANCELLED,
                                    {"reason": handle.cancel_reason or type(error).__name__},
                                    Severity.WARN)
            else:
                handle.status = "failed"
                handle._publish_end(RUN_FAILED, error_payload(error), Severity.ERROR)
        finally:
            if self._otel_token is not None:
                otel_context.detach(self._otel_token)  # type: ignore[arg-type]
                self._otel_token = None
            if self._run_token is not None:
                _CURRENT_RUN.reset(self._run_token)
                self._run_token = None

    def __enter__(self) -> RunHandle:
        return self._enter()

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        self._exit(error)

    async def __aenter__(self) -> RunHandle:
        return self._enter()

    async def __aexit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        self._exit(error)
