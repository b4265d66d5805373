"""End to end: the receiver CLI as a subprocess, fed by the real OpenTelemetry SDK exporters."""

from __future__ import annotations

import http.client
import inspect
import json
import os
import select
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from otel_agentbus.receiver import get_trace, list_runs, log_records, metric_points

pytestmark = pytest.mark.timeout(60)

REPO_ROOT = Path(__file__).resolve().parents[1]
TRACE_SERVICE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("OTEL_AGENTBUS_RECEIVER_TOKEN", None)
    env.update(extra)
    return env


@dataclass
class ReceiverProcess:
    proc: subprocess.Popen[str]
    ready: dict[str, str]
    db: Path
    stderr_path: Path

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.ready['grpc']}"

    @property
    def http_base(self) -> str:
        return f"http://{self.ready['http']}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def _start(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> ReceiverProcess:
    db = tmp / "agentbus.db"
    stderr_path = tmp / "receiver.stderr"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_agentbus.cli", "receiver", "--grpc", "127.0.0.1:0",
             "--http", "127.0.0.1:0", "--db", str(db), *extra],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env or _env(),
        )  # fmt: skip
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 20)
    if not readable:
        proc.kill()
        proc.wait()
        pytest.fail(f"receiver did not report ready: {stderr_path.read_text()}")
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=5)
        pytest.fail(f"receiver exited ({proc.returncode}): {stderr_path.read_text()}")
    return ReceiverProcess(proc, json.loads(line), db, stderr_path)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    rp = _start(tmp_path_factory.mktemp("receiver"))
    try:
        yield rp
    finally:
        if rp.proc.poll() is None:
            rp.proc.kill()
        rp.proc.wait(timeout=10)
        if rp.proc.stdout is not None:
            rp.proc.stdout.close()


def _stub(channel: Any) -> Any:
    return trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_agentbus.cli", *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=30,
    )


def _tracer_provider(exporter: SpanExporter, service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _run_shaped_trace(provider: TracerProvider) -> tuple[str, str, str]:
    """invoke_agent planner (failed, ERROR) -> execute_tool search (+ decision event)."""
    tracer = provider.get_tracer("agentbus-test")
    with tracer.start_as_current_span(
        "invoke_agent planner",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "planner",
            "agentbus.run.id": "r1",
            "agentbus.run.status": "failed",
        },
    ) as root:
        with tracer.start_as_current_span(
            "execute_tool search",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
        ) as child:
            child.add_event(
                "agentbus.decision", {"choice": "search", "candidates": ["search", "answer"]}
            )
        root.set_status(Status(StatusCode.ERROR, "tool budget exhausted"))
    ctx = root.get_span_context()
    return (
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(child.get_span_context().span_id, "016x"),
    )


# ---- tests --------------------------------------------------------------------------


def test_ready_line_and_private_db(receiver: ReceiverProcess) -> None:
    assert set(receiver.ready) == {"grpc", "http", "web", "db"}
    for key in ("grpc", "http"):
        host, port = receiver.ready[key].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
    assert receiver.ready["web"] == f"http://{receiver.ready['http']}"  # the web view
    assert Path(receiver.ready["db"]) == receiver.db
    assert stat.S_IMODE(receiver.db.stat().st_mode) == 0o600


