"""OpenAI Agents SDK adapter: a ``TracingProcessor`` that turns the SDK's traces into bus events.

The SDK reports every trace and span to its processors, so no agent code changes:

* a trace is a run (``invoke_agent {workflow name}``);
* an agent span is that agent's node in the run;
* generation and response spans are LLM calls (``chat {model}``) with token usage;
* function spans are tool calls (``execute_tool {tool}``);
* a handoff is a decision (``intent="handoff"``, the agent's handoff targets as options, the
  receiving agent chosen), and the receiving agent runs as a child run in the same trace,
  its spans named after it;
* a guardrail whose tripwire fires is a problem (severity ``critical``).

``install(exclusive=True)`` replaces the SDK's processors (its exporter to OpenAI's
backend included) with ours; the default adds ours beside them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from ..bus import EventBus
from ..events import Event, Scope, new_event_id
from ._common import FaultCounter, require
from ._instrumentor import BaseInstrumentor, bus_for_instrumentor, resolve_bus
from ._publish import EventWriter

if TYPE_CHECKING:
    from collections.abc import Collection

EXTRA: Final = "openai-agents"
DISTRIBUTION: Final = "openai-agents"
SUPPORTED: Final = (">=0.24.0", "<0.25")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _require_sdk() -> Any:
    return require("agents.tracing", distribution=DISTRIBUTION, extra=EXTRA,
                   minimum=SUPPORTED[0][2:], below=SUPPORTED[1][1:])


def _time_ns(iso: str | None) -> int | None:
    """An SDK timestamp (ISO 8601) in nanoseconds since the epoch."""
    if not iso:
        return None
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND * 1000


def _error_of(span: Any) -> str | None:
    """An SDK span's error (``{"message", "data"}``), with the cause the data names."""
    error = getattr(span, "error", None)
    if not error:
        return None
    if not isinstance(error, dict):
        return str(error)
    message = str(error.get("message") or "error")
    data = error.get("data")
    cause = data.get("error") if isinstance(data, dict) else None
    return f"{message}: {cause}" if cause else message


def _traceparent_of(event: Event | None) -> str | None:
    """The W3C traceparent of the span an event was stamped with (the handoff decision's:
    the handing-off agent's turn), keeping its sampled flag; None without a mirror."""
    if event is None or not (event.correlation.trace_id and event.correlation.span_id):
        return None
    context = event._span_context
    sampled = getattr(getattr(context, "trace_flags", None), "sampled", True)
    return (f"00-{event.correlation.trace_id}-{event.correlation.span_id}-"
            f"{'01' if sampled else '00'}")


def _usage(data: dict[str, Any] | None) -> dict[str, Any]:
    """The SDK's usage dict in ``LLMCall.record_usage`` keys."""
    if not isinstance(data, dict):
        return {}
    usage: dict[str, Any] = {}
    for key in ("input_tokens", "output_tokens"):
        if type(data.get(key)) is int:
            usage[key] = data[key]
    cached = (data.get("input_tokens_details") or {}).get("cached_tokens")
    if type(cached) is int and cached:
        usage["cache_read_input_tokens"] = cached
    reasoning = (data.get("output_tokens_details") or {}).get("reasoning_tokens")
    if type(reasoning) is int and reasoning:
        usage["reasoning_output_tokens"] = reasoning
    return usage


@dataclass
class _Run:
    """A bus run: the trace's own, or a child run opened by a handoff."""

    scope: Scope
    error: str | None = None
    """The error of the run's last agent span, if it failed (the run then fails too)."""


@dataclass
class _Trace:
    run: _Run
    handoffs: int = 0
    problems: int = 0
    handoff_to: str | None = None
    """The agent the last handoff chose; its agent span opens a child run."""
    handoff_event: Event | None = None


@dataclass
class _Span:
    """What an SDK span became: the run it belongs to and the scope its children use."""

    trace: _Trace
    run: _Run
    scope: Scope
    kind: str
    sdk_span: Any = None
    agent: _Span | None = None
    """The agent span this span runs in (itself for an agent span)."""
    child_run: _Run | None = None
    llm_deferred: bool = False
    model: str | None = None
    iterations: int = 0
    error: str | None = None
    """An agent's error, from its own span or from a failed turn (a tripped guardrail)."""


