"""A bridge from GenAI-convention spans to bus events, for frameworks that trace themselves.

google-adk, strands, LangSmith's OpenTelemetry mode and pydantic-ai's own instrumentation
already emit spans under the GenAI conventions (``gen_ai.operation.name`` = ``invoke_agent``,
``chat``, ``execute_tool`` ...). :class:`GenAIBridge` is an SDK ``SpanProcessor`` on the same
``TracerProvider``: it turns their finished spans into bus events, so in-process subscribers,
the decision tracker and the project's metrics work for those frameworks too, with their
real model names, token counts, start and end times, and trace and span ids.

* ``invoke_agent`` / ``invoke_workflow`` spans are runs (one nested in another is a child run);
* ``chat`` / ``text_completion`` / ``generate_content`` spans are LLM calls;
* ``execute_tool`` spans are tool calls; other spans are only followed to link these up.

The spans are exported already, so every event is marked bridged (``agentbus.bridged``): the
mirror records its metrics and builds no span for it. Spans of our own instrumentation scope
(the mirror's) are skipped, so nothing is fed back. The
bridge also skips the spans of a framework whose own adapter is installed (pydantic-ai's),
since that adapter publishes them live. A span ends after its children, so the
bridge keeps a trace's GenAI spans until the trace's local root span ends and then publishes
them in tree order (a run's start, its calls, its end): subscribers see a bridged run when it
has finished. This module is an SDK span processor: it is the one adapter that imports the
OpenTelemetry SDK.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.trace import StatusCode

from .. import semconv as sc
from ..bus import EventBus
from ..events import Correlation, Scope, new_event_id
from ._common import AdapterError, FaultCounter
from ._instrumentor import BaseInstrumentor, bus_for_instrumentor, resolve_bus
from ._publish import COVERED_SCOPES, EventWriter

RUN_OPERATIONS: Final = frozenset({sc.OP_INVOKE_AGENT, sc.OP_INVOKE_WORKFLOW})
LLM_OPERATIONS: Final = frozenset({sc.OP_CHAT, "text_completion", "generate_content"})
TOOL_OPERATIONS: Final = frozenset({sc.OP_EXECUTE_TOOL})
MAX_PENDING_TRACES: Final = 1024
"""Traces whose root has not ended yet that the bridge keeps; past it the oldest is published
as it stands (a root span that never ends must not grow memory)."""
MAX_SPANS_PER_TRACE: Final = 10_000
_MAX_DEPTH: Final = 256


@dataclass
class _Pending:
    """One trace's finished spans, waiting for its local root span to end."""

    parents: dict[int, int | None] = field(default_factory=dict)
    """Every finished span's parent (all scopes but ours): GenAI spans link through others."""
    genai: list[ReadableSpan] = field(default_factory=list)


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _correlation(span: ReadableSpan) -> Correlation:
    context = span.context
    assert context is not None
    parent = span.parent
    return Correlation(_hex(context.trace_id, 32), _hex(context.span_id, 16),
                       _hex(parent.span_id, 16) if parent is not None else None)


def _text(attributes: Mapping[str, Any], key: str) -> str | None:
    value = attributes.get(key)
    return str(value) if value is not None and value != "" else None


def _error(span: ReadableSpan) -> tuple[str | None, str | None]:
    if span.status.status_code is not StatusCode.ERROR:
        return None, None
    attributes = span.attributes or {}
    error_type = _text(attributes, sc.ERROR_TYPE) or sc.ERROR_TYPE_FALLBACK
    return span.status.description or error_type, error_type