def test_run_shaped_trace_over_grpc(receiver: ReceiverProcess) -> None:
    provider = _tracer_provider(
        GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5), "planner-svc"
    )
    trace_id, root_id, child_id = _run_shaped_trace(provider)
    provider.shutdown()

    runs = [r for r in list_runs(receiver.db) if r.trace_id == trace_id]
    assert len(runs) == 1
    run = runs[0]
    assert (run.run_id, run.agent, run.status, run.span_count) == ("r1", "planner", "failed", 2)
    assert run.span_id == root_id and run.service_name == "planner-svc"
    assert run.duration_s is not None and run.duration_s > 0

    tree = get_trace(receiver.db, trace_id)
    assert [n.span.span_id for n in tree.roots] == [root_id]
    root = tree.roots[0]
    assert root.span.status_code == "ERROR"
    assert root.span.status_message == "tool budget exhausted"
    assert root.span.attributes["agentbus.run.id"] == "r1"
    assert [c.span.span_id for c in root.children] == [child_id]
    child = root.children[0].span
    assert child.name == "execute_tool search" and child.parent_span_id == root_id
    assert child.attributes["gen_ai.tool.name"] == "search"
    assert len(child.events) == 1
    event = child.events[0]
    assert event.name == "agentbus.decision"
    assert event.attributes == {"choice": "search", "candidates": ["search", "answer"]}
    assert child.start_ns <= event.time_ns <= child.end_ns

    # The same data through the CLI, as a separate process.
    runs_out = _cli("runs", "--db", str(receiver.db), "--json")
    assert runs_out.returncode == 0, runs_out.stderr
    cli_runs = [r for r in json.loads(runs_out.stdout)["runs"] if r["trace_id"] == trace_id]
    assert len(cli_runs) == 1
    assert {k: cli_runs[0][k] for k in ("run_id", "agent", "status", "span_count")} == {
        "run_id": "r1",
        "agent": "planner",
        "status": "failed",
        "span_count": 2,
    }
    assert cli_runs[0]["duration_s"] > 0 and cli_runs[0]["start"].startswith("20")

    trace_out = _cli("trace", trace_id, "--db", str(receiver.db), "--json")
    assert trace_out.returncode == 0, trace_out.stderr
    data = json.loads(trace_out.stdout)
    assert data["trace_id"] == trace_id and data["span_count"] == 2
    (json_root,) = data["roots"]
    assert json_root["name"] == "invoke_agent planner" and json_root["status_code"] == "ERROR"
    (json_child,) = json_root["children"]
    assert json_child["events"][0]["name"] == "agentbus.decision"
    assert json_child["events"][0]["attributes"]["choice"] == "search"

    text = _cli("trace", trace_id.upper(), "--db", str(receiver.db))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    root_line = next(i for i, ln in enumerate(lines) if ln.startswith("invoke_agent planner"))
    assert "ERROR: tool budget exhausted" in lines[root_line] and " ms" in lines[root_line]
    child_line = next(i for i, ln in enumerate(lines) if "execute_tool search" in ln)
    assert lines[child_line].startswith("  execute_tool search") and child_line > root_line
    assert any(ln.startswith("      * agentbus.decision") and "choice=search" in ln for ln in lines)


def test_spans_over_http_exporter(receiver: ReceiverProcess) -> None:
    provider = _tracer_provider(
        HttpSpanExporter(endpoint=f"{receiver.http_base}/v1/traces", timeout=5), "http-svc"
    )
    tracer = provider.get_tracer("agentbus-test")
    with (
        tracer.start_as_current_span(
            "invoke_agent writer",
            attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer"},
        ) as root,
        tracer.start_as_current_span("chat gpt") as chat,
    ):
        chat.set_attribute("gen_ai.usage.input_tokens", 42)
    provider.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")
    root_id = format(root.get_span_context().span_id, "016x")

    (run,) = [r for r in list_runs(receiver.db) if r.trace_id == trace_id]
    # No agentbus.run.id / run.status: fall back to the span id and the span status.
    assert (run.run_id, run.agent, run.status, run.span_count) == (
        root_id,
        "writer",
        "completed",
        2,
    )
    tree = get_trace(receiver.db, trace_id)
    assert tree.named("chat gpt")[0].attributes["gen_ai.usage.input_tokens"] == 42
    assert tree.named("chat gpt")[0].service_name == "http-svc"


def test_metrics_over_grpc(receiver: ReceiverProcess) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5),
        export_interval_millis=600_000,
    )
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "metrics-svc"})
    )
    try:
        meter = provider.get_meter("agentbus-test")
        counter = meter.create_counter("e2e.events", unit="1", description="events seen")
        counter.add(2, {"kind": "a"})
        counter.add(3, {"kind": "a"})
        counter.add(1, {"kind": "b"})
        histogram = meter.create_histogram("e2e.latency", unit="ms")
        for value in (1.0, 7.0, 300.0):
            histogram.record(value)
        assert provider.force_flush(timeout_millis=10_000)

        points = metric_points(receiver.db, "e2e.events")
        by_kind = {p.attributes["kind"]: p for p in points}
        assert len(points) == 2
        assert by_kind["a"].value == 5 and by_kind["b"].value == 1
        assert by_kind["a"].type == "sum" and by_kind["a"].is_monotonic is True
        assert by_kind["a"].temporality == "cumulative"
        assert by_kind["a"].description == "events seen"
        assert by_kind["a"].service_name == "metrics-svc"

        (hist,) = metric_points(receiver.db, "e2e.latency")
        assert hist.type == "histogram" and hist.value is None and hist.histogram is not None
        assert hist.unit == "ms"
        assert hist.histogram["count"] == 3 and hist.histogram["sum"] == pytest.approx(308.0)
        assert hist.histogram["min"] == 1.0 and hist.histogram["max"] == 300.0
        bounds = hist.histogram["explicit_bounds"]
        assert len(hist.histogram["bucket_counts"]) == len(bounds) + 1
        assert sum(hist.histogram["bucket_counts"]) == 3
    finally:
        provider.shutdown()


