"""Our span encoder for the SDK's OTLP/HTTP span exporter ``configure()`` sets up.

Over gRPC the exporter encodes with :class:`.otlp.SpanEncoder`; over OTLP/HTTP it kept the
SDK's ``encode_spans`` (about 30 µs a span on the batch processor's thread, under the
agent's GIL), and export over HTTP ran at about half the spans a second of gRPC into the
same receiver. The HTTP exporter has no encoding hook, so :func:`with_fast_http_encoder`
gives it its own ``export`` code run with our encoder in place of ``encode_spans``
(:func:`.sdk_internals.set_http_encoder`): the request size limit, compression, timeouts,
retries, session and metrics stay the SDK's, and the request body is byte for byte the one
the SDK would send.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan

from . import sdk_internals as internals
from .otlp import SpanEncoder


class EncodedRequest:
    """An ``ExportTraceServiceRequest`` already encoded: what the exporter's ``export``
    expects back from ``encode_spans``, a message it only serializes."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def SerializePartialToString(self) -> bytes:
        return self.data

    def SerializeToString(self) -> bytes:
        return self.data


def with_fast_http_encoder(exporter: OTLPSpanExporter) -> OTLPSpanExporter:
    """Give the SDK's OTLP/HTTP span exporter our encoder; everything else about it (its
    type, endpoint, headers, compression, retries, ``OTEL_EXPORTER_OTLP_*``) is unchanged.
    An SDK laid out otherwise keeps its own encoder (see :func:`.sdk_internals.fast_paths`)."""
    encoder = SpanEncoder()  # one per exporter: its caches are not shared between threads

    def encode(spans: Sequence[ReadableSpan]) -> EncodedRequest:
        return EncodedRequest(encoder.encode(spans))

    internals.set_http_encoder(exporter, encode)
    return exporter
