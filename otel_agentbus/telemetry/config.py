"""``configure()``: telemetry from arguments and the standard ``OTEL_*`` variables.

The application owns the global providers. If it already set a TracerProvider we never
replace it: pass ``tracer_provider=`` (or ``use_global=True``) to put our spans into the
application's pipeline, so agent spans and its HTTP or database spans share one trace.
"""

from __future__ import annotations

import atexit
import contextvars
import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import Sampler

from .. import semconv as sc
from .content import ContentPolicy, Redactor
from .metrics import MirrorMetrics
from .mirror import TelemetryMirror

if TYPE_CHECKING:
    from ..bus import EventBus

logger = logging.getLogger("otel_agentbus.telemetry")

ExporterName = Literal["otlp", "console", "none"]
Protocol = Literal["grpc", "http/protobuf"]


class ConfigurationError(ValueError):
    """A telemetry setting that cannot work; the message names the argument or variable."""


class CountingSpanExporter(SpanExporter):
    """Wraps the real exporter to count what reached the backend and what did not."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            logger.exception("span export raised")
            result = SpanExportResult.FAILURE
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                self.exported += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


EXPORTS_IN_FLIGHT: Final = 2
"""OTLP/gRPC span exports ``configure()`` lets run at once (the SDK's processor runs one).

Into the embedded receiver, a 100,000-span burst went 12% faster with two than with one
(the next batch is encoded while SQLite stores the last); three were slower again, the
exports then taking more of the GIL from the agent while it publishes."""


class PipelinedSpanExporter(SpanExporter):
    """Lets the batch processor hand over a batch and go on while earlier ones are sent.

    The SDK's batch processor exports one batch at a time and waits for the answer: while
    the backend stores a batch (or the network carries it), no span is encoded. Here
    ``export`` starts the wrapped export on a thread of its own and returns once fewer than
    ``in_flight`` exports run, so the next batch is encoded while the previous one is
    stored. The processor ignores what ``export`` returns; the outcome of each batch is
    what the wrapped exporter (a :class:`CountingSpanExporter`) counts when it is known.
    ``force_flush`` and ``shutdown`` wait for the exports still running.
    """

    def __init__(self, inner: SpanExporter, in_flight: int = EXPORTS_IN_FLIGHT) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {in_flight!r}")
        self.inner = inner
        self.in_flight = in_flight
        self._shut_down = False
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A forked child has none of the parent's sender threads: start from zero.
            alive = weakref.WeakMethod(self._reset)

            def reset_in_child() -> None:
                reset = alive()
                if reset is not None:
                    reset()

            os.register_at_fork(after_in_child=reset_in_child)

    def _reset(self) -> None:
        self._free = threading.Semaphore(self.in_flight)
        self._idle = threading.Condition()
        self._running = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        self._free.acquire()  # back-pressure: wait while in_flight exports run
        with self._idle:
            self._running += 1
        # The sender runs in the processor's context, which tells instrumented libraries
        # (gRPC, HTTP) not to trace the export itself.
        context = contextvars.copy_context()
        sender = threading.Thread(target=context.run, args=(self._send, list(spans)),
                                  name="otel-agentbus-span-export", daemon=True)
        try:
            sender.start()
        except BaseException:
            self._done()
            raise
        return SpanExportResult.SUCCESS

    def _send(self, spans: list[ReadableSpan]) -> None:
        try:
            self.inner.export(spans)
        except Exception:
            logger.exception("span export raised")
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._running -= 1
            if not self._running:
                self._idle.notify_all()
        self._free.release()

    def _wait_idle(self, timeout_millis: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout_millis / 1000)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait for the exports in flight, then flush the wrapped exporter."""
        idle = self._wait_idle(timeout_millis)
        flushed = self.inner.force_flush(timeout_millis)
        return idle and flushed is not False  # the SDK's base class returns None

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Refuse new batches, wait (bounded) for those in flight, shut the wrapped one."""
        self._shut_down = True
        if not self._wait_idle(timeout_millis):
            logger.warning("%d span exports still running at shutdown", self._running)
        self.inner.shutdown()


class _FlushingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, whose ``force_flush`` also waits for the batches its
    :class:`PipelinedSpanExporter` still has in flight (the SDK's does not flush its
    exporter)."""

    def __init__(self, exporter: PipelinedSpanExporter, *, max_queue_size: int | None,
                 max_export_batch_size: int | None) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size,
                         max_export_batch_size=max_export_batch_size)
        self._pipeline = exporter

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        flushed = super().force_flush(timeout_millis)
        wait = 30_000 if timeout_millis is None else timeout_millis
        return self._pipeline.force_flush(wait) and flushed


