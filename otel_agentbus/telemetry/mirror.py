"""The telemetry mirror: every published event, turned into spans, span events and metrics.

It runs as a bus publish hook, on the publisher's side, before any subscriber sees the event,
so it can stamp each event with the trace and span it belongs to. It keeps a small record
per open run, node loop, iteration, LLM call and tool call, and builds the finished span in
one go (an SDK ``ReadableSpan`` handed to the span processor): about a tenth of the cost of
``start_span``/``end``. Export runs on the span processor's thread, never here.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..events import (
    _EMPTY_MAPPING,
    EMPTY_CORRELATION,
    EMPTY_SCOPE,
    Correlation,
    Event,
    Scope,
    _set_correlation,
    _set_span_context,
)
from ..kinds import (
    CHAT_TEXT_DELTA,
    CHAT_TOOL_CALL_ARGUMENTS_DELTA,
    CLIENT_OUTPUT_DELTA,
    CONTEXT_BUILT,
    DECISION_MADE,
    DECISION_OUTCOME,
    LLM_DELTA,
    LLM_FAILED,
    LLM_REASONING_DELTA,
    LLM_REQUEST,
    LLM_RESPONSE,
    LLM_TOOL_CALL_COMPLETED,
    LLM_TOOL_CALL_DELTA,
    LLM_TOOL_CALL_STARTED,
    LLM_USAGE,
    NODE_INTERNAL_OUTPUT,
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
from . import messages
from .content import ContentPolicy
from .metrics import MirrorMetrics
from .sdk_internals import new_readable_span

logger = logging.getLogger("otel_agentbus.telemetry")

_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED: Final = TraceFlags(TraceFlags.DEFAULT)
_OK: Final = Status(StatusCode.UNSET)
_getrandbits = random.getrandbits
_new_correlation = tuple.__new__
"""``Correlation(...)`` at C speed: a named tuple is a tuple (every field given here)."""


_MAX_CACHED_TOOLS: Final = 1024

_NO_PUBLISHER_IDS: Final = EMPTY_CORRELATION[3:]
"""The correlation fields a publisher sets (all but the trace context), all unset."""
_ROUTING_START: Final = 7
"""Index of ``Scope.runtime_id``: the routing fields (seed 004) come last in a Scope."""
_NO_ROUTING: Final = EMPTY_SCOPE[_ROUTING_START:]
_ROUTING_ATTRIBUTES: Final = tuple(zip(
    Scope._fields[_ROUTING_START:],
    (sc.RUNTIME_ID, sc.CHANNEL_NAME, sc.CHANNEL_ACCOUNT, sc.CHAT_ID, sc.CHAT_TOPIC_ID,
     sc.SPACE_ID, sc.SPACE_TYPE, sc.CHAT_TYPE, sc.SENDER_ID, sc.MESSAGE_ID),
    strict=True,
))


def routing_attributes(event: Event, into: dict[str, AttributeValue],
                       text: Callable[[str], str]) -> None:
    """Add the event's routing scope (channel, chat, sender, ...) and its turn and reply
    correlation as ``agentbus.*`` attributes; nothing when it has none (the usual case)."""
    scope = event.scope
    if scope[_ROUTING_START:] != _NO_ROUTING:
        for field_name, attribute in _ROUTING_ATTRIBUTES:
            value = getattr(scope, field_name)
            if value is not None:
                into[attribute] = text(value)
    correlation = event.correlation
    if correlation.parent_turn_id is not None:
        into[sc.PARENT_TURN_ID] = text(correlation.parent_turn_id)
    if correlation.reply_to_id is not None:
        into[sc.REPLY_TO_ID] = text(correlation.reply_to_id)


class OpenSpan:
    """A span that has started and not ended: only what building it at the end needs."""

    __slots__ = (
        "attributes",
        "chunks",
        "context",
        "correlation",
        "event_count",
        "events",
        "first_chunk_ns",
        "kind",
        "name",
        "parent",
        "reasoning_chunks",
        "span_hex",
        "start_ns",
        "trace_hex",
    )

    trace_hex: str
    span_hex: str

    def __init__(
        self, name: str, kind: SpanKind, context: SpanContext, parent: SpanContext | None,
        start_ns: int, attributes: dict[str, AttributeValue],
        parent_span: OpenSpan | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.context = context
        self.parent = parent
        self.start_ns = start_ns
        self.attributes = attributes
        self.events: list[SpanEvent] = []
        self.event_count = 0
        span_hex = format(context.span_id, "016x")
        trace_hex: str
        parent_hex: str | None
        if parent_span is not None:  # the same trace: its hex ids are made already
            trace_hex = parent_span.trace_hex
            parent_hex = parent_span.span_hex
        else:
            trace_hex = format(context.trace_id, "032x")
            parent_hex = format(parent.span_id, "016x") if parent is not None else None
        self.span_hex = span_hex
        self.trace_hex = trace_hex
        # Built once: every event stamped with this span shares it.
        self.correlation = _new_correlation(
            Correlation, (trace_hex, span_hex, parent_hex, None, None, None, None))
        self.chunks = 0
        self.reasoning_chunks = 0
        self.first_chunk_ns = 0


class RunState:
    """The open spans of one run, keyed so that end events find what they close."""

    __slots__ = ("common", "iterations", "llm_calls", "models", "nodes", "open_by_id", "root",
                 "tools", "usage")

    def __init__(self, root: OpenSpan, common: dict[str, AttributeValue]) -> None:
        self.root = root
        self.common = common
        """Attributes every span of the run carries (conversation id, run id)."""
        self.nodes: dict[str, OpenSpan] = {}
        self.iterations: dict[str, OpenSpan] = {}
        self.llm_calls: dict[str, OpenSpan] = {}
        self.tools: dict[str, OpenSpan] = {}
        self.open_by_id: dict[int, OpenSpan] = {}
        """Open tool and LLM spans by span id: a call made while one of them is the current
        span (a tool inside a tool) is parented to it."""
        self.usage: dict[str, int] = {}
        """Token usage summed over the run's finished LLM calls, by attribute."""
        self.models: dict[str, set[AttributeValue]] = {}
        """Provider and request model of the run's LLM calls: the run span names them when
        there was exactly one."""

    def parent_for(self, node_id: str | None) -> OpenSpan:
        """The parent of a new tool or LLM span: the current span if it is one of this
        run's open calls, else the node's iteration, else the run."""
        if self.open_by_id:
            current = trace.get_current_span().get_span_context().span_id
            span = self.open_by_id.get(current)
            if span is not None:
                return span
        return self.innermost(node_id)

    def innermost(self, node_id: str | None) -> OpenSpan:
        """Where a span event or a child span of this node goes."""
        if node_id is not None:
            span = self.iterations.get(node_id) or self.nodes.get(node_id)
            if span is not None:
                return span
        return self.root

    def open_spans(self) -> list[OpenSpan]:
        """Innermost first, so children end before their parents."""
        return [*self.tools.values(), *self.llm_calls.values(), *self.iterations.values(),
                *self.nodes.values()]


