"""The metrics the mirror records: GenAI client metrics plus run, tool, decision and bus
counters. Recorded with the span's context, so exemplars link a latency bucket to the
trace that produced it.

The SDK spends 10-20 µs on each measurement (attribute cleaning, hashing, locks), which would
make one mirrored tool call cost more than a span. So the publisher only appends the
measurement to a bounded deque (a fraction of a microsecond); a callback of an observable
instrument replays them into the SDK instruments when the metric reader collects, on the
reader's thread. ``drain()`` does the same before a flush.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..events import Event
from ..kinds import CONSTRAINT_VIOLATED, DOOM_LOOP_DETECTED

if TYPE_CHECKING:
    from ..bus import EventBus


MAX_PENDING: Final = 100_000
"""Measurements waiting for the next collection; past it they are dropped and counted."""
_MAX_CACHED_LABELS: Final = 4096
"""Label sets kept for reuse (a dict per tool call otherwise); past it they are built anew."""


def _context(span_context: SpanContext | None) -> Any:
    if span_context is None:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context))


class MirrorMetrics:
    """Instruments created once per meter; the mirror calls one method per finished thing."""

    def __init__(self, meter: Meter) -> None:
        self.operation_duration = meter.create_histogram(
            sc.METRIC_OPERATION_DURATION, unit="s",
            description="Duration of GenAI client operations (LLM calls).",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        self.token_usage = meter.create_histogram(
            sc.METRIC_TOKEN_USAGE, unit="{token}",
            description="Tokens used per LLM call, by gen_ai.token.type.",
            explicit_bucket_boundaries_advisory=[float(b) for b in sc.TOKEN_BUCKETS],
        )
        self.runs = meter.create_counter(
            sc.METRIC_RUNS, unit="{run}", description="Agent runs ended, by agent and status.")
        self.run_duration = meter.create_histogram(
            sc.METRIC_RUN_DURATION, unit="s", description="Agent run duration.",
            explicit_bucket_boundaries_advisory=[0.1 * 2**i for i in range(13)],
        )
        self.tool_calls = meter.create_counter(
            sc.METRIC_TOOL_CALLS, unit="{call}", description="Tool calls, by tool and status.")
        self.tool_duration = meter.create_histogram(
            sc.METRIC_TOOL_DURATION, unit="s", description="Tool call duration.",
            explicit_bucket_boundaries_advisory=list(sc.DURATION_BUCKETS),
        )
        self.decisions = meter.create_counter(
            sc.METRIC_DECISIONS, unit="{decision}", description="Decisions recorded.")
        self.violations = meter.create_counter(
            sc.METRIC_VIOLATIONS, unit="{violation}", description="Constraint violations.")
        self.doom_loops = meter.create_counter(
            sc.METRIC_DOOM_LOOPS, unit="{loop}", description="Doom loops detected.")
        self._meter = meter
        self._tool_labels: dict[tuple[AttributeValue, AttributeValue, str | None],
                                dict[str, AttributeValue]] = {}
        self._pending: deque[tuple[Any, float, Mapping[str, AttributeValue],
                                   SpanContext | None]] = deque()
        self.dropped = 0
        self.recorded = 0
        meter.create_observable_counter(
            sc.METRIC_MEASUREMENTS_DROPPED, [self._replay], unit="{measurement}",
            description="Measurements dropped because too many waited for collection.")

    def _add(self, instrument: Any, value: float, labels: Mapping[str, AttributeValue],
             span_context: SpanContext | None) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append((instrument, value, labels, span_context))

    def drain(self) -> int:
        """Record every waiting measurement into the SDK instruments; returns how many."""
        pending = self._pending
        count = 0
        while pending:
            try:
                instrument, value, labels, span_context = pending.popleft()
            except IndexError:
                break
            context = _context(span_context)
            if hasattr(instrument, "add"):
                instrument.add(value, labels, context=context)
            else:
                instrument.record(value, labels, context=context)
            count += 1
        self.recorded += count
        return count

    def _replay(self, options: CallbackOptions) -> Iterable[Observation]:
        self.drain()
        yield Observation(self.dropped)

    def run_ended(self, attributes: Mapping[str, AttributeValue], status: str, seconds: float,
                  span_context: SpanContext) -> None:
        labels = {sc.GEN_AI_AGENT_NAME: attributes.get(sc.GEN_AI_AGENT_NAME, ""),
                  sc.RUN_STATUS: status}
        self._add(self.runs, 1, labels, span_context)
        self._add(self.run_duration, seconds, labels, span_context)

    def tool_call(self, attributes: Mapping[str, AttributeValue], seconds: float,
                  error_type: str | None, span_context: SpanContext) -> None:
        key = (attributes.get(sc.GEN_AI_AGENT_NAME, ""), attributes.get(sc.GEN_AI_TOOL_NAME, ""),
               error_type)
        labels = self._tool_labels.get(key)
        if labels is None:
            labels = {
                sc.GEN_AI_AGENT_NAME: key[0],
                sc.GEN_AI_TOOL_NAME: key[1],
                sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                "status": "error" if error_type else "ok",
            }
            if error_type:
                labels[sc.ERROR_TYPE] = error_type
            if len(self._tool_labels) < _MAX_CACHED_LABELS:
                self._tool_labels[key] = labels
        self._add(self.tool_calls, 1, labels, span_context)
        self._add(self.tool_duration, seconds, labels, span_context)

    def llm_call(self, attributes: Mapping[str, AttributeValue], seconds: float,
                 error_type: str | None, span_context: SpanContext) -> None:
        labels: dict[str, AttributeValue] = {
            sc.GEN_AI_AGENT_NAME: attributes.get(sc.GEN_AI_AGENT_NAME, ""),
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.GEN_AI_REQUEST_MODEL: attributes.get(sc.GEN_AI_REQUEST_MODEL, ""),
        }
        provider = attributes.get(sc.GEN_AI_PROVIDER_NAME)
        if provider:
            labels[sc.GEN_AI_PROVIDER_NAME] = provider
        if error_type:
            labels[sc.ERROR_TYPE] = error_type
        self._add(self.operation_duration, seconds, labels, span_context)
        for key, token_type in ((sc.GEN_AI_USAGE_INPUT_TOKENS, "input"),
                                (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "output")):
            tokens = attributes.get(key)
            if isinstance(tokens, int):
                self._add(self.token_usage, tokens,
                          {**labels, sc.GEN_AI_TOKEN_TYPE: token_type}, span_context)

    def decision(self, event: Event, span_context: SpanContext | None) -> None:
        self._add(self.decisions, 1, {sc.GEN_AI_AGENT_NAME: event.scope.agent or ""},
                  span_context)

    def other_event(self, event: Event) -> None:
        kind = event.kind
        if kind == CONSTRAINT_VIOLATED:
            self._add(self.violations, 1, {sc.GEN_AI_AGENT_NAME: event.scope.agent or ""}, None)
        elif kind == DOOM_LOOP_DETECTED:
            self._add(self.doom_loops, 1, {sc.GEN_AI_AGENT_NAME: event.scope.agent or ""}, None)

    def observe_export(self, counts: Callable[[], tuple[int, ...]]) -> None:
        """Spans exported, failed and (a third count, if given) dropped by a full queue,
        read from the counting exporter at collection."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            for outcome, count in zip(("exported", "failed", "dropped"), counts(),
                                      strict=False):
                yield Observation(count, {"outcome": outcome})

        self._meter.create_observable_counter(
            sc.METRIC_EXPORT_SPANS, [callback], unit="{span}",
            description="Spans sent to the backend, by outcome.")

    def observe_bus(self, bus: EventBus, name: str = "default") -> None:
        """Bus counters and subscriber queue depth, read from ``bus.stats()`` at collection."""
        labels = {"agentbus.bus": name}

        def counter(field: str) -> Any:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                yield Observation(getattr(bus.stats(), field), labels)
            return callback

        meter = self._meter
        meter.create_observable_counter(sc.METRIC_BUS_PUBLISHED, [counter("published")],
                                        unit="{event}", description="Events published.")
        meter.create_observable_counter(sc.METRIC_BUS_DROPPED, [counter("dropped")],
                                        unit="{event}",
                                        description="Events dropped by backpressure.")
        meter.create_observable_counter(sc.METRIC_BUS_FAILED, [counter("failed")],
                                        unit="{event}", description="Handler failures.")

        def depth(options: CallbackOptions) -> Iterable[Observation]:
            for sub in bus.stats().subscriber_stats:
                yield Observation(sub.queued, {**labels, "agentbus.subscriber": sub.name})

        meter.create_observable_gauge(sc.METRIC_QUEUE_DEPTH, [depth], unit="{event}",
                                      description="Events waiting in each subscriber queue.")