class _DropCounter:
    """Stands in for a BatchSpanProcessor's internal metrics hooks (no-ops unless the SDK's
    own are enabled) to count the spans its full queue evicts, which the SDK only logs."""

    def __init__(self, inner: Any, queue: Any) -> None:
        self.inner = inner
        self.queue = queue
        self.dropped = 0

    def register_queue_size(self, get_queue_size: Any) -> None:
        self.inner.register_queue_size(get_queue_size)

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        if error_type == "queue_full" and len(self.queue) < (self.queue.maxlen or 0):
            return  # the export thread took a batch since the processor looked: no eviction
        self.dropped += count
        self.inner.drop_items(count, error_type)

    def finish_items(self, count: int) -> None:
        self.inner.finish_items(count)


def _count_drops(processor: BatchSpanProcessor) -> _DropCounter | None:
    batch = getattr(processor, "_batch_processor", None)
    if batch is None or not hasattr(batch, "_metrics") or not hasattr(batch, "_queue"):
        return None  # another SDK version: drops stay in spans_unaccounted
    counter = _DropCounter(batch._metrics, batch._queue)
    batch._metrics = counter
    return counter


DEFAULT_SPAN_QUEUE: Final = 131_072
"""Spans the batch processor may hold for export (the SDK's default is 2,048).

A run of 100,000 tool calls published faster than the collector ingests them would
overflow 2,048 at once and lose spans. A queued mirror span takes about 800 bytes, so the
queue costs memory only while export lags (about 100 MB if it ever fills).
``OTEL_BSP_MAX_QUEUE_SIZE`` overrides it."""


def _span_queue_size() -> int | None:
    """Our default queue size, unless ``OTEL_BSP_MAX_QUEUE_SIZE`` says (None lets the SDK
    read it)."""
    return None if _env("OTEL_BSP_MAX_QUEUE_SIZE") else DEFAULT_SPAN_QUEUE


DEFAULT_EXPORT_BATCH: Final = 2048
"""Spans the batch processor puts in one export (the SDK's default is 512).

Each export costs a request, a sender thread and, in the receiver, a transaction, whatever
its size: a 100,000-span burst into the embedded receiver went about 8% faster with 2,048
than with 512 (1,024 and 4,096 were in between or no better). A request of 2,048 mirror
spans is about 600 KB; the gRPC exporter splits any batch that encodes over 4 MB
(``otlp.MAX_REQUEST_BYTES``), what collectors accept by default, so larger spans do not
make requests a collector refuses. ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` overrides it; it
never exceeds the queue size."""

_SDK_DEFAULT_QUEUE: Final = 2048


def _export_batch_size(queue_size: int | None) -> int | None:
    """Our default batch size, unless ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` says (None lets the
    SDK read it); capped at the queue size, which the SDK requires."""
    if _env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        return None
    if queue_size is None:  # OTEL_BSP_MAX_QUEUE_SIZE is set; the SDK falls back on bad ones
        try:
            queue_size = int(os.environ["OTEL_BSP_MAX_QUEUE_SIZE"])
        except ValueError:
            queue_size = _SDK_DEFAULT_QUEUE
    return max(1, min(DEFAULT_EXPORT_BATCH, queue_size))


def _batch_processor(exporter: SpanExporter, *, pipelined: bool) -> BatchSpanProcessor:
    """The SDK's batch processor with our queue and batch sizes; with ``pipelined``, its
    exports overlap (see :class:`PipelinedSpanExporter`)."""
    queue_size = _span_queue_size()
    batch_size = _export_batch_size(queue_size)
    if pipelined:
        return _FlushingBatchSpanProcessor(PipelinedSpanExporter(exporter),
                                           max_queue_size=queue_size,
                                           max_export_batch_size=batch_size)
    return BatchSpanProcessor(exporter, max_queue_size=queue_size,
                              max_export_batch_size=batch_size)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None


