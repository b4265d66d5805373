"""Shared helpers of the telemetry tests (tests/test_telemetry_*.py)."""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util._once import Once

from otel_agentbus import EventBus, configure
from otel_agentbus.telemetry import Telemetry

REPO_ROOT = Path(__file__).resolve().parents[1]
PENDING = "agentbus.span.pending"


# ------------------------------------------------------------------ in-process harness
@dataclass
class Harness:
    """One configured telemetry: its own SDK provider exporting to memory, and a bus."""

    telemetry: Telemetry
    exporter: InMemorySpanExporter
    provider: TracerProvider
    bus: EventBus

    def spans(self, *, pending: bool = False) -> list[ReadableSpan]:
        """Finished spans; pending records only when asked for."""
        return [s for s in self.exporter.get_finished_spans()
                if pending or not (s.attributes or {}).get(PENDING)]

    def pending(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if (s.attributes or {}).get(PENDING)]

    def one(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return found[0]

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("the-app")


@dataclass
class HarnessFactory:
    made: list[Harness] = field(default_factory=list)

    def __call__(self, *, sampler: Sampler | None = None, **options: Any) -> Harness:
        provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        options.setdefault("metrics_enabled", False)
        telemetry = configure(tracer_provider=provider, **options)
        harness = Harness(telemetry, exporter, provider, telemetry.attach(EventBus()))
        self.made.append(harness)
        return harness

    async def close(self) -> None:
        for harness in self.made:
            if not harness.bus.closed:
                await harness.bus.close(drain=False, timeout=5)
            forget(harness.telemetry)
            harness.telemetry.shutdown(timeout=5)
            harness.provider.shutdown()


def forget(telemetry: Telemetry) -> None:
    """configure() registers an atexit shutdown; tests shut down themselves."""
    atexit.unregister(telemetry.shutdown)


@contextmanager
def fresh_global_tracer_provider() -> Iterator[None]:
    """Run with no global TracerProvider set (as in a fresh process), restore afterwards.

    The OpenTelemetry API lets a global be set once per process; its own test utilities
    reset these two module globals the same way.
    """
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    try:
        yield
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


def otlp_bytes(spans: Sequence[ReadableSpan]) -> bytes:
    """Exactly what an OTLP exporter would put on the wire for these spans."""
    return bytes(encode_spans(spans).SerializeToString())


def hex_span(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.span_id, "016x")


def hex_trace(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def all_events(spans: Iterable[ReadableSpan], name: str) -> list[Any]:
    return [e for s in spans for e in s.events if e.name == name]


# ------------------------------------------------------------------ subprocesses
def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this repository importable, no OTEL_* leaking in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OTEL_") and k != "OTEL_AGENTBUS_RECEIVER_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process is still there after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run_python(script: str, *args: str, timeout: float = 60,
               env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; it must print one JSON object last."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env or child_env(), cwd=cwd,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child process timed out after {timeout}s\nstdout:{out}\nstderr:{err}")
    finally:  # also when pytest-timeout interrupts us: never leave the child running
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}\n{out}"
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"child printed nothing; stderr:\n{err}"
    result: dict[str, Any] = json.loads(lines[-1])
    result["_stderr"] = err
    return result


@dataclass
class Receiver:
    proc: subprocess.Popen[str]
    ready: dict[str, str]
    db: Path

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.ready['grpc']}"

    def stop(self) -> None:
        terminate(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_receiver(tmp: Path, *, grpc_port: int = 0, http_port: int = 0,
                   db: Path | None = None, extra: Sequence[str] = (),
                   env: dict[str, str] | None = None, umask: int = -1,
                   stderr_name: str = "receiver.stderr",
                   ready_timeout: float = 20) -> Receiver:
    """``otel-agentbus receiver`` as a subprocess, on the given loopback ports (0: free
    ones); fails the test unless it reports ready within ``ready_timeout`` seconds."""
    db = db or tmp / "agentbus.db"
    stderr_path = tmp / stderr_name
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_agentbus.cli", "receiver",
             "--grpc", f"127.0.0.1:{grpc_port}", "--http", f"127.0.0.1:{http_port}",
             "--db", str(db), *extra],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env or child_env(),
            umask=umask,
        )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], ready_timeout)
    line = proc.stdout.readline() if readable else ""
    if not line:
        proc.kill()
        proc.wait(timeout=5)
        pytest.fail(f"receiver did not report ready: {stderr_path.read_text()}")
    return Receiver(proc, json.loads(line), db)


def context(span_id: int = 2, remote: bool = False, state: TraceState | None = None) -> SpanContext:
    """A sampled span context in a fixed trace, for spans built by hand."""
    return SpanContext(0x1234, span_id, remote, TraceFlags(TraceFlags.SAMPLED), state)


def span(**fields: Any) -> ReadableSpan:
    """A finished SDK span with the given fields (name, context and times default)."""
    defaults: dict[str, Any] = {"name": "s", "context": context(), "start_time": 10,
                                "end_time": 20}
    return ReadableSpan(**{**defaults, **fields})


def proto_kv(key: str, value: Any) -> KeyValue:
    """An OTLP attribute, for requests built by hand."""
    return KeyValue(key=key, value=proto_value(value))


def proto_value(value: Any) -> AnyValue:
    """A Python value as an OTLP ``AnyValue`` (bool, int, float, bytes, list, dict, str)."""
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[proto_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(
            values=[proto_kv(k, v) for k, v in value.items()]))
    return AnyValue(string_value=value)
