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
from typing import TYPE_CHECKING, Any

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
    _CountingBatchSpanProcessor,
    _DropCounter,
)
from .exporter_env import (
    ExporterName,
    ExporterSettingError,
    OtlpTarget,
    Protocol,
    SignalExport,
    resolve_signal,
    warn_tls_by_default,
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

class ConfigurationError(ExporterSettingError):
    """A telemetry setting that cannot work; the message names the argument or variable."""


def _span_exporter(name: str, target: OtlpTarget | None) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    assert target is not None
    if target.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        from .otlp import with_fast_encoder

        return with_fast_encoder(OTLPSpanExporter(
            endpoint=target.endpoint, insecure=target.insecure, headers=target.headers))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    from .otlp_http import with_fast_http_encoder

    return with_fast_http_encoder(
        HTTPSpanExporter(endpoint=target.endpoint, headers=target.headers))


def _metric_exporter(name: str, target: OtlpTarget | None) -> MetricExporter:
    if name == "console":
        return ConsoleMetricExporter()
    assert target is not None
    if target.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(endpoint=target.endpoint, insecure=target.insecure,
                                  headers=target.headers)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )

    return HTTPMetricExporter(endpoint=target.endpoint, headers=target.headers)


def _log_exporter(name: str, target: OtlpTarget | None) -> Any:
    if name == "console":
        from opentelemetry.sdk._logs.export import ConsoleLogExporter

        return ConsoleLogExporter()
    assert target is not None
    if target.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(endpoint=target.endpoint, insecure=target.insecure,
                               headers=target.headers)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HTTPLogExporter,
    )

    return HTTPLogExporter(endpoint=target.endpoint, headers=target.headers)


def _resolve_exports(exporter: str | None, metrics_exporter: str | None,
                     logs_exporter: str | None, endpoint: str | None, protocol: str | None,
                     headers: Mapping[str, str] | None,
                     insecure: bool | None) -> dict[str, SignalExport]:
    """Each signal's exporters and OTLP target (see :mod:`.exporter_env`); metrics and
    logs follow an explicitly chosen traces exporter unless told otherwise."""
    try:
        traces = resolve_signal("traces", exporter, endpoint=endpoint, protocol=protocol,
                                headers=headers, insecure=insecure)
        explicit = traces.exporters_source in ("exporter=", "OTEL_TRACES_EXPORTER")
        follows = (traces.exporters, traces.exporters_source) if explicit else None
        exports = {
            "traces": traces,
            "metrics": resolve_signal("metrics", metrics_exporter, follows=follows,
                                      endpoint=endpoint, protocol=protocol, headers=headers,
                                      insecure=insecure),
            "logs": resolve_signal("logs", logs_exporter, follows=follows, endpoint=endpoint,
                                   protocol=protocol, headers=headers, insecure=insecure),
        }
    except ExporterSettingError as exc:
        raise ConfigurationError(str(exc)) from None
    for export in exports.values():
        if export.otlp is not None:
            warn_tls_by_default(export.otlp)
    return exports


_said_nothing_exported = False