def _resolve_exporter(exporter: str | None, endpoint: str | None) -> ExporterName:
    chosen = exporter or _env("OTEL_TRACES_EXPORTER")
    if chosen is None:
        has_endpoint = endpoint or _env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return "otlp" if has_endpoint else "none"
    chosen = chosen.split(",")[0].strip().lower()
    if chosen not in ("otlp", "console", "none"):
        raise ConfigurationError(
            f"exporter {chosen!r} is not supported: use 'otlp', 'console' or 'none' "
            "(argument exporter= or OTEL_TRACES_EXPORTER)"
        )
    return chosen  # type: ignore[return-value]


def _resolve_protocol(protocol: str | None) -> Protocol:
    chosen = (protocol or _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
              or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
    if chosen not in ("grpc", "http/protobuf"):
        raise ConfigurationError(
            f"OTLP protocol {chosen!r} is not supported: use 'grpc' or 'http/protobuf' "
            "(argument protocol= or OTEL_EXPORTER_OTLP_PROTOCOL)"
        )
    return chosen  # type: ignore[return-value]


def _otlp_exporters(
    protocol: Protocol, endpoint: str | None, headers: Mapping[str, str] | None
) -> tuple[SpanExporter, MetricExporter, Any]:
    """Span, metric and log exporters; ``None`` arguments let the SDK read ``OTEL_*``."""
    header_dict = dict(headers) if headers else None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        from .otlp import with_fast_encoder

        insecure = None
        if endpoint is not None:
            insecure = endpoint.startswith("http://") or "://" not in endpoint
        return (
            with_fast_encoder(
                OTLPSpanExporter(endpoint=endpoint, headers=header_dict, insecure=insecure)),
            OTLPMetricExporter(endpoint=endpoint, headers=header_dict, insecure=insecure),
            OTLPLogExporter(endpoint=endpoint, headers=header_dict, insecure=insecure),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HTTPLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    base = endpoint.rstrip("/") if endpoint else None
    return (
        HTTPSpanExporter(endpoint=f"{base}/v1/traces" if base else None, headers=header_dict),
        HTTPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None, headers=header_dict),
        HTTPLogExporter(endpoint=f"{base}/v1/logs" if base else None, headers=header_dict),
    )


def _span_processor_of(provider: TracerProvider) -> SpanProcessor:
    # The SDK keeps its processors in one multi-processor; handing our finished spans to it
    # is what the SDK's own spans do on end().
    processor: SpanProcessor = provider._active_span_processor
    return processor


@dataclass
class Telemetry:
    """What ``configure()`` set up; ``shutdown()`` flushes within a bounded time."""

    mirror: TelemetryMirror
    tracer_provider: TracerProvider
    meter_provider: MeterProvider | None
    logger_provider: Any | None
    exporter: CountingSpanExporter | None
    owns_providers: bool
    shutdown_timeout: float
    _metrics: MirrorMetrics | None = None
    _shut_down: bool = False
    _drops: _DropCounter | None = None

    def attach(self, bus: EventBus, name: str = "default") -> EventBus:
        """Mirror ``bus``: every event it publishes from now on becomes telemetry."""
        bus.add_hook(self.mirror)
        if self._metrics is not None:
            self._metrics.observe_bus(bus, name)
        return bus

    def export_stats(self) -> dict[str, int]:
        """What the mirror produced and what became of it.

        ``spans_dropped`` is spans the batch processor's full queue evicted (or refused
        after its shutdown); should the export thread take a batch in the instant between
        the processor seeing a full queue and adding the span, that span may be counted as
        dropped and then exported or failed as well (the sum then exceeds ``spans_emitted``
        by one). ``spans_unaccounted`` is spans handed to the span processor
        that were neither exported, failed nor dropped: still in its queue or export, or
        (after ``shutdown()``) abandoned when the bounded shutdown gave up.
        """
        exporter = self.exporter
        exported = exporter.exported if exporter else 0
        failed = exporter.failed if exporter else 0
        dropped = self._drops.dropped if self._drops is not None else 0
        return {
            "spans_started": self.mirror.spans_started,
            "spans_ended": self.mirror.spans_ended,
            "spans_force_ended": self.mirror.spans_force_ended,
            "spans_emitted": self.mirror.spans_emitted,
            "span_events": self.mirror.events_recorded,
            "spans_exported": exported,
            "spans_export_failed": failed,
            "spans_dropped": dropped,
            "spans_unaccounted": (max(0, self.mirror.spans_emitted - exported - failed
                                      - dropped) if exporter else 0),
            "measurements_dropped": self._metrics.dropped if self._metrics else 0,
        }

    def _bounded(self, what: str, work: Any, timeout: float) -> bool:
        """Run ``work`` on a helper thread and give up after ``timeout``: the SDK's
        flush ignores its own timeout and would block on a dead collector."""
        worker = threading.Thread(target=work, name=f"otel-agentbus-{what}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            logger.warning("telemetry %s did not finish within %.1fs; giving up", what, timeout)
            return False
        return True

    def force_flush(self, timeout: float | None = None) -> bool:
        limit = self.shutdown_timeout if timeout is None else timeout

        def flush() -> None:
            # Spans first: replaying a backlog of measurements into the SDK takes seconds
            # after a burst, and spans should not wait behind it.
            self.tracer_provider.force_flush(int(limit * 1000))
            if self._metrics is not None:
                self._metrics.drain()
            if self.meter_provider is not None:
                self.meter_provider.force_flush(int(limit * 1000))
            if self.logger_provider is not None:
                self.logger_provider.force_flush(int(limit * 1000))

        return self._bounded("flush", flush, limit)

    def shutdown(self, timeout: float | None = None) -> bool:
        """End open spans (saying why), flush, and shut down the providers we own."""
        if self._shut_down:
            return True
        self._shut_down = True
        from ..default_mirror import unregister_default_mirror

        unregister_default_mirror(self.mirror)  # new buses stop mirroring to it
        self.mirror.shutdown()
        limit = self.shutdown_timeout if timeout is None else timeout
        if not self.owns_providers:
            return self.force_flush(limit)

        def stop() -> None:
            if self._metrics is not None:
                self._metrics.drain()
            self.tracer_provider.shutdown()
            if self.meter_provider is not None:
                self.meter_provider.shutdown(timeout_millis=limit * 1000)
            if self.logger_provider is not None:
                self.logger_provider.shutdown()

        return self._bounded("shutdown", stop, limit)


def configure(
    *,
    service_name: str | None = None,
    exporter: ExporterName | None = None,
    endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    sampler: Sampler | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    use_global: bool = False,
    metrics_enabled: bool = True,
    metric_export_interval_ms: int | None = None,
    logs: bool = False,
    content: ContentPolicy | None = None,
    redact: Redactor | None = None,
    pending_spans: bool = True,
    span_exporter: SpanExporter | None = None,
    metric_exporter: MetricExporter | None = None,
    shutdown_timeout: float = 5.0,
    bus: EventBus | None = None,
    signal_handlers: bool = True,
    mirror_new_buses: bool = True,
) -> Telemetry:
    """Set up tracing, metrics and (with ``logs=True``) logs for the mirror.

    Every argument left ``None`` falls back to the standard variables: ``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``_PROTOCOL`` /
    ``_HEADERS``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_TRACES_EXPORTER``.
    ``span_exporter`` / ``metric_exporter`` replace the OTLP ones (tests, custom backends).
    Spans go through the SDK's batch processor with a larger queue and batches
    (``DEFAULT_SPAN_QUEUE``, ``DEFAULT_EXPORT_BATCH``; ``OTEL_BSP_*`` override them) and,
    over OTLP/gRPC, with up to ``EXPORTS_IN_FLIGHT`` exports at once.
    ``signal_handlers`` shuts telemetry down on SIGTERM (see :mod:`.signals`).
    ``mirror_new_buses``: every ``EventBus`` created from now on mirrors to this telemetry
    (as a tracer from the global provider would); ``bus=`` and ``attach()`` still work
    with it off. ``shutdown()`` ends it.
    """
    if shutdown_timeout <= 0:
        raise ConfigurationError(f"shutdown_timeout must be > 0, got {shutdown_timeout!r}")
    if content is not None:
        policy = content if redact is None else dataclasses.replace(content, redact=redact)
    else:
        policy = ContentPolicy.from_env(redact=redact)
    if use_global and tracer_provider is None:
        current = trace.get_tracer_provider()
        if not isinstance(current, TracerProvider):
            raise ConfigurationError(
                "use_global=True but the global TracerProvider is not an SDK TracerProvider "
                f"({type(current).__name__}); set one first or pass tracer_provider="
            )
        tracer_provider = current
        global_meter = metrics.get_meter_provider()
        if meter_provider is None and isinstance(global_meter, MeterProvider):
            meter_provider = global_meter

    owns = tracer_provider is None
    counting: CountingSpanExporter | None = None
    drops: _DropCounter | None = None
    logger_provider: Any | None = None
    metric_reader_exporter: MetricExporter | None = metric_exporter
    log_exporter: Any | None = None
    if owns:
        attributes: dict[str, Any] = dict(resource_attributes or {})
        if service_name:
            attributes[SERVICE_NAME] = service_name
        resource = Resource.create(attributes)
        # Our own atexit hook shuts down within shutdown_timeout; the SDK's would block
        # on a dead collector, so it is switched off.
        tracer_provider = TracerProvider(resource=resource, sampler=sampler,
                                         shutdown_on_exit=False)
        chosen = "custom" if span_exporter is not None else _resolve_exporter(exporter, endpoint)
        if chosen == "otlp":
            span_out, metric_out, log_exporter = _otlp_exporters(
                _resolve_protocol(protocol), endpoint, headers)
            metric_reader_exporter = metric_reader_exporter or metric_out
        elif chosen == "console":
            span_out = ConsoleSpanExporter()
            metric_reader_exporter = metric_reader_exporter or ConsoleMetricExporter()
        elif chosen == "custom":
            assert span_exporter is not None
            span_out = span_exporter
        else:
            span_out = None
        if span_out is not None:
            counting = CountingSpanExporter(span_out)
            batch = _batch_processor(counting, pipelined=chosen == "otlp"
                                     and _resolve_protocol(protocol) == "grpc")
            drops = _count_drops(batch)
            tracer_provider.add_span_processor(batch)
        if metrics_enabled and meter_provider is None and metric_reader_exporter is not None:
            interval = metric_export_interval_ms
            reader = PeriodicExportingMetricReader(
                metric_reader_exporter, export_interval_millis=interval)
            meter_provider = MeterProvider(resource=resource, metric_readers=[reader],
                                           shutdown_on_exit=False)
        if logs and log_exporter is not None:
            logger_provider = _logger_provider(resource, log_exporter)
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            # Nobody set one: ours becomes global so plain OpenTelemetry spans started inside
            # a tool call reach the same backend.
            trace.set_tracer_provider(tracer_provider)
    assert tracer_provider is not None

    mirror_metrics = None
    if metrics_enabled:
        provider = meter_provider or metrics.get_meter_provider()
        mirror_metrics = MirrorMetrics(
            provider.get_meter(sc.INSTRUMENTATION_SCOPE, sc.SCHEMA_VERSION))
    if mirror_metrics is not None and counting is not None:
        exporter_counts, drop_counts = counting, drops
        mirror_metrics.observe_export(lambda: (
            exporter_counts.exported, exporter_counts.failed,
            drop_counts.dropped if drop_counts is not None else 0))
    mirror = TelemetryMirror(
        _span_processor_of(tracer_provider),
        resource=tracer_provider.resource,
        sampler=tracer_provider.sampler,
        metrics=mirror_metrics,
        content=policy,
        pending_spans=pending_spans,
    )
    telemetry = Telemetry(
        mirror=mirror, tracer_provider=tracer_provider, meter_provider=meter_provider,
        logger_provider=logger_provider, exporter=counting, owns_providers=owns,
        shutdown_timeout=shutdown_timeout, _metrics=mirror_metrics, _drops=drops,
    )
    atexit.register(telemetry.shutdown)
    if signal_handlers:
        from .signals import install_signal_handlers

        install_signal_handlers(telemetry, replace=False)
    if mirror_new_buses:
        from ..default_mirror import register_default_mirror

        register_default_mirror(mirror)
    if bus is not None:
        telemetry.attach(bus)
    return telemetry


def _logger_provider(resource: Resource, log_exporter: Any) -> Any:
    """An OTel LoggerProvider fed by the stdlib root logger (records carry trace ids)."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    logging.getLogger().addHandler(LoggingHandler(logger_provider=provider))
    return provider
