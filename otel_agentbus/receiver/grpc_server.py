"""OTLP/gRPC endpoint: the collector's Trace, Metrics and Logs services.

The servicers subclass the classes generated in ``opentelemetry-proto``, but we
register them with a raw-bytes deserializer: grpcio would answer an
undecodable request with INTERNAL, while OTLP wants INVALID_ARGUMENT so that
clients do not retry it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, NoReturn

import grpc  # type: ignore[import-untyped]
from google.protobuf.message import Message  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from .auth import bearer_matches
from .convert import MalformedRequest
from .ingest import Ingest, Signal
from .limits import LimitExceeded
from .store import STORAGE_FULL_MESSAGE, StorageFull
from .tls import TLSFiles

log = logging.getLogger(__name__)


def _abort(context: Any, code: Any, message: str) -> NoReturn:
    context.abort(code, message)  # raises
    raise AssertionError("grpc context.abort returned")


class _Exporter:
    """Auth, decode and store for one signal; shared by the three servicers."""

    def __init__(self, signal: Signal, ingest: Ingest, token: str | None) -> None:
        self.signal = signal
        self.ingest = ingest
        self.token = token

    def _authorized(self, context: Any) -> bool:
        if self.token is None:
            return True
        for key, value in context.invocation_metadata() or ():
            if key.lower() == "authorization" and isinstance(value, str):
                return bearer_matches(value, self.token)
        return False

    def export(self, data: bytes, context: Any) -> Message:
        if not self._authorized(context):
            self.ingest.rejected()
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        try:
            return self.ingest.export_protobuf(self.signal, data)
        except MalformedRequest as exc:
            self.ingest.rejected()
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except LimitExceeded as exc:
            self.ingest.over_limit()
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except StorageFull:
            self.ingest.rejected()
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, STORAGE_FULL_MESSAGE)
        except Exception as exc:
            log.exception("failed to store OTLP/gRPC request")
            self.ingest.rejected()
            _abort(context, grpc.StatusCode.INTERNAL, f"internal error: {exc}")


class _ExportServicer:
    """``Export``, the one method of each collector service, handed to its signal's
    exporter; listed first in the bases so it overrides the generated stub."""

    def __init__(self, exporter: _Exporter) -> None:
        self._exporter = exporter

    def Export(self, request: bytes, context: Any) -> Message:
        return self._exporter.export(request, context)


class TraceService(_ExportServicer, trace_service_pb2_grpc.TraceServiceServicer):
    """The collector's TraceService."""


class MetricsService(_ExportServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """The collector's MetricsService."""


class LogsService(_ExportServicer, logs_service_pb2_grpc.LogsServiceServicer):
    """The collector's LogsService."""


def _handler(full_name: str, servicer: Any, response_type: type[Message]) -> Any:
    method = grpc.unary_unary_rpc_method_handler(
        servicer.Export,
        request_deserializer=None,  # raw bytes; see module docstring
        response_serializer=response_type.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(full_name, {"Export": method})


MAX_CONCURRENT_RPCS: Final = 256
"""RPCs admitted at once (running or queued for a worker); more get RESOURCE_EXHAUSTED at
once, which OTLP exporters retry with backoff."""
CONNECTION_OPTIONS: Final[tuple[tuple[str, int], ...]] = (
    ("grpc.max_concurrent_streams", 64),  # per connection
    ("grpc.max_connection_idle_ms", 5 * 60_000),  # GOAWAY to a connection idle this long
    ("grpc.max_connection_age_ms", 30 * 60_000),  # ... and to any after this long,
    ("grpc.max_connection_age_grace_ms", 30_000),  # in-flight RPCs given this to finish
    ("grpc.http2.max_ping_strikes", 2),  # clients pinging too eagerly get a GOAWAY
)
"""Connection limits of the gRPC listener. grpc-core reads each connection on its own
pollers, so a burst of hung-up HTTP clients cannot stall it; these bound what one gRPC
client may hold open."""


def create_grpc_server(
    address: str,
    ingest: Ingest,
    *,
    token: str | None = None,
    max_body: int,
    max_workers: int = 8,
    tls: TLSFiles | None = None,
) -> tuple[Any, int]:
    """Build a gRPC server bound to ``address`` (with TLS when ``tls`` is given); returns
    ``(server, bound_port)``.

    Raises ``RuntimeError`` if the address cannot be bound.
    """
    server = grpc.server(
        ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="otlp-grpc"),
        options=[
            ("grpc.max_receive_message_length", max_body),
            ("grpc.so_reuseport", 0),  # fail loudly instead of sharing a busy port
            *CONNECTION_OPTIONS,
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    services = (
        (
            trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name,
            TraceService(_Exporter(Signal.TRACES, ingest, token)),
            trace_service_pb2.ExportTraceServiceResponse,
        ),
        (
            metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
            MetricsService(_Exporter(Signal.METRICS, ingest, token)),
            metrics_service_pb2.ExportMetricsServiceResponse,
        ),
        (
            logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name,
            LogsService(_Exporter(Signal.LOGS, ingest, token)),
            logs_service_pb2.ExportLogsServiceResponse,
        ),
    )
    server.add_generic_rpc_handlers(tuple(_handler(*service) for service in services))
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(
            address, grpc.ssl_server_credentials([(tls.key_pem, tls.cert_pem)]))
    if not port:
        raise RuntimeError(f"could not bind gRPC to {address}")
    return server, int(port)
