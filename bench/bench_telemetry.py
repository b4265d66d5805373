"""Cost of one mirrored tool call on the publisher's thread, against the bare OpenTelemetry SDK.

Ours: build and publish ``agent.tool.call.started`` and ``agent.tool.call.completed`` on a
bus with the mirror attached (inside an open run), which yields one ``execute_tool`` span.
SDK: ``tracer.start_span`` with the same attributes, then ``end()``. Both sides hand their
spans to a BatchSpanProcessor with a no-op exporter, in the same process; rounds alternate;
medians are reported. ``mirror_vs_sdk_span`` is ours over the SDK, time per call (lower is
better; the target is <= 1.0).

    python bench/bench_telemetry.py [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_agentbus import Event, EventBus, Scope, configure

if __package__:
    from .common import batch_processor, free_port, null_exporter, script_main
else:  # run as a script: python bench/bench_telemetry.py
    from common import batch_processor, free_port, null_exporter, script_main


ATTRIBUTES = {
    "gen_ai.operation.name": "execute_tool",
    "gen_ai.tool.name": "search",
    "gen_ai.tool.type": "function",
    "gen_ai.tool.call.id": "call-1",
    "agentbus.run.id": "run-1",
    "gen_ai.conversation.id": "conv-1",
}


def sdk_round(calls: int) -> float:
    provider = TracerProvider()
    provider.add_span_processor(batch_processor(null_exporter()))
    tracer = provider.get_tracer("bench")
    start = time.perf_counter()
    for _ in range(calls):
        span = tracer.start_span("execute_tool search", attributes=ATTRIBUTES)
        span.end()
    elapsed = time.perf_counter() - start
    provider.shutdown()
    return elapsed / calls * 1e6


async def ours_round(calls: int, metrics: bool) -> float:
    provider = TracerProvider()
    provider.add_span_processor(batch_processor(null_exporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()]) if metrics else None
    telemetry = configure(tracer_provider=provider, meter_provider=meter_provider,
                          metrics_enabled=metrics, pending_spans=False)
    bus = telemetry.attach(EventBus(history_size=0))
    scope = Scope(run_id="run-1", agent="bench", session_id="conv-1")
    await bus.publish(Event("agent.run.started", scope=scope))
    publish = bus.publish
    start = time.perf_counter()
    for _ in range(calls):
        await publish(Event("agent.tool.call.started",
                            {"tool_call_id": "call-1", "tool_name": "search"}, scope=scope))
        await publish(Event("agent.tool.call.completed",
                            {"tool_call_id": "call-1", "tool_name": "search",
                             "is_error": False}, scope=scope))
    elapsed = time.perf_counter() - start
    await bus.publish(Event("agent.run.completed", scope=scope))
    telemetry.shutdown()
    provider.shutdown()
    if meter_provider is not None:
        meter_provider.shutdown()
    return elapsed / calls * 1e6


async def otlp_round(calls: int, endpoint: str) -> float:
    """Per tool call, exporting over real OTLP/gRPC to ``endpoint`` (up or refusing)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=2)))
    telemetry = configure(tracer_provider=provider, metrics_enabled=False, pending_spans=False,
                          shutdown_timeout=2.0)
    bus = telemetry.attach(EventBus(history_size=0))
    scope = Scope(run_id="run-1", agent="bench", session_id="conv-1")
    await bus.publish(Event("agent.run.started", scope=scope))
    start = time.perf_counter()
    for _ in range(calls):
        await bus.publish(Event("agent.tool.call.started",
                                {"tool_call_id": "call-1", "tool_name": "search"}, scope=scope))
        await bus.publish(Event("agent.tool.call.completed",
                                {"tool_call_id": "call-1", "tool_name": "search",
                                 "is_error": False}, scope=scope))
        if _ % 256 == 0:
            await asyncio.sleep(0)  # an agent awaits now and then; let the loop breathe
    elapsed = time.perf_counter() - start
    await bus.publish(Event("agent.run.completed", scope=scope))
    telemetry.shutdown(timeout=2.0)
    return elapsed / calls * 1e6


async def collector_figures(rounds: int, calls: int) -> dict[str, Any]:
    """Publish cost with the collector up (the embedded receiver) and refusing connections."""
    import tempfile

    from otel_agentbus.receiver import Receiver

    with tempfile.TemporaryDirectory() as folder:
        receiver = Receiver(f"{folder}/bench.db").start()
        try:
            up_endpoint = receiver.grpc_endpoint
            down_endpoint = f"http://127.0.0.1:{free_port()}"
            up: list[float] = []
            down: list[float] = []
            for _ in range(rounds):
                up.append(await otlp_round(calls, up_endpoint))
                down.append(await otlp_round(calls, down_endpoint))
        finally:
            receiver.stop()
    up_us, down_us = statistics.median(up), statistics.median(down)
    return {
        "collector_up_tool_call_us": round(up_us, 2),
        "collector_down_tool_call_us": round(down_us, 2),
        "collector_down_vs_up": round(down_us / up_us, 2),
    }


async def measure(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 7
    calls = 2_000 if quick else 20_000
    sdk_round(calls // 4)  # warm-up
    await ours_round(calls // 4, True)
    sdk: list[float] = []
    ours: list[float] = []
    ours_no_metrics: list[float] = []
    for _ in range(rounds):
        sdk.append(sdk_round(calls))
        ours.append(await ours_round(calls, True))
        ours_no_metrics.append(await ours_round(calls, False))
    sdk_us = statistics.median(sdk)
    ours_us = statistics.median(ours)
    bare_us = statistics.median(ours_no_metrics)
    collector = await collector_figures(rounds, calls // 2)
    return {
        **collector,
        "rounds": rounds,
        "calls_per_round": calls,
        "sdk_span_us": round(sdk_us, 2),
        "mirror_tool_call_us": round(ours_us, 2),
        "mirror_tool_call_no_metrics_us": round(bare_us, 2),
        "mirror_vs_sdk_span": round(ours_us / sdk_us, 2),
        "mirror_no_metrics_vs_sdk_span": round(bare_us / sdk_us, 2),
    }


def print_table(figures: dict[str, Any]) -> None:
    print(f"{'per tool call, publisher thread':<52}{'µs':>8}")
    print(f"{'bare SDK span (start_span + end)':<52}{figures['sdk_span_us']:>8}")
    print(f"{'otel-agentbus: 2 events + mirrored span + metrics':<52}"
          f"{figures['mirror_tool_call_us']:>8}")
    print(f"{'otel-agentbus: 2 events + mirrored span':<52}"
          f"{figures['mirror_tool_call_no_metrics_us']:>8}")
    print(f"{'collector up (real OTLP/gRPC to the embedded receiver)':<52}"
          f"{figures['collector_up_tool_call_us']:>8}")
    print(f"{'collector refusing connections':<52}{figures['collector_down_tool_call_us']:>8}")
    print(f"collector_down_vs_up = {figures['collector_down_vs_up']}")
    print(f"mirror_vs_sdk_span = {figures['mirror_vs_sdk_span']} "
          f"(without metrics {figures['mirror_no_metrics_vs_sdk_span']}); medians of "
          f"{figures['rounds']} rounds, Python {sys.version.split()[0]}, {os.cpu_count()} cores")


def main(argv: list[str] | None = None) -> int:
    return script_main("mirrored tool call vs bare SDK span", measure, print_table, argv)


if __name__ == "__main__":
    raise SystemExit(main())