def _say_nothing_exported(traces: SignalExport) -> None:
    """Once per process: configure() without any span exporter exports nothing."""
    global _said_nothing_exported
    if _said_nothing_exported:
        return
    _said_nothing_exported = True
    if traces.exporters_source in ("OTEL_TRACES_EXPORTER", "exporter="):
        logger.info("telemetry: spans are not exported (%s says none)",
                    traces.exporters_source)
    else:
        logger.warning(
            "telemetry: no exporter configured, spans will not be exported: set "
            "OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or pass "
            "endpoint= / exporter='console' to configure()")


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
    _batch: _CountingBatchSpanProcessor | None = None
    exports: dict[str, SignalExport] = dataclasses.field(default_factory=dict)
    """What ``configure()`` resolved for each signal (exporters, OTLP endpoint, TLS,
    headers); empty when the application's providers were used."""

    def attach(self, bus: EventBus, name: str = "default") -> EventBus:
        """Mirror ``bus``: every event it publishes from now on becomes telemetry."""
        bus.add_hook(self.mirror)
        if self._metrics is not None:
            self._metrics.observe_bus(bus, name)
        return bus

    def export_stats(self) -> dict[str, int]:
        """What the mirror produced and what became of it.

        Of the spans the batch processor was handed (``spans_accepted``: the mirror's and
        any other span ended on this provider), each is ``spans_exported`` (the backend
        acknowledged it), ``spans_export_failed`` (the exporter said it failed; of those,
        ``spans_export_timed_out`` got no answer within the exporter's timeout and may
        have been stored by a slow backend all the same; OTLP/gRPC only),
        ``spans_dropped`` (the processor's full queue evicted it), ``spans_in_flight``
        (sent, no answer yet: not lost, a slow backend may still store it) or
        ``spans_unsent`` (still queued, or refused after a bounded ``shutdown()`` gave up:
        it never leaves the process). ``spans_unaccounted`` is in flight plus unsent.
        Should the export thread take a batch in the instant between the processor seeing
        a full queue and adding the span, that span may be counted as dropped and then
        exported or failed as well.
        """
        exporter = self.exporter
        exported = exporter.exported if exporter else 0
        failed = exporter.failed if exporter else 0
        in_flight = exporter.in_flight if exporter else 0
        dropped = self._drops.dropped if self._drops is not None else 0
        accepted = self._batch.accepted if self._batch is not None else 0
        unsent = max(0, accepted - exported - failed - in_flight - dropped) if exporter else 0
        return {
            "spans_started": self.mirror.spans_started,
            "spans_ended": self.mirror.spans_ended,
            "spans_force_ended": self.mirror.spans_force_ended,
            "spans_emitted": self.mirror.spans_emitted,
            "span_events": self.mirror.events_recorded,
            "spans_accepted": accepted,
            "spans_exported": exported,
            "spans_export_failed": failed,
            "spans_export_timed_out": exporter.timed_out if exporter else 0,
            "spans_dropped": dropped,
            "spans_in_flight": in_flight,
            "spans_unsent": unsent,
            "spans_unaccounted": in_flight + unsent,
            "measurements_dropped": self._metrics.dropped if self._metrics else 0,
        }

    def _bounded(self, what: str, work: Any, timeout: float) -> bool:
        """Run ``work`` on a helper thread and give up after ``timeout``: the SDK's
        flush ignores its own timeout and would block on a dead collector."""
        failed: list[Exception] = []

        def run() -> None:
            try:
                work()
            except Exception as exc:  # e.g. a MeterProvider whose own deadline passed
                failed.append(exc)

        worker = threading.Thread(target=run, name=f"otel-agentbus-{what}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            logger.warning("telemetry %s did not finish within %.1fs; giving up", what, timeout)
            return False
        if failed:
            logger.warning("telemetry %s did not finish: %s", what, failed[0])
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

        finished = self._bounded("shutdown", stop, limit)
        if not finished and self.exporter is not None:
            # The process is going: what has not been handed to the exporter yet never
            # will be, and counts as unsent rather than leaving while we report.
            self.exporter.stop_sending()
        return finished


def configure(
    *,
    service_name: str | None = None,
    exporter: ExporterName | str | None = None,
    endpoint: str | None = None,
    protocol: Protocol | None = None,
    headers: Mapping[str, str] | None = None,
    insecure: bool | None = None,
    metrics_exporter: ExporterName | str | None = None,
    logs_exporter: ExporterName | str | None = None,
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
    ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
    ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` (``otlp``, ``console``, ``none``, or a
    comma-separated list) and ``OTEL_EXPORTER_OTLP_[{TRACES,METRICS,LOGS}_]{ENDPOINT,
    HEADERS,PROTOCOL,INSECURE}`` as the OTLP exporter specification says (see
    :mod:`.exporter_env`; ``Telemetry.exports`` shows what was resolved). ``exporter`` is
    the traces exporter; metrics and logs follow it unless ``metrics_exporter`` /
    ``logs_exporter`` or their variables say otherwise. With no exporter and no endpoint,
    nothing is exported (logged once). ``span_exporter`` / ``metric_exporter`` replace the
    resolved ones (tests, custom backends). Logs are exported only with ``logs=True``.
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
    log_exporters: list[Any] = []
    counted_batch: _CountingBatchSpanProcessor | None = None
    exports: dict[str, SignalExport] = {}
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
        exports = _resolve_exports(exporter, metrics_exporter, logs_exporter, endpoint,
                                   protocol, headers, insecure)
        traces = exports["traces"]
        if span_exporter is not None:
            span_outs: list[tuple[str, SpanExporter]] = [("custom", span_exporter)]
        else:
            span_outs = [(name, _span_exporter(name, traces.otlp))
                         for name in traces.exporters]
            if not span_outs:
                _say_nothing_exported(traces)
        # The accounting follows one exporter: the OTLP one when there are several.
        span_outs.sort(key=lambda item: item[0] != "otlp" and item[0] != "custom")
        for position, (name, span_out) in enumerate(span_outs):
            pipelined = (name == "otlp" and traces.otlp is not None
                         and traces.otlp.protocol == "grpc")
            if position == 0:
                counting = CountingSpanExporter(span_out)
                batch = _batch_processor(counting, pipelined=pipelined)
                counted_batch = batch
                drops = _count_drops(batch)
            else:
                batch = _batch_processor(span_out, pipelined=pipelined)
            tracer_provider.add_span_processor(batch)
        metric_outs: list[MetricExporter] = []
        if metric_reader_exporter is not None:
            metric_outs = [metric_reader_exporter]
        elif metrics_enabled and meter_provider is None:
            metric_outs = [_metric_exporter(name, exports["metrics"].otlp)
                           for name in exports["metrics"].exporters]
        if logs:
            log_exporters = [_log_exporter(name, exports["logs"].otlp)
                             for name in exports["logs"].exporters]
        if metrics_enabled and meter_provider is None and metric_outs:
            interval = metric_export_interval_ms
            readers = [PeriodicExportingMetricReader(out, export_interval_millis=interval)
                       for out in metric_outs]
            meter_provider = MeterProvider(resource=resource, metric_readers=readers,
                                           shutdown_on_exit=False)
        if log_exporters:
            logger_provider = _logger_provider(resource, log_exporters)
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
        _batch=counted_batch, exports=exports,
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


def _logger_provider(resource: Resource, log_exporters: list[Any]) -> Any:
    """An OTel LoggerProvider fed by the stdlib root logger (records carry trace ids)."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource)
    for log_exporter in log_exporters:
        provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    logging.getLogger().addHandler(LoggingHandler(logger_provider=provider))
    return provider
