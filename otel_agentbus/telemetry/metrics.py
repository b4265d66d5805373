"""The metrics the mirror records: GenAI client metrics plus run, tool, decision and bus
counters. Recorded with the span's context, so exemplars link a latency bucket to the
trace that produced it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.trace import SpanContext
from opentelemetry.util.types import AttributeValue

from .. import semconv as sc
from ..events import Event

if TYPE_CHECKING:
    from ..bus import EventBus


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

    def run_ended(self, attributes: Mapping[str, AttributeValue], status: str, seconds: float,
                  span_context: SpanContext) -> None:
        labels = {sc.GEN_AI_AGENT_NAME: attributes.get(sc.GEN_AI_AGENT_NAME, ""),
                  sc.RUN_STATUS: status}
        context = _context(span_context)
        self.runs.add(1, labels, context=context)
        self.run_duration.record(seconds, labels, context=context)

    def tool_call(self, attributes: Mapping[str, AttributeValue], seconds: float,
                  error_type: str | None, span_context: SpanContext) -> None:
        labels: dict[str, AttributeValue] = {
            sc.GEN_AI_TOOL_NAME: attributes.get(sc.GEN_AI_TOOL_NAME, ""),
            sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
            "status": "error" if error_type else "ok",
        }
        if error_type:
            labels[sc.ERROR_TYPE] = error_type
        context = _context(span_context)
        self.tool_calls.add(1, labels, context=context)
        self.tool_duration.record(seconds, labels, context=context)

    def llm_call(self, attributes: Mapping[str, AttributeValue], seconds: float,
                 error_type: str | None, span_context: SpanContext) -> None:
        labels: dict[str, AttributeValue] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
            sc.GEN_AI_REQUEST_MODEL: attributes.get(sc.GEN_AI_REQUEST_MODEL, ""),
        }
        provider = attributes.get(sc.GEN_AI_PROVIDER_NAME)
        if provider:
            labels[sc.GEN_AI_PROVIDER_NAME] = provider
        if error_type:
            labels[sc.ERROR_TYPE] = error_type
        context = _context(span_context)
        self.operation_duration.record(seconds, labels, context=context)
        for key, token_type in ((sc.GEN_AI_USAGE_INPUT_TOKENS, "input"),
                                (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "output")):
            tokens = attributes.get(key)
            if isinstance(tokens, int):
                self.token_usage.record(tokens, {**labels, sc.GEN_AI_TOKEN_TYPE: token_type},
                                        context=context)

    def decision(self, event: Event, span_context: SpanContext | None) -> None:
        self.decisions.add(1, {sc.GEN_AI_AGENT_NAME: event.scope.agent or ""},
                           context=_context(span_context))

    def other_event(self, event: Event) -> None:
        kind = event.kind
        if kind == "agent.constraint.violated":
            self.violations.add(1, {sc.GEN_AI_AGENT_NAME: event.scope.agent or ""})
        elif kind == "agent.doom_loop.detected":
            self.doom_loops.add(1, {sc.GEN_AI_AGENT_NAME: event.scope.agent or ""})

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
