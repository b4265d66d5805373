"""``configure()``'s OTLP/gRPC span exports overlap: the processor hands over a batch and
goes on, a flush still waits for every batch, and each outcome is counted once known."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, TraceFlags
from telemetry_helpers import forget, fresh_global_tracer_provider, run_python

from otel_agentbus.telemetry import configure
from otel_agentbus.telemetry.config import (
    DEFAULT_EXPORT_BATCH,
    DEFAULT_SPAN_QUEUE,
    EXPORTS_IN_FLIGHT,
    CountingSpanExporter,
    PipelinedSpanExporter,
)
from otel_agentbus.telemetry.export import (
    _batch_processor,
    _CountingBatchSpanProcessor,
    _FlushingBatchSpanProcessor,
)

pytestmark = pytest.mark.timeout(30)


class Gate(SpanExporter):
    """Holds every export until ``opened``; records how many ran at once."""

    def __init__(self, fail: bool = False) -> None:
        self.opened = threading.Event()
        self.fail = fail
        self.exported: list[ReadableSpan] = []
        self.running = 0
        self.most = 0
        self.shut_down = False
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            assert self.opened.wait(10), "the test never opened the gate"
            if self.fail:
                raise RuntimeError("backend down")
            with self._lock:
                self.exported.extend(spans)
            return SpanExportResult.SUCCESS
        finally:
            with self._lock:
                self.running -= 1

    def shutdown(self) -> None:
        self.shut_down = True


def span(index: int = 1) -> ReadableSpan:
    return ReadableSpan(name="s", context=SpanContext(1, index, False, TraceFlags(1)),
                        start_time=1, end_time=2)


def wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.fixture
def gate() -> Iterator[Gate]:
    gate = Gate()
    yield gate
    gate.opened.set()  # never leave a sender thread waiting


def test_exports_overlap_up_to_the_limit(gate: Gate) -> None:
    pipeline = PipelinedSpanExporter(gate, in_flight=2)
    assert pipeline.export([span(1)]) is SpanExportResult.SUCCESS  # handed over at once
    assert pipeline.export([span(2)]) is SpanExportResult.SUCCESS
    wait_until(lambda: gate.running == 2)
    third = threading.Thread(target=pipeline.export, args=([span(3)],))
    third.start()
    time.sleep(0.1)
    assert third.is_alive(), "a third export started while two were in flight"
    gate.opened.set()
    third.join(5)
    assert pipeline.force_flush(5000)
    assert gate.most == 2
    assert sorted(s.context.span_id for s in gate.exported) == [1, 2, 3]


def test_force_flush_waits_for_exports_in_flight(gate: Gate) -> None:
    pipeline = PipelinedSpanExporter(gate)
    pipeline.export([span()])
    assert not pipeline.force_flush(100)  # still in flight: a bounded wait says so
    gate.opened.set()
    assert pipeline.force_flush(5000)
    assert len(gate.exported) == 1


def test_outcomes_are_counted_when_known_and_failures_free_the_slot() -> None:
    failing = Gate(fail=True)
    counting = CountingSpanExporter(failing)
    pipeline = PipelinedSpanExporter(counting, in_flight=1)
    failing.opened.set()
    for index in range(3):
        pipeline.export([span(index + 1), span(index + 10)])
    assert pipeline.force_flush(5000)
    assert (counting.exported, counting.failed) == (0, 6)


def test_shutdown_waits_for_exports_then_refuses_new_ones(gate: Gate) -> None:
    pipeline = PipelinedSpanExporter(gate)
    pipeline.export([span()])
    threading.Timer(0.1, gate.opened.set).start()
    pipeline.shutdown()
    assert len(gate.exported) == 1 and gate.shut_down
    assert pipeline.export([span(2)]) is SpanExportResult.FAILURE
    assert len(gate.exported) == 1


def test_the_processors_flush_returns_after_the_last_batch_is_stored(gate: Gate) -> None:
    counting = CountingSpanExporter(gate)
    processor = _batch_processor(counting, pipelined=True)
    assert isinstance(processor, _FlushingBatchSpanProcessor)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    for _ in range(600):  # two batches of the SDK's 512, both handed over at once
        tracer.start_span("s").end()
    threading.Timer(0.2, gate.opened.set).start()
    assert provider.force_flush(10_000)
    assert counting.exported == 600 == len(gate.exported)
    provider.shutdown()


def test_configure_pipelines_otlp_grpc_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    kinds = {}
    for label, options in {
        "grpc": {"endpoint": "http://127.0.0.1:9"},
        "http": {"endpoint": "http://127.0.0.1:9", "protocol": "http/protobuf"},
        "custom": {"span_exporter": Gate()},
    }.items():
        with fresh_global_tracer_provider():
            telemetry = configure(metrics_enabled=False, signal_handlers=False,
                                  **options)  # type: ignore[arg-type]
            forget(telemetry)
            try:
                processors = telemetry.tracer_provider._active_span_processor._span_processors
                (processor,) = processors
                kinds[label] = type(processor)
            finally:
                telemetry.shutdown(timeout=2.0)
    assert kinds["grpc"] is _FlushingBatchSpanProcessor
    # The SDK's processor (counting what it is handed), without the pipelined exports.
    assert kinds["http"] is kinds["custom"] is _CountingBatchSpanProcessor
    assert issubclass(_CountingBatchSpanProcessor, BatchSpanProcessor)
    assert EXPORTS_IN_FLIGHT == 2


def test_a_forked_child_starts_with_every_slot_free() -> None:
    # Two exports hang in the parent when it forks; the child's own exports must not wait
    # for senders that do not exist there.
    result = run_python("""
