"""``configure()``: global providers, exporter resolution, bounded flush and shutdown.

Tests that let ``configure()`` build its own providers run with no global TracerProvider
set (``fresh_global_tracer_provider``), as in a fresh process, and restore it afterwards;
one test checks the same in a real fresh interpreter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from telemetry_helpers import forget, fresh_global_tracer_provider, run_python

from otel_agentbus import Event, EventBus, Scope
from otel_agentbus import semconv as sc
from otel_agentbus.telemetry import ConfigurationError, Telemetry, configure

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


class Owned:
    """configure() with providers of its own, shut down (bounded) after the test."""

    def __init__(self) -> None:
        self.made: list[Telemetry] = []

    def __call__(self, **options: Any) -> Telemetry:
        telemetry = configure(**options)
        forget(telemetry)
        self.made.append(telemetry)
        return telemetry


@pytest.fixture
def owned() -> Iterator[Owned]:
    factory = Owned()
    with fresh_global_tracer_provider():
        yield factory
        for telemetry in factory.made:
            telemetry.shutdown(timeout=3)


async def one_run(telemetry: Telemetry) -> EventBus:
    bus = telemetry.attach(EventBus())
    scope = Scope(run_id="r1", agent="a")
    for event in (
        Event("agent.run.started", scope=scope),
        Event("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "x"}, scope=scope),
        Event("agent.tool.call.completed", {"tool_call_id": "t1"}, scope=scope),
        Event("agent.run.completed", scope=scope),
    ):
        await bus.publish(event)
    return bus


# ====================================================================== global providers
def test_ours_becomes_global_only_when_none_is_set(owned: Owned) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    first = owned(span_exporter=InMemorySpanExporter(), metrics_enabled=False)
    assert first.owns_providers
    assert trace.get_tracer_provider() is first.tracer_provider
    second = owned(span_exporter=InMemorySpanExporter(), metrics_enabled=False)
    assert second.tracer_provider is not first.tracer_provider
    assert trace.get_tracer_provider() is first.tracer_provider


async def test_never_replaces_the_applications_global_provider(owned: Owned) -> None:
    app_spans = InMemorySpanExporter()
    app = TracerProvider()
    app.add_span_processor(SimpleSpanProcessor(app_spans))
    trace.set_tracer_provider(app)
    ours = owned(span_exporter=InMemorySpanExporter(), metrics_enabled=False)
    assert trace.get_tracer_provider() is app
    assert ours.tracer_provider is not app

    # use_global=True puts the mirror's spans into the application's pipeline...
    joined = owned(use_global=True, metrics_enabled=False)
    assert joined.tracer_provider is app
    assert not joined.owns_providers
    await (await one_run(joined)).close()
    assert "invoke_agent a" in {s.name for s in app_spans.get_finished_spans()}
    # ...and shutting ours down leaves the application's provider working.
    assert joined.shutdown(timeout=3)
    trace.get_tracer("app").start_span("after our shutdown").end()
    assert "after our shutdown" in {s.name for s in app_spans.get_finished_spans()}


def test_never_replaces_the_global_provider_in_a_fresh_process() -> None:
    result = run_python("""
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_agentbus import configure

