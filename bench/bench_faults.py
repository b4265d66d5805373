"""Publish latency when the collector is down, slow, or killed and restarted, against the
collector-up case.

One mirrored tool call (``agent.tool.call.started`` + ``completed`` inside an open run,
one ``execute_tool`` span) costs the publisher this much, exporting real OTLP/gRPC
through a BatchSpanProcessor to:

  up       the embedded receiver, as a subprocess (a collector that keeps up)
  down     a loopback port nothing listens on (connection refused)
  slow     an OTLP/gRPC endpoint that answers each export after 1.5 s
  restart  the receiver subprocess, killed (SIGKILL) after the first third of the calls
           and started again on the same port before the last third (the kill and the
           restart themselves are not timed: they happen between timed segments)

Rounds alternate between the cases; medians of the per-round time per call are reported.
``collector_*_vs_up`` is the case over up (lower is better; the target is <= 1.1: a
collector fault may not slow the agent by more than 10%).

    python bench/bench_faults.py [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

if __package__:
    from .common import REPO, free_port, script_main
else:  # run as a script: python bench/bench_faults.py
    from common import REPO, free_port, script_main

SLOW_SECONDS = 1.5


class ReceiverProcess:
    """``otel-agentbus receiver`` on a fixed gRPC port, so it can be killed and restarted."""

    def __init__(self, db: str, port: int) -> None:
        self.db = db
        self.port = port
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otel_agentbus.cli", "receiver", "--grpc",
             f"127.0.0.1:{self.port}", "--http", "127.0.0.1:0", "--db",
             self.db], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env)
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], 30)
        if not readable or not self.proc.stdout.readline():
            self.kill()
            raise RuntimeError("the receiver did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


class SlowCollector:
    """An OTLP/gRPC trace endpoint that answers each export after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        import grpc  # type: ignore[import-untyped]

        stop = threading.Event()
        self._stop = stop

        def export(body: bytes, context: Any) -> bytes:
            stop.wait(delay)
            return b""

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(
                export, request_deserializer=None, response_serializer=None)})
        self._server = grpc.server(ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        self.port = int(self._server.add_insecure_port("127.0.0.1:0"))
        self._server.start()

    def stop(self) -> None:
        self._stop.set()
        self._server.stop(grace=None).wait(10)


async def timed_round(endpoint: str, calls: int,
                      between: Callable[[int], None] | None = None) -> float:
    """Per tool call (µs), exporting to ``endpoint``; ``between(i)`` runs untimed after
    the first and the second third of the calls."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otel_agentbus import Event, EventBus, Scope, configure

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=2)))
    telemetry = configure(tracer_provider=provider, metrics_enabled=False, pending_spans=False,
                          shutdown_timeout=2.0, signal_handlers=False)
    bus = telemetry.attach(EventBus(history_size=0))
    scope = Scope(run_id="run-1", agent="bench", session_id="conv-1")
    await bus.publish(Event("agent.run.started", scope=scope))
    elapsed = 0.0
    segments = 3
    per_segment = calls // segments
    for segment in range(segments):
        start = time.perf_counter()
        for i in range(per_segment):
            await bus.publish(Event("agent.tool.call.started",
                                    {"tool_call_id": "call-1", "tool_name": "search"},
                                    scope=scope))
            await bus.publish(Event("agent.tool.call.completed",
                                    {"tool_call_id": "call-1", "tool_name": "search",
                                     "is_error": False}, scope=scope))
            if i % 256 == 0:
                await asyncio.sleep(0)  # an agent awaits now and then
        elapsed += time.perf_counter() - start
        if between is not None and segment < segments - 1:
            between(segment)
    await bus.publish(Event("agent.run.completed", scope=scope))
    await asyncio.to_thread(telemetry.shutdown, 2.0)
    return elapsed / (per_segment * segments) * 1e6


async def measure(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 7
    calls = 3_000 if quick else 15_000
    results: dict[str, list[float]] = {"up": [], "down": [], "slow": [], "restart": []}
    with tempfile.TemporaryDirectory() as folder:
        up = ReceiverProcess(f"{folder}/up.db", free_port())
        up.start()
        restart = ReceiverProcess(f"{folder}/restart.db", free_port())
        restart.start()
        slow = SlowCollector(SLOW_SECONDS)
        down_endpoint = f"http://127.0.0.1:{free_port()}"

        def kill_or_restart(segment: int) -> None:
            if segment == 0:
                restart.kill()
            else:
                restart.start()

        try:
            await timed_round(f"http://127.0.0.1:{up.port}", calls // 4)  # warm-up
            for _ in range(rounds):
                results["up"].append(await timed_round(f"http://127.0.0.1:{up.port}", calls))
                results["down"].append(await timed_round(down_endpoint, calls))
                results["slow"].append(await timed_round(
                    f"http://127.0.0.1:{slow.port}", calls))
                results["restart"].append(await timed_round(
                    f"http://127.0.0.1:{restart.port}", calls, kill_or_restart))
        finally:
            up.kill()
            restart.kill()
            slow.stop()
    medians = {case: statistics.median(values) for case, values in results.items()}
    return {
        "rounds": rounds,
        "calls_per_round": calls,
        **{f"collector_{case}_tool_call_us": round(value, 2) for case, value in medians.items()},
        **{f"collector_{case}_vs_up": round(medians[case] / medians["up"], 2)
           for case in ("down", "slow", "restart")},
    }


def print_table(figures: dict[str, Any]) -> None:
    print(f"{'per tool call, publisher thread (µs)':<44}{'time':>8}{'vs up':>8}")
    for case in ("up", "down", "slow", "restart"):
        ratio = "" if case == "up" else f"{figures[f'collector_{case}_vs_up']:>8}"
        print(f"{'collector ' + case:<44}{figures[f'collector_{case}_tool_call_us']:>8}{ratio}")
    print(f"medians of {figures['rounds']} rounds of {figures['calls_per_round']} calls, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} cores")


def main(argv: list[str] | None = None) -> int:
    return script_main("publish latency under collector faults", measure, print_table, argv)


if __name__ == "__main__":
    raise SystemExit(main())