import json, os, threading
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext
from otel_agentbus.telemetry.config import PipelinedSpanExporter

parent = os.getpid()
hold = threading.Event()

class Inner(SpanExporter):
    def export(self, spans):
        if os.getpid() == parent:
            hold.wait(10)
        return SpanExportResult.SUCCESS

pipeline = PipelinedSpanExporter(Inner(), in_flight=2)
span = ReadableSpan(name="s", context=SpanContext(1, 1, False))
pipeline.export([span]); pipeline.export([span])
child = os.fork()
if child == 0:
    pipeline.export([span])
    os._exit(0 if pipeline.force_flush(5000) else 1)
_, status = os.waitpid(child, 0)
hold.set()
flushed = pipeline.force_flush(5000)
print(json.dumps({"child": os.waitstatus_to_exitcode(status), "parent": flushed}))
""")
    assert (result["child"], result["parent"]) == (0, True)


def batch_settings(processor: BatchSpanProcessor) -> tuple[int, int]:
    batch = processor._batch_processor
    return batch._max_export_batch_size, batch._max_queue_size


@pytest.mark.parametrize(("env", "expected"), [
    ({}, (DEFAULT_EXPORT_BATCH, DEFAULT_SPAN_QUEUE)),
    ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100"}, (100, DEFAULT_SPAN_QUEUE)),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "1000"}, (1000, 1000)),  # never above the queue
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "not a number"}, (2048, 2048)),  # the SDK's fallback
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "9000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "3000"},
     (3000, 9000)),
])
def test_batch_size_default_and_variables(monkeypatch: pytest.MonkeyPatch,
                                          env: dict[str, str],
                                          expected: tuple[int, int]) -> None:
    for name in ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_BSP_MAX_QUEUE_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for pipelined in (True, False):
        processor = _batch_processor(CountingSpanExporter(Gate()), pipelined=pipelined)
        try:
            assert batch_settings(processor) == expected
        finally:
            processor.shutdown()
    assert DEFAULT_EXPORT_BATCH == 2048


def test_exports_run_in_the_processors_context() -> None:
    # The SDK's processor exports with instrumentation suppressed, so that an instrumented
    # gRPC or HTTP client does not trace the export itself; the sender thread must too.
    from opentelemetry.context import (
        _SUPPRESS_INSTRUMENTATION_KEY,
        attach,
        detach,
        get_value,
        set_value,
    )

    seen: list[object] = []

    class Recording(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            seen.append(get_value(_SUPPRESS_INSTRUMENTATION_KEY))
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    pipeline = PipelinedSpanExporter(Recording(), in_flight=1)  # one after the other
    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        pipeline.export([span()])
    finally:
        detach(token)
    pipeline.export([span(2)])
    assert pipeline.force_flush(5000)
    assert seen == [True, None]
