"""``configure()``: telemetry from arguments and the standard ``OTEL_*`` variables.

The application owns the global providers. If it already set a TracerProvider we never
replace it: pass ``tracer_provider=`` (or ``use_global=True``) to put our spans into the
application's pipeline, so agent spans and its HTTP or database spans share one trace.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import (
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from .. import semconv as sc
from . import sdk_internals
from .content import ContentPolicy, Redactor
from .export import (  # the public ones re-exported: they were defined here before
    DEFAULT_EXPORT_BATCH,
    DEFAULT_SPAN_QUEUE,
    EXPORTS_IN_FLIGHT,
    CountingSpanExporter,
    PipelinedSpanExporter,
    _batch_processor,
    _count_drops,
    _DropCounter,
    _env,
)
from .metrics import MirrorMetrics
from .mirror import TelemetryMirror

if TYPE_CHECKING:
    from ..bus import EventBus

logger = logging.getLogger("otel_agentbus.telemetry")

__all__ = [
    "DEFAULT_EXPORT_BATCH",
    "DEFAULT_SPAN_QUEUE",
    "EXPORTS_IN_FLIGHT",
    "ConfigurationError",
    "CountingSpanExporter",
    "PipelinedSpanExporter",
    "Telemetry",
    "configure",
]

ExporterName = Literal["otlp", "console", "none"]
Protocol = Literal["grpc", "http/protobuf"]


class ConfigurationError(ValueError):
    """A telemetry setting that cannot work; the message names the argument or variable."""


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

    from .otlp_http import with_fast_http_encoder

    base = endpoint.rstrip("/") if endpoint else None
    return (
        with_fast_http_encoder(
            HTTPSpanExporter(endpoint=f"{base}/v1/traces" if base else None, headers=header_dict)),
        HTTPMetricExporter(endpoint=f"{base}/v1/metrics" if base else None, headers=header_dict),
        HTTPLogExporter(endpoint=f"{base}/v1/logs" if base else None, headers=header_dict),
    )


def _span_processor_of(provider: TracerProvider,
                       own: SynchronousMultiSpanProcessor | None) -> SpanProcessor:
    """Where the mirror hands its finished spans: the provider's multi-processor, as the
    SDK's own spans do on end(). ``own`` is the one we gave a provider we created."""
    if own is not None:
        return own
    processor = sdk_internals.span_processor_of(provider)
    if processor is None:
        raise ConfigurationError(
            "this OpenTelemetry SDK does not expose a TracerProvider's span processor: "
            "let configure() create the provider (no tracer_provider= / use_global=)")
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
    own_processor: SynchronousMultiSpanProcessor | None = None
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
        own_processor = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
        tracer_provider = TracerProvider(resource=resource, sampler=sampler,
                                         shutdown_on_exit=False,
                                         active_span_processor=own_processor)
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
        _span_processor_of(tracer_provider, own_processor),
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