before = type(trace.get_tracer_provider()).__name__
app = TracerProvider()
trace.set_tracer_provider(app)
ours = configure(span_exporter=InMemorySpanExporter(), metrics_enabled=False)
print(json.dumps({
    "before": before,
    "kept": trace.get_tracer_provider() is app,
    "separate": ours.tracer_provider is not app,
    "shutdown": ours.shutdown(timeout=3),
}))
""", timeout=30)
    assert result["before"] == "ProxyTracerProvider"
    assert result["kept"] is True
    assert result["separate"] is True
    assert result["shutdown"] is True
    assert "Overriding of current TracerProvider" not in result["_stderr"]


def test_use_global_needs_an_sdk_provider(owned: Owned) -> None:
    with pytest.raises(ConfigurationError, match="use_global"):
        owned(use_global=True)


# ====================================================================== exporter resolution
@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({}, {}, None),
        ({"OTEL_TRACES_EXPORTER": "none",
          "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, {}, None),
        ({"OTEL_TRACES_EXPORTER": "console"}, {}, ConsoleSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "Console,otlp"}, {}, GrpcSpanExporter),  # both; OTLP counted
        ({"OTEL_TRACES_EXPORTER": "otlp"}, {}, GrpcSpanExporter),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, {}, GrpcSpanExporter),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
          "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, {}, HttpSpanExporter),
        ({}, {"endpoint": "http://127.0.0.1:9", "protocol": "http/protobuf"}, HttpSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "console"}, {"exporter": "none"}, None),
    ],
)
def test_exporter_resolution(
    owned: Owned, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: dict[str, str],
    expected: type | None,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    telemetry = owned(metrics_enabled=False, **args)
    if expected is None:
        assert telemetry.exporter is None
    else:
        assert telemetry.exporter is not None
        assert type(telemetry.exporter.inner) is expected


@pytest.mark.parametrize(
    ("env", "args", "names"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, {}, "OTEL_TRACES_EXPORTER"),
        ({}, {"exporter": "zipkin"}, "exporter="),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
          "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, {}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({}, {"endpoint": "http://127.0.0.1:9", "protocol": "udp"}, "protocol="),
        ({}, {"shutdown_timeout": 0}, "shutdown_timeout"),
    ],
)
def test_bad_settings_raise_configuration_error_naming_them(
    owned: Owned, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: dict[str, Any],
    names: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=names):
        owned(metrics_enabled=False, **args)
    # Nothing was half set up: no global provider was installed.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def test_service_name_and_resource_attributes(owned: Owned) -> None:
    telemetry = owned(span_exporter=InMemorySpanExporter(), metrics_enabled=False,
                      service_name="svc", resource_attributes={"deployment.environment": "t"})
    resource = telemetry.tracer_provider.resource.attributes
    assert resource["service.name"] == "svc"
    assert resource["deployment.environment"] == "t"


# ====================================================================== export accounting
class _FailingExporter(SpanExporter):
    def __init__(self, raise_: bool) -> None:
        self.raise_ = raise_

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.raise_:
            raise ConnectionError("collector gone")
        return SpanExportResult.FAILURE


class _CapturingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass

    def value(self, name: str, **labels: str) -> Any:
        found = [p.value for data in self.batches for rm in data.resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics if m.name == name
                 for p in m.data.data_points
                 if all(p.attributes.get(k) == v for k, v in labels.items())]
        return found[-1] if found else None


async def test_export_stats_count_exported_spans(owned: Owned) -> None:
    spans = InMemorySpanExporter()
    metrics = _CapturingMetricExporter()
    telemetry = owned(span_exporter=spans, metric_exporter=metrics)
    await (await one_run(telemetry)).close()
    assert telemetry.force_flush(5)
    stats = telemetry.export_stats()
    assert stats["spans_emitted"] == 3  # pending record, run, tool call
    assert stats["spans_exported"] == len(spans.get_finished_spans()) == 3
    assert stats["spans_export_failed"] == stats["spans_unaccounted"] == 0
    assert metrics.value(sc.METRIC_EXPORT_SPANS, outcome="exported") == 3
    assert metrics.value(sc.METRIC_EXPORT_SPANS, outcome="failed") == 0


@pytest.mark.parametrize("raise_", [False, True])
async def test_export_stats_count_failed_spans(owned: Owned, raise_: bool) -> None:
    telemetry = owned(span_exporter=_FailingExporter(raise_), metrics_enabled=False)
    await (await one_run(telemetry)).close()
    telemetry.force_flush(5)
    stats = telemetry.export_stats()
    assert stats["spans_export_failed"] == stats["spans_emitted"] == 3
    assert stats["spans_exported"] == 0


# ====================================================================== bounded shutdown
class _StuckExporter(SpanExporter):
    """A collector that never answers (released at teardown)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        return SpanExportResult.SUCCESS


@pytest.fixture
def stuck() -> Iterator[_StuckExporter]:
    exporter = _StuckExporter()
    yield exporter
    exporter.release.set()


async def test_shutdown_is_bounded_when_export_hangs(owned: Owned, stuck: _StuckExporter) -> None:
    telemetry = owned(span_exporter=stuck, metrics_enabled=False)
    bus = await one_run(telemetry)
    await bus.publish(Event("agent.run.started", scope=Scope(run_id="open", agent="a")))
    started = time.monotonic()
    finished = telemetry.shutdown(timeout=1)
    elapsed = time.monotonic() - started
    assert stuck.entered.is_set()  # it really was stuck in export
    assert finished is False
    assert elapsed < 2
    assert telemetry.mirror.open_runs == 0
    await bus.close()


async def test_force_flush_is_bounded_when_export_hangs(
    owned: Owned, stuck: _StuckExporter
) -> None:
    telemetry = owned(span_exporter=stuck, metrics_enabled=False)
    await (await one_run(telemetry)).close()
    started = time.monotonic()
    assert telemetry.force_flush(timeout=1) is False
    assert time.monotonic() - started < 2
    assert stuck.entered.is_set()
