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

    __slots__ = ("common", "iterations", "llm_calls", "nodes", "open_by_id", "root", "tools")

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
        self._scope = InstrumentationScope(sc.INSTRUMENTATION_SCOPE, sc.SCHEMA_VERSION)
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
        attributes = self._content.payload_attributes(event.payload, "agentbus.")
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
            if span.first_chunk_ns:
                attributes[sc.LLM_TIME_TO_FIRST_CHUNK] = round(
                    (span.first_chunk_ns - span.start_ns) / 1e6, 3)
        if span.reasoning_chunks:
            attributes[sc.LLM_REASONING_CHUNKS] = span.reasoning_chunks
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
            holder = self._child("agentbus.events " + span.name, SpanKind.INTERNAL, span,
                                 batch[0].timestamp,
                                 {sc.EVENTS_BATCH: span.event_count // limit})
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
            **common,
        }
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
            self._emit_pending(root)

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

    def _emit_pending(self, root: OpenSpan) -> None:
        """A zero-length child record exported at once, so a backend shows the run as
        in progress long before the run span itself ends (Logfire's "pending span")."""
        context = SpanContext(root.context.trace_id, _getrandbits(64), False, _SAMPLED)
        self.spans_emitted += 1
        self._processor.on_end(new_readable_span(
            root.name, context, root.context, self._resource,
            {**root.attributes, sc.SPAN_PENDING: True}, (), (), SpanKind.INTERNAL, None, _OK,
            root.start_ns, root.start_ns, self._scope,
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
        attributes: dict[str, AttributeValue] = {sc.NODE_ID: label, **run.common}
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
        attributes: dict[str, AttributeValue] = {sc.NODE_ID: label, **run.common}
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
            sc.GEN_AI_REQUEST_MODEL: model,
        }
        provider = payload.get("provider")
        if provider:
            attributes[sc.GEN_AI_PROVIDER_NAME] = text(str(provider))
        for key, attribute in (("messages", sc.GEN_AI_INPUT_MESSAGES),
                               ("system_instructions", sc.GEN_AI_SYSTEM_INSTRUCTIONS)):
            if key in payload:
                captured = self._content.content_value(key, payload[key])
                if captured is not None:
                    attributes[attribute] = captured
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
        reasons = payload.get("finish_reasons") or payload.get("finish_reason")
        if reasons:
            extra[sc.GEN_AI_RESPONSE_FINISH_REASONS] = self._content.value(
                [str(r) for r in reasons] if isinstance(reasons, tuple | list) else [str(reasons)]
            )
        for key in ("content", "output", "messages"):
            if key in payload:
                captured = self._content.content_value(key, payload[key])
                if captured is not None:
                    extra[sc.GEN_AI_OUTPUT_MESSAGES] = captured
                break
        self._end(span, event.time_ns, _OK, extra)
        if self._metrics is not None:
            self._metrics.llm_call(span.attributes, (event.time_ns - span.start_ns) / 1e9,
                                   None, span.context)

    def _llm_failed(self, event: Event) -> None:
        span = self._find_llm(event, pop=True)
        if span is None:
            self.events_unattached += 1
            return
        self._stamp(event, span)
        status, error_type = self._error(event.payload, "LLM call failed")
        self._end(span, event.time_ns, status, {sc.ERROR_TYPE: error_type})
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
        attributes.update(self._content.payload_attributes(payload, "agentbus.decision.", skip))
        self._add_event(span, sc.EV_DECISION, event, attributes)

    def _outcome(self, event: Event) -> None:
        span = self._target(event)
        if span is not None:
            self._add_event(span, sc.EV_OUTCOME, event,
                            self._content.payload_attributes(event.payload, "agentbus.outcome."))

    def _problem(self, event: Event) -> None:
        span = self._target(event)
        if span is not None:
            self._add_event(span, sc.EV_PROBLEM, event,
                            self._content.payload_attributes(event.payload, "agentbus.problem."))