def test_logs_over_grpc(receiver: ReceiverProcess) -> None:
    logger_provider = LoggerProvider(resource=Resource.create({"service.name": "logs-svc"}))
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(
            OTLPLogExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=5)
        )
    )
    tracer_provider = TracerProvider()
    span = tracer_provider.get_tracer("t").start_span("with-log")
    logger = logger_provider.get_logger("agentbus-test")
    from opentelemetry._logs import SeverityNumber

    if "body" not in inspect.signature(logger.emit).parameters:
        pytest.skip("this SDK's Logger.emit takes a LogRecord only (no keyword form)")

    logger.emit(
        body={"message": "tool failed", "retries": 2},
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        attributes={"tool": "search"},
        context=set_span_in_context(span),
    )
    span.end()
    logger_provider.shutdown()
    trace_id = format(span.get_span_context().trace_id, "032x")

    (record,) = log_records(receiver.db, trace_id=trace_id)
    assert record.body == {"message": "tool failed", "retries": 2}
    assert record.severity_number == SeverityNumber.WARN.value
    assert record.severity_text == "WARN"
    assert record.attributes["tool"] == "search"
    assert record.span_id == format(span.get_span_context().span_id, "016x")
    assert record.service_name == "logs-svc"


def test_grpc_garbage_is_invalid_argument_and_server_keeps_serving(
    receiver: ReceiverProcess,
) -> None:
    with grpc.insecure_channel(receiver.ready["grpc"]) as channel:
        raw = channel.unary_unary(TRACE_SERVICE_EXPORT)
        with pytest.raises(grpc.RpcError) as info:
            raw(b"\xff\xff\xff not protobuf", timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stub = _stub(channel)
        response = stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=5)
        assert not response.HasField("partial_success")


def test_cli_errors_exit_2(receiver: ReceiverProcess, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    out = _cli("runs", "--db", str(missing))
    assert out.returncode == 2
    assert str(missing) in out.stderr and "not found" in out.stderr
    assert not missing.exists()

    unknown = "0123456789abcdef0123456789abcdef"
    out = _cli("trace", unknown, "--db", str(receiver.db))
    assert out.returncode == 2 and unknown in out.stderr


def test_token_required_and_clean_sigterm(tmp_path: Path) -> None:
    token = "s3cret-token"
    rp = _start(tmp_path, env=_env(OTEL_AGENTBUS_RECEIVER_TOKEN=token))
    try:
        # HTTP: no token / wrong token -> 401; right token -> 200.
        host, port = rp.ready["http"].rsplit(":", 1)
        body = trace_service_pb2.ExportTraceServiceRequest().SerializeToString()
        statuses: list[int] = []
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {token}"}):
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request(
                "POST",
                "/v1/traces",
                body=body,
                headers={"Content-Type": "application/x-protobuf", **headers},
            )
            statuses.append(conn.getresponse().status)
            conn.close()
        assert statuses == [401, 401, 200]

        # gRPC: no metadata -> UNAUTHENTICATED; exporter with the header succeeds.
        with grpc.insecure_channel(rp.ready["grpc"]) as channel:
            stub = _stub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        provider = _tracer_provider(
            GrpcSpanExporter(
                endpoint=rp.grpc_endpoint,
                insecure=True,
                timeout=5,
                headers={"authorization": f"Bearer {token}"},
            ),
            "auth-svc",
        )
        trace_id, _, _ = _run_shaped_trace(provider)
        provider.shutdown()
    finally:
        returncode = rp.stop()
        if rp.proc.stdout is not None:
            rp.proc.stdout.close()
    assert returncode == 0, rp.stderr_path.read_text()
    assert "stopped" in rp.stderr_path.read_text()
    # Readable after a clean shutdown, with everything that was accepted.
    assert len(get_trace(rp.db, trace_id).spans) == 2
    assert stat.S_IMODE(rp.db.stat().st_mode) == 0o600