_RUN_COMMON: Final = (sc.RUN_ID, sc.GEN_AI_AGENT_NAME, sc.GEN_AI_CONVERSATION_ID)
"""What every span of a run carries (see ``RunState.common``)."""
_USAGE_ATTRIBUTES: Final = (
    sc.GEN_AI_USAGE_INPUT_TOKENS, sc.GEN_AI_USAGE_OUTPUT_TOKENS,
    sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
)
_NUMBER_SETTINGS: Final = (
    ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE), ("top_p", sc.GEN_AI_REQUEST_TOP_P),
    ("frequency_penalty", sc.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", sc.GEN_AI_REQUEST_PRESENCE_PENALTY),
)
_INT_SETTINGS: Final = (
    ("max_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS),
    ("max_output_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS),
    ("top_k", sc.GEN_AI_REQUEST_TOP_K), ("seed", sc.GEN_AI_REQUEST_SEED),
)


def _request_settings(payload: Mapping[str, Any], into: dict[str, AttributeValue],
                      text: Callable[[str], str]) -> None:
    """The request settings an LLM request event carries, as ``gen_ai.request.*``."""
    for key, attribute in _NUMBER_SETTINGS:
        value = payload.get(key)
        if type(value) is float or type(value) is int:
            into[attribute] = float(value)
    for key, attribute in _INT_SETTINGS:
        value = payload.get(key)
        if type(value) is int:
            into[attribute] = value
    stop = payload.get("stop_sequences", payload.get("stop"))
    if isinstance(stop, str):
        into[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = [text(stop)]
    elif isinstance(stop, list | tuple) and stop and all(type(s) is str for s in stop):
        into[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = [text(s) for s in stop]
    stream = payload.get("stream")
    if type(stream) is bool:
        into[sc.GEN_AI_REQUEST_STREAM] = stream


def _openinference_io(value_key: str, mime_key: str, raw: Any, as_json: AttributeValue,
                      data: list[dict[str, Any]], attributes: dict[str, AttributeValue]) -> None:
    """A run's input or output as OpenInference's ``input.value`` / ``output.value``:
    plain text stays text, anything else goes as the messages' JSON."""
    if isinstance(raw, str) and data and data[0]["parts"]:
        attributes[value_key] = data[0]["parts"][0]["content"]
        attributes[mime_key] = "text/plain"
    else:
        attributes[value_key] = as_json
        attributes[mime_key] = "application/json"


def _openinference_value(into: dict[str, AttributeValue], value_key: str, mime_key: str,
                         raw: Any, captured: AttributeValue) -> None:
    """A tool's arguments or result as OpenInference's input or output (already captured)."""
    into[value_key] = captured
    into[mime_key] = "text/plain" if isinstance(raw, str) else "application/json"


def _bridged(event: Event) -> bool:
    """Whether the event stands for a span another instrumentation exported already."""
    return bool(event.attrs.get(sc.EVENT_BRIDGED))


def _tool_call_id(payload: Mapping[str, Any]) -> str:
    value = payload.get("tool_call_id") or payload.get("tool_use_id") or payload.get("call_id")
    return str(value) if value is not None else ""


def _llm_call_id(payload: Mapping[str, Any]) -> str:
    value = payload.get("call_id") or payload.get("request_id")
    return str(value) if value is not None else ""


class TelemetryMirror:
    """Turns bus events into telemetry; attach it with ``bus.add_hook(mirror)``."""

    def __init__(
        self,
        span_processor: SpanProcessor,
        *,
        resource: Resource | None = None,
        sampler: Sampler | None = None,
        metrics: MirrorMetrics | None = None,
        content: ContentPolicy | None = None,
        pending_spans: bool = True,
    ) -> None:
        self._processor = span_processor
        self._resource = resource or Resource.get_empty()
        self._sampler = sampler
        self._metrics = metrics
        self._content = content or ContentPolicy()
        self._capture = self._content.content_on_spans
        """The policy is frozen: whether content goes on spans is decided once."""
        self._tool_attributes: dict[tuple[str, str, str],
                                    tuple[dict[str, AttributeValue], str]] = {}
        """The attributes a tool's spans start from, by (name, type, description): most
        agents call a handful of tools many times."""
        self._pending = pending_spans
        self._scope = InstrumentationScope(sc.INSTRUMENTATION_SCOPE, sc.SCHEMA_VERSION,
                                           sc.SCHEMA_URL)
        self._runs: dict[str, RunState] = {}
        self._orphans: dict[tuple[str, str], OpenSpan] = {}
        """Tool and LLM spans published outside any run: roots of their own traces."""
        self.spans_started = 0
        self.spans_ended = 0
        self.spans_force_ended = 0
        self.spans_emitted = 0
        """Finished span records handed to the span processor (pending records included)."""
        self.events_recorded = 0
        self.events_unattached = 0
        self._dispatch: dict[str, Callable[[Event], None]] = {
            RUN_STARTED: self._run_started,
            RUN_COMPLETED: self._run_completed,
            RUN_FAILED: self._run_failed,
            RUN_CANCELLED: self._run_cancelled,
            NODE_LOOP_STARTED: self._node_started,
            NODE_LOOP_ITERATION: self._node_iteration,
            NODE_LOOP_COMPLETED: self._node_completed,
            NODE_LOOP_FAILED: self._node_failed,
            LLM_REQUEST: self._llm_request,
            LLM_RESPONSE: self._llm_response,
            LLM_FAILED: self._llm_failed,
            LLM_DELTA: self._llm_delta,
            LLM_REASONING_DELTA: self._llm_reasoning_delta,
            LLM_USAGE: self._llm_usage,
            TOOL_CALL_STARTED: self._tool_started,
            TOOL_CALL_COMPLETED: self._tool_completed,
            DECISION_MADE: self._decision,
            DECISION_OUTCOME: self._outcome,
            PROBLEM_REPORTED: self._problem,
        }
        self._aggregated = frozenset({
            LLM_TOOL_CALL_STARTED, LLM_TOOL_CALL_DELTA,
            LLM_TOOL_CALL_COMPLETED, CLIENT_OUTPUT_DELTA,
            NODE_INTERNAL_OUTPUT, CONTEXT_BUILT,
            # A provider's chat stream (seed 002) streams as finely as LLM deltas do.
            CHAT_TEXT_DELTA, CHAT_TOOL_CALL_ARGUMENTS_DELTA,
        })

    # ------------------------------------------------------------------ hook
    def __call__(self, event: Event) -> None:
        handler = self._dispatch.get(event.kind)
        if handler is not None:
            handler(event)
            return
        run = self._runs.get(event.scope.run_id) if event.scope.run_id else None
        if run is None:
            self._stamp_from_context(event)
            if self._metrics is not None:
                self._metrics.other_event(event)
            return
        span = run.innermost(event.scope.node_id)
        self._stamp(event, span)
        if event.kind in self._aggregated:
            span.chunks += 1
            return
        attributes = self._content.payload_attributes(event.payload, sc.EVENT_PAYLOAD_PREFIX)
        routing_attributes(event, attributes, self._content.text)
        self._add_event(span, event.kind, event, attributes)
        if self._metrics is not None:
            self._metrics.other_event(event)

    # ---------------------------------------------------------------- helpers
    def _stamp(self, event: Event, span: OpenSpan) -> None:
        if event.attrs is not _EMPTY_MAPPING and event.attrs.get(sc.EVENT_BRIDGED):
            self._stamp_bridged(event, span)
            return
        old = event.correlation
        if old is EMPTY_CORRELATION or old[3:] == _NO_PUBLISHER_IDS:
            _set_correlation(event, span.correlation)  # what _stamp_correlation does
            _set_span_context(event, span.context)
        else:  # keep the ids the publisher set; only the trace context is ours
            event._stamp_correlation(_new_correlation(
                Correlation, (*span.correlation[:3], *old[3:])), span.context)

    def _stamp_bridged(self, event: Event, span: OpenSpan) -> None:
        """A bridged event belongs to a span exported by someone else: it keeps the ids it
        came with, else takes the current span's (that instrumentation's), else ours."""
        if event.correlation.span_id:
            return
        if trace.get_current_span().get_span_context().is_valid:
            self._stamp_from_context(event)
        else:
            _set_correlation(event, span.correlation)
            _set_span_context(event, span.context)

    def _stamp_from_context(self, event: Event) -> None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            old = event.correlation
            event._stamp_correlation(_new_correlation(Correlation, (
                format(context.trace_id, "032x"), format(context.span_id, "016x"), None,
                *old[3:],
            )), context)

    def _child(
        self, name: str, kind: SpanKind, parent: OpenSpan | None, start_ns: int,
        attributes: dict[str, AttributeValue], bridged: bool = False,
    ) -> OpenSpan:
        if parent is not None:
            parent_context = parent.context
            context = SpanContext(parent_context.trace_id, _getrandbits(64), False,
                                  parent_context.trace_flags)
        else:  # a call outside any run: the root of its own trace, sampled as one
            parent_context = None
            trace_id = _getrandbits(128)
            context = SpanContext(trace_id, _getrandbits(64), False, _UNSAMPLED if bridged
                                  else self._sample(None, trace_id, name, attributes))
        self.spans_started += 1
        return OpenSpan(name, kind, context, parent_context, start_ns, attributes, parent)

    def _end(
        self, span: OpenSpan, end_ns: int, status: Status = _OK,
        extra: Mapping[str, AttributeValue] | None = None,
    ) -> None:
        self.spans_ended += 1
        attributes = span.attributes
        if extra:
            attributes.update(extra)  # metrics read these even when the trace is unsampled
        if not span.context.trace_flags.sampled:
            return
        if span.chunks:
            attributes[sc.LLM_CHUNKS] = span.chunks
        if span.reasoning_chunks:
            attributes[sc.LLM_REASONING_CHUNKS] = span.reasoning_chunks
        if span.first_chunk_ns:
            attributes[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = max(
                0.0, (span.first_chunk_ns - span.start_ns) / 1e9)
            attributes.setdefault(sc.GEN_AI_REQUEST_STREAM, True)
        self.spans_emitted += 1
        start_ns = span.start_ns
        self._processor.on_end(new_readable_span(
            span.name, span.context, span.parent, self._resource, attributes,
            tuple(span.events) if span.events else (), (), span.kind, None, status, start_ns,
            end_ns if end_ns > start_ns else start_ns, self._scope,
        ))

    def _add_event(
        self, span: OpenSpan, name: str, event: Event, attributes: dict[str, AttributeValue]
    ) -> None:
        """A span event; past the per-span limit, full batches move to a child span so
        that none is lost (the SDK would drop the oldest silently)."""
        attributes[sc.EVENT_SEQ] = event.seq or 0
        span.events.append(SpanEvent(name, attributes, event.time_ns))
        span.event_count += 1
        self.events_recorded += 1
        limit = self._content.max_events_per_span
        if len(span.events) >= limit:
            batch = span.events
            span.events = []
            attributes = {key: span.attributes[key] for key in _RUN_COMMON
                          if key in span.attributes}
            attributes[sc.EVENTS_BATCH] = span.event_count // limit
            attributes[sc.OPENINFERENCE_SPAN_KIND] = sc.OI_CHAIN
            holder = self._child("agentbus.events " + span.name, SpanKind.INTERNAL, span,
                                 batch[0].timestamp, attributes)
            holder.events = batch
            self._end(holder, batch[-1].timestamp)

    def _error(self, payload: Mapping[str, Any], default: str) -> tuple[Status, str]:
        message = payload.get("error") or payload.get("message") or default
        error_type = payload.get("error_type") or sc.ERROR_TYPE_FALLBACK
        text = self._content.text
        return Status(StatusCode.ERROR, text(str(message))), text(str(error_type))

    # ------------------------------------------------------------------- runs
    def _run_started(self, event: Event) -> None:
        scope = event.scope
        run_id = scope.run_id
        if not run_id:
            self.events_unattached += 1
            return
        text = self._content.text  # scope strings are unbounded: cut to the length limit
        agent = text(scope.agent or event.source.name or "agent")
        # On every span of the run: span metrics and the tool/LLM metrics group by agent.
        common: dict[str, AttributeValue] = {sc.RUN_ID: text(run_id),
                                             sc.GEN_AI_AGENT_NAME: agent}
        if scope.session_id:
            common[sc.GEN_AI_CONVERSATION_ID] = text(scope.session_id)
        attributes: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
            sc.OPENINFERENCE_SPAN_KIND: sc.OI_AGENT,
            **common,
        }
        payload = event.payload
        for key, attribute in (("provider", sc.GEN_AI_PROVIDER_NAME),
                               ("model", sc.GEN_AI_REQUEST_MODEL)):
            if payload.get(key):
                attributes[attribute] = text(str(payload[key]))
        if self._capture:
            self._run_input(payload, attributes)
        if scope.stream_id:
            attributes[sc.STREAM_ID] = text(scope.stream_id)
        if scope.graph_id:
            attributes[sc.GRAPH_ID] = text(scope.graph_id)
        if scope.turn_id:
            attributes[sc.TURN_ID] = text(scope.turn_id)
        routing_attributes(event, attributes, text)
        name = f"{sc.OP_INVOKE_AGENT} {agent}"
        parent = self._parent_of_run(event)
        trace_id = parent.trace_id if parent is not None else _getrandbits(128)
        # A bridged run was exported by another instrumentation: metrics only, no spans.
        flags = (_UNSAMPLED if _bridged(event)
                 else self._sample(parent, trace_id, name, attributes))
        context = SpanContext(trace_id, _getrandbits(64), False, flags)
        root = OpenSpan(name, SpanKind.INTERNAL, context, parent, event.time_ns, attributes)
        self.spans_started += 1
        previous = self._runs.get(run_id)
        if previous is not None:
            self._close_run(previous, event.time_ns, "restarted")
        self._runs[run_id] = RunState(root, common)
        self._stamp(event, root)
        if self._pending and flags.sampled:
            self._emit_pending(root, common)

    def _run_input(self, payload: Mapping[str, Any],
                   attributes: dict[str, AttributeValue]) -> None:
        """The run's input as a user message (and as Phoenix's input), its instructions
        and tools; only called with capture on."""
        for key in ("messages", "input", "prompt"):
            if key in payload:
                self._messages_in(key, payload[key], attributes, openinference=True)
                break
        self._instructions_and_tools(payload, attributes)

    def _instructions_and_tools(self, payload: Mapping[str, Any],
                                attributes: dict[str, AttributeValue]) -> None:
        content = self._content
        for key, attribute, shape in (
            ("system_instructions", sc.GEN_AI_SYSTEM_INSTRUCTIONS, messages.system_instructions),
            ("tools", sc.GEN_AI_TOOL_DEFINITIONS, messages.tool_definitions),
        ):
            if payload.get(key) is not None:
                shaped = content.content_shaped(key, payload[key], shape)
                if shaped is not None:
                    attributes[attribute] = shaped[1]

    def _messages_in(self, key: str, value: Any, attributes: dict[str, AttributeValue],
                     *, openinference: bool) -> None:
        """Input content as ``gen_ai.input.messages`` (and OpenInference's ``input.value``,
        which viewers show for runs: they derive an LLM span's messages themselves)."""
        shaped = self._content.content_shaped(key, value, messages.input_messages)
        if shaped is None:
            return
        data, attributes[sc.GEN_AI_INPUT_MESSAGES] = shaped
        if openinference:
            _openinference_io(sc.INPUT_VALUE, sc.INPUT_MIME_TYPE, value, shaped[1], data,
                              attributes)

    def _messages_out(self, key: str, value: Any, finish_reason: str | None,
                      tool_calls: Any, attributes: dict[str, AttributeValue],
                      *, openinference: bool) -> None:
        """Output content as ``gen_ai.output.messages`` (and ``output.value``)."""
        shaped = self._content.content_shaped(
            key, value, lambda v, tool_calls: messages.output_messages(v, finish_reason,
                                                                       tool_calls),
            tool_calls=tool_calls)
        if shaped is None:
            return
        data, attributes[sc.GEN_AI_OUTPUT_MESSAGES] = shaped
        if openinference:
            _openinference_io(sc.OUTPUT_VALUE, sc.OUTPUT_MIME_TYPE, value, shaped[1], data,
                              attributes)

    def _parent_of_run(self, event: Event) -> SpanContext | None:
        """The caller's trace: a ``traceparent`` in the payload, else the current span."""
        carrier = event.payload.get("traceparent")
        if isinstance(carrier, str):
            context = trace.get_current_span(extract({"traceparent": carrier}))
            span_context = context.get_span_context()
            if span_context.is_valid:
                return span_context
        current = trace.get_current_span().get_span_context()
        return current if current.is_valid else None

    def _sample(
        self, parent: SpanContext | None, trace_id: int, name: str,
        attributes: dict[str, AttributeValue],
    ) -> TraceFlags:
        if self._sampler is None:
            return parent.trace_flags if parent is not None else _SAMPLED
        parent_context = (trace.set_span_in_context(trace.NonRecordingSpan(parent))
                          if parent is not None else None)
        result = self._sampler.should_sample(parent_context, trace_id, name,
                                             SpanKind.INTERNAL, attributes)
        return _SAMPLED if result.decision is Decision.RECORD_AND_SAMPLE else _UNSAMPLED

    def _emit_pending(self, root: OpenSpan, common: Mapping[str, AttributeValue]) -> None:
        """A zero-length child record exported at once, so a backend shows the run as
        in progress long before the run span itself ends (Logfire's "pending span").

        It is not a second agent span: another name, no ``gen_ai.operation.name`` and the
        generic OpenInference kind, so GenAI-aware backends count one agent per run; the
        run's common attributes (run id, agent, conversation) say whose record it is."""
        context = SpanContext(root.context.trace_id, _getrandbits(64), False, _SAMPLED)
        self.spans_emitted += 1
        self._processor.on_end(new_readable_span(
            f"{sc.PENDING_SPAN_PREFIX} {root.name}", context, root.context, self._resource,
            {**common, sc.OPENINFERENCE_SPAN_KIND: sc.OI_CHAIN, sc.SPAN_PENDING: True},
            (), (), SpanKind.INTERNAL, None, _OK, root.start_ns, root.start_ns, self._scope,
        ))

    def _run_ended(self, event: Event, status: Status, run_status: str,
                   extra: dict[str, AttributeValue]) -> None:
        run = self._runs.pop(event.scope.run_id or "", None)
        if run is None:
            self.events_unattached += 1
            self._stamp_from_context(event)
            return
        self._stamp(event, run.root)
        reason = str(event.payload.get("reason") or ("run_ended" if run_status ==
                                                        sc.STATUS_COMPLETED else run_status))
        self._close_children(run, event.time_ns, reason)
        extra[sc.RUN_STATUS] = run_status
        root = run.root
        extra.update(run.usage)
        for attribute, seen in run.models.items():
            if len(seen) == 1 and attribute not in root.attributes:
                extra[attribute] = next(iter(seen))
        if self._capture:
            for key in ("output", "result", "messages"):
                if key in event.payload:
                    self._messages_out(key, event.payload[key], None, None, extra,
                                       openinference=True)
                    break
        self._end(root, event.time_ns, status, extra)
        if self._metrics is not None:
            self._metrics.run_ended(root.attributes, run_status,
                                    (event.time_ns - root.start_ns) / 1e9, root.context)

    def _run_completed(self, event: Event) -> None:
        self._run_ended(event, _OK, sc.STATUS_COMPLETED, {})

    def _run_failed(self, event: Event) -> None:
        status, error_type = self._error(event.payload, "run failed")
        self._run_ended(event, status, sc.STATUS_FAILED, {sc.ERROR_TYPE: error_type})

    def _run_cancelled(self, event: Event) -> None:
        reason = str(event.payload.get("reason") or "cancelled")
        status = Status(StatusCode.ERROR, self._content.text(f"cancelled: {reason}"))
        self._run_ended(event, status, sc.STATUS_CANCELLED, {sc.ERROR_TYPE: "cancelled"})

    def _close_children(self, run: RunState, end_ns: int, reason: str) -> None:
        """End every span whose own end event never came, saying why."""
        for span in run.open_spans():
            self.spans_force_ended += 1
            self._end(span, end_ns, Status(StatusCode.ERROR, f"not ended: {reason}")
                      if reason not in ("run_ended",) else _OK, {sc.END_REASON: reason})
        run.tools.clear()
        run.open_by_id.clear()
        run.llm_calls.clear()
        run.iterations.clear()
        run.nodes.clear()

    def _close_run(self, run: RunState, end_ns: int, reason: str) -> None:
        self._close_children(run, end_ns, reason)
        self.spans_force_ended += 1
        self._end(run.root, end_ns, Status(StatusCode.ERROR, f"not ended: {reason}"),
                  {sc.END_REASON: reason})

    def shutdown(self, reason: str = "shutdown") -> int:
        """End every open span (at exit or when telemetry shuts down); returns how many."""
        ended_before = self.spans_force_ended
        now = time.time_ns()
        for run in list(self._runs.values()):
            self._close_run(run, now, reason)
        self._runs.clear()
        for span in list(self._orphans.values()):
            self.spans_force_ended += 1
            self._end(span, now, Status(StatusCode.ERROR, f"not ended: {reason}"),
                      {sc.END_REASON: reason})
        self._orphans.clear()
        return self.spans_force_ended - ended_before

    @property
    def open_runs(self) -> int:
        return len(self._runs)

    # ------------------------------------------------------------------ nodes
    def _node_started(self, event: Event) -> None:
        run, node_id = self._run_of(event), event.scope.node_id
        if run is None or not node_id:
            return
        previous = run.nodes.pop(node_id, None)
        if previous is not None:
            self._end_node(run, node_id, previous, event.time_ns, _OK, "restarted")
        label = self._content.text(node_id)
        attributes: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_WORKFLOW, sc.GEN_AI_WORKFLOW_NAME: label,
            sc.OPENINFERENCE_SPAN_KIND: sc.OI_CHAIN, sc.NODE_ID: label, **run.common}
        max_iterations = event.payload.get("max_iterations")
        if isinstance(max_iterations, int):
            attributes[sc.NODE_MAX_ITERATIONS] = max_iterations
        span = self._child(f"node {label}", SpanKind.INTERNAL, run.root, event.time_ns,
                           attributes)
        run.nodes[node_id] = span
        self._stamp(event, span)

    def _node_iteration(self, event: Event) -> None:
        run, node_id = self._run_of(event), event.scope.node_id
        if run is None or not node_id:
            return
        node = run.nodes.get(node_id)
        if node is None:  # an iteration without a loop start: open the loop implicitly
            self._node_started(event)
            node = run.nodes[node_id]
        previous = run.iterations.pop(node_id, None)
        if previous is not None:
            self._end(previous, event.time_ns)
        iteration = event.payload.get("iteration")
        label = str(node.attributes[sc.NODE_ID])  # cut to the length limit already
        attributes: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_WORKFLOW, sc.GEN_AI_WORKFLOW_NAME: label,
            sc.OPENINFERENCE_SPAN_KIND: sc.OI_CHAIN, sc.NODE_ID: label, **run.common}
        if isinstance(iteration, int):
            attributes[sc.NODE_ITERATION] = iteration
        span = self._child(f"iteration {label}", SpanKind.INTERNAL, node, event.time_ns,
                           attributes)
        run.iterations[node_id] = span
        self._stamp(event, span)

    def _end_node(self, run: RunState, node_id: str, node: OpenSpan, end_ns: int,
                  status: Status, reason: str | None = None) -> None:
        iteration = run.iterations.pop(node_id, None)
        if iteration is not None:
            self._end(iteration, end_ns, status)
        self._end(node, end_ns, status, {sc.END_REASON: reason} if reason else None)

    def _pop_node(self, event: Event) -> tuple[RunState, str, OpenSpan] | None:
        """The run and open node span an end event closes (stamped), or None."""
        run, node_id = self._run_of(event), event.scope.node_id
        node = run.nodes.pop(node_id, None) if run is not None and node_id else None
        if run is None or node is None or node_id is None:
            self.events_unattached += 1
            return None
        self._stamp(event, node)
        return run, node_id, node

    def _node_completed(self, event: Event) -> None:
        found = self._pop_node(event)
        if found is None:
            return
        run, node_id, node = found
        iterations = event.payload.get("iterations")
        if isinstance(iterations, int):
            node.attributes[sc.NODE_ITERATIONS] = iterations
        self._end_node(run, node_id, node, event.time_ns, _OK)

    def _node_failed(self, event: Event) -> None:
        found = self._pop_node(event)
        if found is None:
            return
        run, node_id, node = found
        status, error_type = self._error(event.payload, "node failed")
        node.attributes[sc.ERROR_TYPE] = error_type
        self._end_node(run, node_id, node, event.time_ns, status)

    def _run_of(self, event: Event) -> RunState | None:
        run_id = event.scope.run_id
        return self._runs.get(run_id) if run_id else None

    # -------------------------------------------------------------------- LLM
    def _llm_request(self, event: Event) -> None:
        payload = event.payload
        text = self._content.text
        model = text(str(payload.get("model") or payload.get("request_model") or "unknown"))
        attributes: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.OPENINFERENCE_SPAN_KIND: sc.OI_LLM,
            sc.GEN_AI_REQUEST_MODEL: model,
        }
        provider = payload.get("provider")
        if provider:
            attributes[sc.GEN_AI_PROVIDER_NAME] = text(str(provider))
        _request_settings(payload, attributes, text)
        if self._capture:
            for key in ("messages", "prompt", "input"):
                if key in payload:
                    self._messages_in(key, payload[key], attributes, openinference=False)
                    break
            self._instructions_and_tools(payload, attributes)
        run = self._run_of(event)
        key = _llm_call_id(payload)
        if run is not None:
            attributes.update(run.common)
            parent = run.parent_for(event.scope.node_id)
        else:
            parent = None
        span = self._child(f"{sc.OP_CHAT} {model}", SpanKind.CLIENT, parent, event.time_ns,
                           attributes, parent is None and _bridged(event))
        if run is not None:
            run.llm_calls[key] = span
            run.open_by_id[span.context.span_id] = span
        else:
            self._orphans[("llm", key)] = span
        self._stamp(event, span)

    def _find_llm(self, event: Event, pop: bool) -> OpenSpan | None:
        key = _llm_call_id(event.payload)
        run = self._run_of(event)
        if run is not None:
            calls = run.llm_calls
            span = calls.pop(key, None) if pop else calls.get(key)
            if span is None and not key and len(calls) == 1:
                span = calls.popitem()[1] if pop else next(iter(calls.values()))
            if pop and span is not None:
                run.open_by_id.pop(span.context.span_id, None)
            return span
        orphans = self._orphans
        return orphans.pop(("llm", key), None) if pop else orphans.get(("llm", key))

    def _llm_delta(self, event: Event) -> None:
        span = self._find_llm(event, pop=False)
        if span is None:  # a delta outside a known LLM call (Hive's llm_text_delta)
            run = self._run_of(event)
            if run is not None:
                outer = run.innermost(event.scope.node_id)
                outer.chunks += 1
                self._stamp(event, outer)
            return
        if not span.chunks and not span.reasoning_chunks:
            span.first_chunk_ns = event.time_ns
        span.chunks += 1
        self._stamp(event, span)

    def _llm_reasoning_delta(self, event: Event) -> None:
        span = self._find_llm(event, pop=False)
        if span is None:
            return
        if not span.chunks and not span.reasoning_chunks:
            span.first_chunk_ns = event.time_ns
        span.reasoning_chunks += 1
        self._stamp(event, span)

    def _usage_attributes(self, payload: Mapping[str, Any]) -> dict[str, AttributeValue]:
        out: dict[str, AttributeValue] = {}
        for key, attribute in (
            ("input_tokens", sc.GEN_AI_USAGE_INPUT_TOKENS),
            ("output_tokens", sc.GEN_AI_USAGE_OUTPUT_TOKENS),
            ("cache_read_input_tokens", sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS),
            ("cache_creation_input_tokens", sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS),
            ("reasoning_output_tokens", sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS),
        ):
            value = payload.get(key)
            if type(value) is int:
                out[attribute] = value
        return out

    def _llm_usage(self, event: Event) -> None:
        span = self._find_llm(event, pop=False)
        if span is None:
            run = self._run_of(event)
            if run is not None:
                span = run.innermost(event.scope.node_id)
        if span is None:
            self.events_unattached += 1
            return
        span.attributes.update(self._usage_attributes(event.payload))
        self._stamp(event, span)

    def _llm_response(self, event: Event) -> None:
        span = self._find_llm(event, pop=True)
        if span is None:
            self.events_unattached += 1
            return
        self._stamp(event, span)
        payload = event.payload
        extra = self._usage_attributes(payload)
        model = payload.get("response_model") or payload.get("model")
        if model:
            extra[sc.GEN_AI_RESPONSE_MODEL] = self._content.text(str(model))
        response_id = payload.get("response_id")
        if response_id:
            extra[sc.GEN_AI_RESPONSE_ID] = self._content.text(str(response_id))
        reasons = payload.get("finish_reasons") or payload.get("finish_reason")
        reason_list = ([str(r) for r in reasons] if isinstance(reasons, tuple | list)
                       else [str(reasons)] if reasons else [])
        if reason_list:
            extra[sc.GEN_AI_RESPONSE_FINISH_REASONS] = self._content.value(reason_list)
        if self._capture:
            for key in ("content", "output", "messages", "text"):
                if key in payload:
                    self._messages_out(key, payload[key], reason_list[0] if reason_list
                                       else None, payload.get("tool_calls"), extra,
                                       openinference=False)
                    break
        self._end(span, event.time_ns, _OK, extra)
        self._count_llm(event, span)
        if self._metrics is not None:
            self._metrics.llm_call(span.attributes, (event.time_ns - span.start_ns) / 1e9,
                                   None, span.context)

    def _count_llm(self, event: Event, span: OpenSpan) -> None:
        """Add a finished LLM call's usage, provider and model to its run's totals."""
        run = self._run_of(event)
        if run is None:
            return
        attributes = span.attributes
        usage = run.usage
        for attribute in _USAGE_ATTRIBUTES:
            value = attributes.get(attribute)
            if type(value) is int:
                usage[attribute] = usage.get(attribute, 0) + value
        for attribute in (sc.GEN_AI_PROVIDER_NAME, sc.GEN_AI_REQUEST_MODEL):
            value = attributes.get(attribute)
            if value is not None:
                run.models.setdefault(attribute, set()).add(value)

    def _llm_failed(self, event: Event) -> None:
        span = self._find_llm(event, pop=True)
        if span is None:
            self.events_unattached += 1
            return
        self._stamp(event, span)
        status, error_type = self._error(event.payload, "LLM call failed")
        self._end(span, event.time_ns, status, {sc.ERROR_TYPE: error_type})
        self._count_llm(event, span)
        if self._metrics is not None:
            self._metrics.llm_call(span.attributes, (event.time_ns - span.start_ns) / 1e9,
                                   error_type, span.context)

    # ------------------------------------------------------------------ tools
    def _tool_started(self, event: Event) -> None:
        payload = event.payload
        base, span_name = self._tool_base(payload, event)
        attributes = base.copy()
        call_id = _tool_call_id(payload)
        if call_id:
            attributes[sc.GEN_AI_TOOL_CALL_ID] = self._content.text(call_id)
        if self._capture:
            for key_name in ("arguments", "tool_input"):
                if key_name in payload:
                    captured = self._content.content_value(key_name, payload[key_name])
                    if captured is not None:
                        attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = captured
                        _openinference_value(attributes, sc.INPUT_VALUE, sc.INPUT_MIME_TYPE,
                                             payload[key_name], captured)
                    break
        run = self._run_of(event)
        if run is not None:
            attributes.update(run.common)
            span = self._child(span_name, SpanKind.INTERNAL,
                               run.parent_for(event.scope.node_id), event.time_ns, attributes)
            run.tools[call_id] = span
            run.open_by_id[span.context.span_id] = span
        else:
            span = self._child(span_name, SpanKind.INTERNAL, None, event.time_ns, attributes,
                               _bridged(event))
            self._orphans[("tool", call_id)] = span
        self._stamp(event, span)

    def _tool_base(self, payload: Mapping[str, Any], event: Event
                   ) -> tuple[dict[str, AttributeValue], str]:
        """The attributes every span of this tool starts with, and the span's name; kept
        per (name, type, description), since most agents call a few tools many times."""
        key = (str(payload.get("tool_name") or event.source.name or "tool"),
               str(payload.get("tool_type") or "function"),
               str(payload.get("description") or ""))
        cached = self._tool_attributes.get(key)
        if cached is None:
            name, tool_type, description = key
            text = self._content.text
            tool = text(name)
            attributes: dict[str, AttributeValue] = {
                sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                sc.OPENINFERENCE_SPAN_KIND: sc.OI_TOOL,
                sc.GEN_AI_TOOL_NAME: tool,
                sc.GEN_AI_TOOL_TYPE: text(tool_type),
            }
            if description:
                attributes[sc.GEN_AI_TOOL_DESCRIPTION] = text(description)
            cached = attributes, f"{sc.OP_EXECUTE_TOOL} {tool}"
            if len(self._tool_attributes) < _MAX_CACHED_TOOLS:
                self._tool_attributes[key] = cached
        return cached

    def _tool_completed(self, event: Event) -> None:
        payload = event.payload
        call_id = _tool_call_id(payload)
        run = self._run_of(event)
        if run is not None:
            span = run.tools.pop(call_id, None)
            if span is not None:
                run.open_by_id.pop(span.context.span_id, None)
        else:
            span = self._orphans.pop(("tool", call_id), None)
        if span is None:
            self.events_unattached += 1
            return
        self._stamp(event, span)
        extra: dict[str, AttributeValue] | None = None
        status = _OK
        error_type = None
        if payload.get("is_error"):
            status, error_type = self._error(payload, "tool call failed")
            extra = {sc.ERROR_TYPE: error_type}
        if self._capture and "result" in payload:
            captured = self._content.content_value("result", payload["result"])
            if captured is not None:
                extra = {**(extra or {}), sc.GEN_AI_TOOL_CALL_RESULT: captured}
                _openinference_value(extra, sc.OUTPUT_VALUE, sc.OUTPUT_MIME_TYPE,
                                     payload["result"], captured)
        self._end(span, event.time_ns, status, extra)
        if self._metrics is not None:
            self._metrics.tool_call(span.attributes, (event.time_ns - span.start_ns) / 1e9,
                                    error_type, span.context)

    # -------------------------------------------------------- decisions et al.
    def _target(self, event: Event) -> OpenSpan | None:
        run = self._run_of(event)
        if run is None:
            self.events_unattached += 1
            self._stamp_from_context(event)
            return None
        call_id = _tool_call_id(event.payload)
        span = run.tools.get(call_id) if call_id else None
        span = span or run.innermost(event.scope.node_id)
        self._stamp(event, span)
        return span

    def _decision(self, event: Event) -> None:
        span = self._target(event)
        if self._metrics is not None:
            self._metrics.decision(event, span.context if span is not None else None)
        if span is None:
            return
        payload = event.payload
        attributes: dict[str, AttributeValue] = {}
        for key, attribute in (("decision_id", sc.DECISION_ID), ("intent", sc.DECISION_INTENT),
                               ("chosen", sc.DECISION_CHOSEN),
                               ("reasoning", sc.DECISION_REASONING)):
            if payload.get(key) is not None:
                attributes[attribute] = self._content.value(payload[key])
        if payload.get("options") is not None:
            attributes[sc.DECISION_OPTIONS] = self._content.value(payload["options"])
        skip = frozenset({"decision_id", "intent", "chosen", "reasoning", "options"})
        attributes.update(
            self._content.payload_attributes(payload, sc.DECISION_PAYLOAD_PREFIX, skip))
        self._add_event(span, sc.EV_DECISION, event, attributes)

    def _outcome(self, event: Event) -> None:
        span = self._target(event)
        if span is not None:
            attributes = self._content.payload_attributes(event.payload,
                                                          sc.OUTCOME_PAYLOAD_PREFIX)
            self._add_event(span, sc.EV_OUTCOME, event, attributes)

    def _problem(self, event: Event) -> None:
        span = self._target(event)
        if span is not None:
            attributes = self._content.payload_attributes(event.payload,
                                                          sc.PROBLEM_PAYLOAD_PREFIX)
            self._add_event(span, sc.EV_PROBLEM, event, attributes)
