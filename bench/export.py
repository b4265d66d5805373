"""Export throughput: a burst of tool-call spans into the embedded receiver over real gRPC.

One fresh interpreter per round (``python -m bench.export --spans N``): it starts the
embedded receiver (``Receiver(db).start()``) on a loopback port, calls ``configure()``
with nothing but the endpoint (default settings: batch processor, queue, metrics), opens a
run and publishes ``N`` tool calls as fast as an agent can (yielding to the loop every
256), then flushes and counts the rows in the receiver's SQLite file.

``lost`` is spans the mirror emitted minus rows stored. ``spans_per_s`` is rows stored over
the time from the first publish until the span flush returned.

``--protocol http/protobuf`` exports over OTLP/HTTP instead; ``--pipeline stock`` gives the
mirror a TracerProvider with the SDK's stock ``BatchSpanProcessor`` and ``OTLPSpanExporter``
(default settings) instead of ours, for the same burst into the same receiver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import tempfile
import time
from typing import Any


class ReceiverProcess:
    """The same receiver as a process of its own (``otel-agentbus receiver``), as a
    collector would run: it does not share the agent's GIL."""

    def __init__(self, database: str) -> None:
        import subprocess
        import sys

        self.process = subprocess.Popen(
            [*os.environ.get("BENCH_RECEIVER_PREFIX", "").split(),
             sys.executable, "-m", "otel_agentbus.cli", "receiver", "--db", database,
             "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        ready = json.loads(line)
        self.grpc_endpoint = "http://" + ready["grpc"]
        self.http_endpoint = "http://" + ready["http"]

    def stop(self) -> None:
        import signal

        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)


def stock_provider(endpoint: str, protocol: str) -> Any:
    """A TracerProvider exporting through the SDK's stock batch processor and exporter."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HTTPSpanExporter,
        )

        exporter = HTTPSpanExporter(endpoint=f"{endpoint}/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


async def burst(spans: int, separate: bool, protocol: str = "grpc",
                pipeline: str = "ours") -> dict[str, Any]:
    from otel_agentbus import Event, EventBus, Scope, configure
    from otel_agentbus.receiver import Receiver

    with tempfile.TemporaryDirectory() as folder:
        database = f"{folder}/export.db"
        receiver: Any = ReceiverProcess(database) if separate else Receiver(database).start()
        try:
            endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
            if pipeline == "stock":
                telemetry = configure(tracer_provider=stock_provider(endpoint, protocol),
                                      metrics_enabled=False, shutdown_timeout=120.0)
            else:
                telemetry = configure(endpoint=endpoint, protocol=protocol,  # type: ignore[arg-type]
                                      service_name="bench", shutdown_timeout=120.0)
            bus = telemetry.attach(EventBus())
            scope = Scope(run_id="run-1", agent="bench")
            publish = bus.publish_nowait
            start = time.perf_counter()
            publish(Event("agent.run.started", scope=scope))
            for index in range(spans):
                call_id = f"call-{index}"
                publish(Event("agent.tool.call.started",
                              {"tool_call_id": call_id, "tool_name": "search"}, scope=scope))
                publish(Event("agent.tool.call.completed",
                              {"tool_call_id": call_id, "tool_name": "search",
                               "is_error": False}, scope=scope))
                if index % 256 == 255:
                    await asyncio.sleep(0)
            publish(Event("agent.run.completed", scope=scope))
            published = time.perf_counter()
            # The spans' flush (the batch processor's queue, exported in this thread) is
            # what the figure times; telemetry.force_flush then flushes the metrics too.
            telemetry.tracer_provider.force_flush(120_000)
            flushed = time.perf_counter()
            telemetry.force_flush(timeout=120.0)
            emitted = telemetry.mirror.spans_emitted
            stats = telemetry.export_stats()
            telemetry.shutdown(timeout=30.0)
        finally:
            receiver.stop()
        with sqlite3.connect(database) as connection:
            stored = connection.execute("SELECT count(*) FROM spans").fetchone()[0]
    elapsed = flushed - start
    return {
        "spans_emitted": emitted,
        "spans_stored": stored,
        "lost": emitted - stored,
        "publish_s": round(published - start, 3),
        "flush_s": round(flushed - published, 3),
        "spans_per_s": round(stored / elapsed),
        "spans_exported": stats["spans_exported"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--receiver", choices=("thread", "process"), default="thread",
                        help="the receiver in this process (default) or in its own")
    parser.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    parser.add_argument("--pipeline", choices=("ours", "stock"), default="ours",
                        help="configure()'s export pipeline, or the SDK's stock one")
    args = parser.parse_args(argv)
    result = asyncio.run(burst(args.spans, args.receiver == "process", args.protocol,
                               args.pipeline))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