def _usage(attributes: Mapping[str, Any]) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    for key, attribute in (("input_tokens", sc.GEN_AI_USAGE_INPUT_TOKENS),
                           ("output_tokens", sc.GEN_AI_USAGE_OUTPUT_TOKENS),
                           ("cache_read_input_tokens", sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
                           ("reasoning_output_tokens",
                            sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS)):
        value = attributes.get(attribute)
        if isinstance(value, int) and not isinstance(value, bool):
            usage[key] = value
    reasons = attributes.get(sc.GEN_AI_RESPONSE_FINISH_REASONS)
    if reasons:
        usage["finish_reasons"] = [str(r) for r in reasons] if isinstance(
            reasons, tuple | list) else [str(reasons)]
    model = _text(attributes, sc.GEN_AI_RESPONSE_MODEL)
    if model:
        usage["response_model"] = model
    return usage


class GenAIBridge(SpanProcessor):
    """Publishes finished GenAI-convention spans as bridged bus events (see the module)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.faults = FaultCounter("genai-bridge")
        self.enabled = True
        self._writer = EventWriter(bus, self.faults, bridged=True)
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._lock = threading.Lock()
        self.spans_bridged = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do until a span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        if not self.enabled:
            return
        try:
            self._on_end(span)
        except Exception as error:  # never into the instrumented code's span.end()
            self.faults.record(error)

    def shutdown(self) -> None:
        self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Publish every trace kept so far, ended or not."""
        with self._lock:
            traces = list(self._pending.values())
            self._pending.clear()
        for pending in traces:
            self._publish(pending)
        return True

    # ------------------------------------------------------------------ intake
    def _on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        scope = span.instrumentation_scope
        # Our mirror's spans, and those of a framework whose adapter is installed, are bus
        # events already: they only link the spans of others.
        covered = scope is not None and (scope.name == sc.INSTRUMENTATION_SCOPE
                                         or scope.name in COVERED_SCOPES)
        operation = (span.attributes or {}).get(sc.GEN_AI_OPERATION_NAME)
        genai = not covered and (operation in RUN_OPERATIONS or operation in LLM_OPERATIONS
                                 or operation in TOOL_OPERATIONS)
        parent = span.parent
        local_root = parent is None or parent.is_remote
        ready: list[_Pending] = []
        with self._lock:
            pending = self._pending.get(context.trace_id)
            if pending is None:
                if local_root and not genai:
                    return  # a trace without GenAI spans: nothing to keep
                pending = self._pending[context.trace_id] = _Pending()
                while len(self._pending) > MAX_PENDING_TRACES:
                    ready.append(self._pending.popitem(last=False)[1])
            if len(pending.parents) < MAX_SPANS_PER_TRACE:
                pending.parents[context.span_id] = (
                    parent.span_id if parent is not None and not local_root else None)
                if genai:
                    pending.genai.append(span)
            if local_root:
                ready.append(self._pending.pop(context.trace_id))
        for finished in ready:
            self._publish(finished)

    # ------------------------------------------------------------------ output
    def _publish(self, pending: _Pending) -> None:
        """A trace's GenAI spans as events, parents before children, siblings by start."""
        if not pending.genai:
            return
        by_id = {span.context.span_id: span for span in pending.genai if span.context}
        children: dict[int | None, list[ReadableSpan]] = {}
        for span in pending.genai:
            assert span.context is not None
            children.setdefault(self._genai_parent(span.context.span_id, pending, by_id),
                                []).append(span)
        for siblings in children.values():
            siblings.sort(key=lambda s: (s.start_time or 0, s.end_time or 0))
        self._walk(children, None, None)

    @staticmethod
    def _genai_parent(span_id: int, pending: _Pending,
                      by_id: Mapping[int, ReadableSpan]) -> int | None:
        """The nearest GenAI ancestor, through spans of any kind."""
        current = pending.parents.get(span_id)
        for _ in range(_MAX_DEPTH):
            if current is None or current in by_id:
                return current
            current = pending.parents.get(current)
        return None

    def _walk(self, children: Mapping[int | None, list[ReadableSpan]], parent: int | None,
              run: Scope | None) -> None:
        for span in children.get(parent, ()):
            assert span.context is not None
            self.spans_bridged += 1
            operation = (span.attributes or {}).get(sc.GEN_AI_OPERATION_NAME)
            if operation in RUN_OPERATIONS:
                self._run(span, children, run)
            elif operation in LLM_OPERATIONS:
                self._llm(span, children, run)
            else:
                self._tool(span, children, run)

    def _run(self, span: ReadableSpan, children: Mapping[int | None, list[ReadableSpan]],
             parent: Scope | None) -> None:
        assert span.context is not None
        attributes = span.attributes or {}
        agent = (_text(attributes, sc.GEN_AI_AGENT_NAME) or span.name.partition(" ")[2]
                 or span.name)
        session = _text(attributes, sc.GEN_AI_CONVERSATION_ID) or (
            parent.session_id if parent is not None else None)
        scope = Scope(run_id=f"run-{new_event_id()}", agent=agent, session_id=session)
        correlation = _correlation(span)
        self._writer.run_started(
            scope, time_ns=span.start_time,
            traceparent=f"00-{correlation.trace_id}-{correlation.span_id}-01",
            correlation=correlation)
        self._walk(children, span.context.span_id, scope)
        error, error_type = _error(span)
        self._writer.run_ended(scope, error=error, error_type=error_type,
                               time_ns=span.end_time, correlation=correlation)

    def _llm(self, span: ReadableSpan, children: Mapping[int | None, list[ReadableSpan]],
             run: Scope | None) -> None:
        assert span.context is not None
        scope = run or Scope()
        attributes = span.attributes or {}
        call_id = f"llm-{_correlation(span).span_id}"
        model = _text(attributes, sc.GEN_AI_REQUEST_MODEL) or _text(
            attributes, sc.GEN_AI_RESPONSE_MODEL)
        provider = _text(attributes, sc.GEN_AI_PROVIDER_NAME) or _text(attributes,
                                                                       "gen_ai.system")
        correlation = _correlation(span)
        self._writer.llm_request(scope, call_id, model=model, provider=provider,
                                 time_ns=span.start_time, correlation=correlation)
        self._walk(children, span.context.span_id, run)
        error, error_type = _error(span)
        self._writer.llm_ended(scope, call_id, model=model, provider=provider,
                               usage=_usage(attributes), error=error, error_type=error_type,
                               time_ns=span.end_time, correlation=correlation)

    def _tool(self, span: ReadableSpan, children: Mapping[int | None, list[ReadableSpan]],
              run: Scope | None) -> None:
        assert span.context is not None
        scope = run or Scope()
        attributes = span.attributes or {}
        correlation = _correlation(span)
        call_id = _text(attributes, sc.GEN_AI_TOOL_CALL_ID) or f"call-{correlation.span_id}"
        name = _text(attributes, sc.GEN_AI_TOOL_NAME) or span.name.partition(" ")[2] or "tool"
        self._writer.tool_started(
            scope, call_id, name, arguments=attributes.get(sc.GEN_AI_TOOL_CALL_ARGUMENTS),
            description=_text(attributes, sc.GEN_AI_TOOL_DESCRIPTION),
            tool_type=_text(attributes, sc.GEN_AI_TOOL_TYPE) or "function",
            time_ns=span.start_time, correlation=correlation)
        self._walk(children, span.context.span_id, run)
        error, error_type = _error(span)
        self._writer.tool_ended(scope, call_id, name,
                                result=attributes.get(sc.GEN_AI_TOOL_CALL_RESULT), error=error,
                                error_type=error_type, time_ns=span.end_time,
                                correlation=correlation)


_bridges: weakref.WeakKeyDictionary[TracerProvider, GenAIBridge] = weakref.WeakKeyDictionary()
"""Each provider's bridge, keyed by the provider itself: an ``id()`` is reused once a provider
is collected, and a new provider must never be handed a bridge registered on a dead one."""
_install_lock = threading.Lock()


def _provider(tracer_provider: TracerProvider | None) -> TracerProvider:
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise AdapterError(
            "the GenAI bridge needs an OpenTelemetry SDK TracerProvider (the global one is "
            f"{type(provider).__name__}): call otel_agentbus.configure() first or pass "
            "tracer_provider="
        )
    return provider


def install(bus: EventBus | None = None, *,
            tracer_provider: TracerProvider | None = None) -> GenAIBridge:
    """Bridge the GenAI spans of ``tracer_provider`` (default: the global SDK provider) to
    ``bus`` (default: the process's default bus). A second call returns the same bridge."""
    provider = _provider(tracer_provider)
    with _install_lock:
        bridge = _bridges.get(provider)
        if bridge is not None and bridge.enabled:
            return bridge
        target = resolve_bus(bus, "genai-bridge")
        if bridge is None:
            bridge = GenAIBridge(target)
            provider.add_span_processor(bridge)
            _bridges[provider] = bridge
        else:  # uninstalled before: the SDK kept the processor, it wakes up on the new bus
            bridge.bus = target
            bridge._writer = EventWriter(target, bridge.faults, bridged=True)
            bridge.enabled = True
        return bridge


def uninstall(tracer_provider: TracerProvider | None = None) -> None:
    """Stop bridging and publish what was kept; idempotent. The SDK cannot remove a span
    processor, so ours stays registered, idle."""
    provider = _provider(tracer_provider)
    with _install_lock:
        bridge = _bridges.get(provider)
        if bridge is None or not bridge.enabled:
            return
        bridge.enabled = False
    bridge.force_flush()


def installed(tracer_provider: TracerProvider | None = None) -> GenAIBridge | None:
    """The active bridge of the provider (default: the global one), if any."""
    bridge = _bridges.get(_provider(tracer_provider))
    return bridge if bridge is not None and bridge.enabled else None


class GenAIBridgeInstrumentor(BaseInstrumentor):
    """``opentelemetry-instrument`` entry point: bridge the global provider's GenAI spans."""

    def instrumentation_dependencies(self) -> tuple[str, ...]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        install(bus_for_instrumentor(kwargs.get("bus")),
                tracer_provider=kwargs.get("tracer_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstall(kwargs.get("tracer_provider"))