class AgentBusTracingProcessor:
    """The SDK's ``TracingProcessor`` interface, publishing bus events; every callback is
    guarded (a fault is counted in ``faults`` and logged once, the agent goes on)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.faults = FaultCounter("openai-agents")
        self._writer = EventWriter(bus, self.faults)
        self._traces: dict[str, _Trace] = {}
        self._spans: dict[str, _Span] = {}
        self._lock = threading.Lock()
        self.on_trace_start = self.faults.guard(self._trace_start)
        self.on_trace_end = self.faults.guard(self._trace_end)
        self.on_span_start = self.faults.guard(self._span_start)
        self.on_span_end = self.faults.guard(self._span_end)

    def shutdown(self) -> None:
        """Nothing buffered here: the bus and its mirror own delivery and export."""

    def force_flush(self) -> None:
        """Nothing buffered here."""

    # ----------------------------------------------------------------- traces
    def _trace_start(self, trace: Any) -> None:
        exported = trace.export() or {}
        scope = Scope(run_id=f"run-{new_event_id()}", agent=str(trace.name or "agent"),
                      session_id=exported.get("group_id") or None)
        with self._lock:
            self._traces[trace.trace_id] = _Trace(_Run(scope))
        self._writer.run_started(scope)

    def _trace_end(self, trace: Any) -> None:
        with self._lock:
            state = self._traces.pop(trace.trace_id, None)
        if state is None:
            return
        self._writer.run_ended(state.run.scope, error=state.run.error)

    # ------------------------------------------------------------------ spans
    def _new_state(self, span: Any) -> _Span | None:
        """A span's state, in its parent's run and scope (else the trace's run)."""
        kind = span.span_data.type
        with self._lock:
            parent = self._spans.get(span.parent_id) if span.parent_id else None
            if parent is not None:
                return _Span(parent.trace, parent.run, parent.scope, kind, sdk_span=span,
                             agent=parent.agent)
            trace = self._traces.get(span.trace_id)
        if trace is None:
            return None
        return _Span(trace, trace.run, trace.run.scope, kind, sdk_span=span)

    def _span_start(self, span: Any) -> None:
        state = self._new_state(span)
        if state is None:
            return
        data = span.span_data
        kind = state.kind
        if kind == "agent":
            state.agent = state
            self._agent_started(state, str(data.name))
        elif kind == "turn" and state.agent is not None:
            state.agent.iterations += 1
            self._writer.node_iteration(state.scope, state.agent.iterations)
        elif kind == "generation":
            state.model = data.model
            state.llm_deferred = not data.model
            if data.model:
                self._writer.llm_request(state.scope, span.span_id, model=str(data.model))
        elif kind == "response":
            state.llm_deferred = True  # the model is known from the response, at the end
        elif kind == "function":
            self._writer.tool_started(state.scope, span.span_id, str(data.name))
        with self._lock:
            self._spans[span.span_id] = state

    def _agent_started(self, state: _Span, name: str) -> None:
        trace = state.trace
        if trace.handoff_to == name:  # the receiving agent: a child run in the same trace
            traceparent = _traceparent_of(trace.handoff_event)
            trace.handoff_to = trace.handoff_event = None
            child = _Run(Scope(run_id=f"run-{new_event_id()}", agent=name,
                               session_id=state.run.scope.session_id))
            self._writer.run_started(child.scope, traceparent=traceparent)
            state.run = state.child_run = child
            state.scope = child.scope
        state.scope = state.scope._replace(node_id=name)
        self._writer.node_started(state.scope)

    def _span_end(self, span: Any) -> None:
        with self._lock:
            state = self._spans.pop(span.span_id, None)
        if state is None:
            return
        data = span.span_data
        error = _error_of(span)
        kind = state.kind
        if kind == "agent":
            error = error or state.error
            self._writer.node_ended(state.scope, iterations=state.iterations or None,
                                    error=error)
            state.run.error = error
            state.trace.run.error = error  # the trace ends as its last agent did
            if state.child_run is not None:
                self._writer.run_ended(state.child_run.scope, error=error)
        elif kind == "turn" and error and state.agent is not None:
            state.agent.error = error
        elif kind in ("generation", "response"):
            self._llm_ended(state, span, error)
        elif kind == "function":
            self._writer.tool_ended(state.scope, span.span_id, str(data.name),
                                    result=data.output, error=error)
        elif kind == "handoff":
            self._handoff(state, data)
        elif kind == "guardrail" and data.triggered:
            state.trace.problems += 1
            self._writer.problem(
                state.scope, problem_id=f"guardrail_{state.trace.problems}",
                severity="critical", description=f"guardrail {data.name!r} tripped",
                root_cause=f"the {data.name} guardrail's tripwire was triggered")

    def _llm_ended(self, state: _Span, span: Any, error: str | None) -> None:
        data = span.span_data
        if state.kind == "response":
            response = data.response
            model = getattr(response, "model", None) or state.model
            usage = _usage(data.usage) or _usage(
                response.usage.model_dump() if getattr(response, "usage", None) else None)
            provider: str | None = "openai"
            output = None
        else:
            model = data.model or state.model
            usage = _usage(data.usage)
            provider = None
            output = data.output
        model = str(model) if model else None
        if state.llm_deferred:
            self._writer.llm_request(state.scope, span.span_id, model=model, provider=provider,
                                     time_ns=_time_ns(span.started_at))
        if model:
            usage["response_model"] = model
        self._writer.llm_ended(state.scope, span.span_id, model=model, provider=provider,
                               usage=usage, output=output, error=error)

    def _handoff(self, state: _Span, data: Any) -> None:
        target = data.to_agent
        if not target:
            return
        with self._lock:
            agent = next((s for s in self._spans.values()
                          if s.kind == "agent" and s.scope.node_id == data.from_agent
                          and s.trace is state.trace), None)
        options = list(getattr(agent.sdk_span.span_data, "handoffs", None) or []) \
            if agent is not None else []
        if target not in options:
            options.append(str(target))
        trace = state.trace
        trace.handoffs += 1
        event = self._writer.decision(
            state.scope, decision_id=f"handoff_{trace.handoffs}", intent="handoff",
            options=[str(option) for option in options], chosen=str(target),
            reasoning=f"{data.from_agent} handed off to {target}", decision_type="handoff",
            action_type="handoff")
        trace.handoff_to = str(target)
        trace.handoff_event = event


_installed: AgentBusTracingProcessor | None = None
_replaced: list[Any] | None = None
"""The SDK's processors an exclusive install replaced, put back by ``uninstall()``."""
_install_lock = threading.Lock()


def install(bus: EventBus | None = None, *, exclusive: bool = False) -> AgentBusTracingProcessor:
    """Publish every OpenAI Agents SDK trace on ``bus`` (default: the process's default bus).

    ``exclusive=True`` makes ours the SDK's only processor (nothing goes to OpenAI's tracing
    backend). A second call returns the installed processor and changes nothing.
    """
    global _installed, _replaced
    tracing = _require_sdk()
    with _install_lock:
        if _installed is not None:
            return _installed
        processor = AgentBusTracingProcessor(resolve_bus(bus, "openai-agents"))
        tracing.TracingProcessor.register(AgentBusTracingProcessor)
        if exclusive:
            _replaced = _processors_of(tracing.get_trace_provider())
            tracing.set_trace_processors([processor])
        else:
            tracing.add_trace_processor(processor)
        _installed = processor
        return processor


def uninstall() -> None:
    """Remove our processor, leaving the SDK's others as they are; idempotent."""
    global _installed, _replaced
    with _install_lock:
        processor, _installed = _installed, None
        replaced, _replaced = _replaced, None
    if processor is None:
        return
    provider = _require_sdk().get_trace_provider()
    current = _processors_of(provider)
    if current is not None:
        kept = [p for p in current if p is not processor]
        provider.set_processors([*(replaced or []), *kept])


def _processors_of(provider: Any) -> list[Any] | None:
    """The SDK provider's processors (it has no public getter; 0.24 keeps them here)."""
    current = getattr(getattr(provider, "_multi_processor", None), "_processors", None)
    return list(current) if current is not None else None


def installed() -> AgentBusTracingProcessor | None:
    """The installed processor, if any."""
    return _installed


class OpenAIAgentsInstrumentor(BaseInstrumentor):
    """``opentelemetry-instrument`` entry point: ``install()`` with the instrumentor's bus."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return (f"{DISTRIBUTION} {SUPPORTED[0]}, {SUPPORTED[1]}",)

    def _instrument(self, **kwargs: Any) -> None:
        install(bus_for_instrumentor(kwargs.get("bus")), exclusive=kwargs.get("exclusive", False))

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstall()
