"""Every use of OpenTelemetry SDK and OTLP exporter internals, in this one module.

The SDK does not promise to keep private names (1.34 moved the batch processor's insides to
``_shared_internal`` and broke projects that reached in). Each shortcut below is checked
once, at import (the OTLP/HTTP exporter's at first use: importing it costs 20 ms): does the
name exist, with the shape we rely on? Where it is missing, the package takes the public
path instead: slower, never wrong. :func:`fast_paths` says which shortcuts are active;
``OTEL_AGENTBUS_SDK_INTERNALS=off`` switches them all off (the tests use it to check that
the public paths give the same exported result), except the one without a public path (a
TracerProvider's span processor, below).
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Callable, Sequence
from typing import Any, Final

from opentelemetry.proto.trace.v1.trace_pb2 import Span as PB2Span
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

ENABLED: Final = os.environ.get("OTEL_AGENTBUS_SDK_INTERNALS", "").strip().lower() not in (
    "off", "0", "false", "no")
"""False when ``OTEL_AGENTBUS_SDK_INTERNALS=off``: every shortcut then takes its public path."""


# ------------------------------------------------------------ OTLP encoder helpers
# What for: otlp.SpanEncoder writes spans to wire bytes itself and hands the rare values it
# does not handle (bytes, mappings, huge ints) to the SDK's own per-value encoders, so its
# output equals encode_spans()'s. Public path: the exporter keeps the SDK's encode_spans.
def _encoder_helpers() -> tuple[Any, ...] | None:
    try:
        from opentelemetry.exporter.otlp.proto.common._internal import (
            _encode_instrumentation_scope,
            _encode_key_value,
            _encode_resource,
        )
        from opentelemetry.exporter.otlp.proto.common._internal import (
            _logger as encoder_logger,
        )
        from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
            _SPAN_KIND_MAP,
        )
    except ImportError:
        return None
    if not all(callable(helper) for helper in (
            _encode_instrumentation_scope, _encode_key_value, _encode_resource)):
        return None
    if set(_SPAN_KIND_MAP) != set(SpanKind):
        return None
    return (_encode_instrumentation_scope, _encode_key_value, _encode_resource,
            encoder_logger, _SPAN_KIND_MAP)


def _unavailable(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("the SDK's OTLP encoder helpers are not available (see fast_paths())")


_helpers = _encoder_helpers() if ENABLED else None
FAST_ENCODER: Final = _helpers is not None
"""The SDK's encoder helpers are there: ``configure()`` gives the gRPC exporter our encoder."""
if _helpers is not None:
    (encode_instrumentation_scope, encode_key_value, encode_resource, encoder_logger,
     SPAN_KIND_MAP) = _helpers
else:
    encode_instrumentation_scope = encode_key_value = encode_resource = _unavailable
    encoder_logger = None
    # The same mapping from the public protobuf enum (only used when the encoder is not).
    SPAN_KIND_MAP = {kind: PB2Span.SpanKind.Value(f"SPAN_KIND_{kind.name}")
                     for kind in SpanKind}


def _encodes_nulls() -> bool:
    """Whether the SDK encodes a None value (alone or in a list) as an empty AnyValue;
    older releases log an error and drop the attribute, and so must we then."""
    try:
        encode_key_value("k", ("a", None))
        encode_key_value("k", None)
    except Exception:
        return False
    return True


ENCODES_NULLS: Final = FAST_ENCODER and _encodes_nulls()


# ------------------------------------------------------------ gRPC exporter stub
# What for: otlp._send_bytes swaps the OTLP/gRPC span exporter's stub class and client
# (``_stub``, ``_client``, built on ``_channel``) for one that sends the encoder's bytes
# without parsing them back into a message, and ``_translate_data`` for our encoder. These
# are instance attributes, so the shape is checked per exporter. Public path: the exporter
# keeps its own stub (our encoder's bytes parsed into a message) or its own encoder.
def exporter_translate_hook(exporter: Any) -> bool:
    """The exporter has the ``_translate_data`` method our encoder replaces."""
    return ENABLED and callable(getattr(type(exporter), "_translate_data", None))


def set_translate(exporter: Any, translate: Callable[[Sequence[ReadableSpan]], Any]) -> None:
    """Make ``exporter`` encode with ``translate`` (see :func:`exporter_translate_hook`)."""
    exporter._translate_data = translate


def swap_export_stub(exporter: Any, expected_stub: type, stub: Callable[[Any], Any]) -> bool:
    """Give the exporter ``stub`` (a class taking the channel); False, changing nothing,
    when the exporter is not laid out as expected."""
    if not ENABLED or getattr(exporter, "_stub", None) is not expected_stub or not hasattr(
            exporter, "_channel") or getattr(exporter, "_client", None) is None:
        return False
    exporter._stub = stub  # a reconnect builds its client from this class
    exporter._client = stub(exporter._channel)
    return True


# ------------------------------------------------------------ OTLP/HTTP exporter's encoder
# What for: otlp_http gives the SDK's OTLP/HTTP span exporter our encoder. That exporter has
# no encoding hook: its ``export`` calls ``encode_spans(spans).SerializePartialToString()``
# (``encode_spans`` a global of its module), then posts the bytes with its own size limit,
# compression, timeouts, retries and metrics (inside ``export`` up to 1.44, in its
# ``_client`` since 1.45). The exporter gets a copy of that ``export`` whose globals name our
# encoder ``encode_spans``: the SDK's own code, run on our bytes, in every release. Checked:
# ``export`` is a plain function that reads the global ``encode_spans`` and calls
# ``SerializePartialToString``, and that global is the SDK's public ``encode_spans``. Public
# path: the stock exporter, with the SDK's encoder.
@functools.cache
def _http_export() -> types.FunctionType | None:
    """The exporter's ``export`` when it is as checked; looked at on first use, since
    importing the HTTP exporter (and ``requests``) costs a gRPC-only program 20 ms."""
    if not FAST_ENCODER:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return None
    export = vars(OTLPSpanExporter).get("export")
    if not isinstance(export, types.FunctionType):
        return None
    names = export.__code__.co_names
    if "encode_spans" not in names or "SerializePartialToString" not in names:
        return None
    if export.__globals__.get("encode_spans") is not encode_spans:
        return None
    return export


def http_encoder_available() -> bool:
    """The OTLP/HTTP span exporter can take our encoder (see :func:`set_http_encoder`)."""
    return _http_export() is not None


def set_http_encoder(exporter: Any, encode: Callable[[Sequence[ReadableSpan]], Any]) -> bool:
    """Make the SDK's OTLP/HTTP span ``exporter`` run its own ``export`` with ``encode`` in
    place of ``encode_spans`` (``encode`` returns an object whose
    ``SerializePartialToString()`` gives the request bytes); False, changing nothing, when
    this SDK is not laid out as expected or the exporter is of a subclass (whose export
    may differ)."""
    original = _http_export()
    if original is None or vars(type(exporter)).get("export") is not original:
        return False
    # The module's globals as they are now (they are set at import and not changed after),
    # with one name bound to our encoder; the module itself is left alone.
    namespace = dict(original.__globals__)
    namespace["encode_spans"] = encode
    export = types.FunctionType(original.__code__, namespace, original.__name__,
                                original.__defaults__, original.__closure__)
    export.__kwdefaults__ = original.__kwdefaults__
    export.__qualname__ = original.__qualname__
    exporter.export = types.MethodType(export, exporter)
    return True


# ------------------------------------------------------------ span containers
# What for: otlp._dropped_counts reads a span's attribute/event/link containers
# (``_attributes``, ``_events``, ``_links``) to get their drop counts without the properties'
# ABC isinstance checks (a tenth of a span's encoding). Public path: the dropped_* properties.
def _span_containers_readable() -> bool:
    span = ReadableSpan("probe", attributes={"k": 1}, events=(SpanEvent("e"),))
    try:
        return (span._attributes == {"k": 1} and len(span._events) == 1
                and len(span._links) == 0)
    except AttributeError:
        return False


SPAN_CONTAINERS: Final = ENABLED and _span_containers_readable()


def span_containers(span: ReadableSpan) -> tuple[Any, Any, Any]:
    """The span's attribute, event and link containers (only when SPAN_CONTAINERS)."""
    return span._attributes, span._events, span._links


# ------------------------------------------------------------ ReadableSpan(...)
# What for: the mirror builds each finished span as a ReadableSpan with positional
# arguments, a little faster than keywords on its hottest path. Checked: the constructor's
# parameter names in the order we pass them. Public path: the same call by keyword.
_READABLE_SPAN_ORDER: Final = ("name", "context", "parent", "resource", "attributes",
                               "events", "links", "kind", "instrumentation_info", "status",
                               "start_time", "end_time", "instrumentation_scope")


def _positional_order_holds() -> bool:
    code = ReadableSpan.__init__.__code__
    names = code.co_varnames[1:code.co_argcount]  # after self; positional-or-keyword ones
    return tuple(names[:len(_READABLE_SPAN_ORDER)]) == _READABLE_SPAN_ORDER


READABLE_SPAN_POSITIONAL: Final = ENABLED and _positional_order_holds()


def _readable_span_by_keyword(name: str, context: Any, parent: Any, resource: Any,
                              attributes: Any, events: Any, links: Any, kind: Any,
                              instrumentation_info: Any, status: Any, start_time: Any,
                              end_time: Any, instrumentation_scope: Any) -> ReadableSpan:
    del instrumentation_info  # deprecated; always None here
    return ReadableSpan(name=name, context=context, parent=parent, resource=resource,
                        attributes=attributes, events=events, links=links, kind=kind,
                        status=status, start_time=start_time, end_time=end_time,
                        instrumentation_scope=instrumentation_scope)


new_readable_span: Callable[..., ReadableSpan] = (
    ReadableSpan if READABLE_SPAN_POSITIONAL else _readable_span_by_keyword)
"""``ReadableSpan`` called with the arguments in ``_READABLE_SPAN_ORDER``."""


# ------------------------------------------------------------ batch processor drop hooks
# What for: the batch span processor only logs the spans its full queue evicts; config
# replaces its internal metrics hooks (``_batch_processor._metrics``, next to its queue
# ``_queue``, SDK 1.34+) with a counter so export_stats() can report them. Checked: the
# processor's code sets those names. Public path: none exists; dropped spans then stay in
# ``spans_unaccounted`` (and ``spans_dropped`` is 0).
def _batch_drop_hooks_present() -> bool:
    try:
        from opentelemetry.sdk._shared_internal import BatchProcessor
    except ImportError:
        return False
    outer = BatchSpanProcessor.__init__.__code__.co_names
    inner = BatchProcessor.__init__.__code__.co_names
    return "_batch_processor" in outer and {"_metrics", "_queue"} <= set(inner)


BATCH_DROP_HOOKS: Final = ENABLED and _batch_drop_hooks_present()


def replace_batch_metrics(processor: BatchSpanProcessor,
                          make: Callable[[Any, Any], Any]) -> Any | None:
    """Replace the processor's metrics hooks by ``make(hooks, queue)``; None when this SDK
    has no such hooks."""
    batch = getattr(processor, "_batch_processor", None) if BATCH_DROP_HOOKS else None
    if batch is None or not hasattr(batch, "_metrics") or not hasattr(batch, "_queue"):
        return None
    replacement = make(batch._metrics, batch._queue)
    batch._metrics = replacement
    return replacement


# ------------------------------------------------------------ provider's span processor
# What for: the mirror hands the spans it builds to the TracerProvider's own multi-processor
# (``_active_span_processor``), as the SDK's spans do on end(), so they reach every processor
# the application added. Checked: a provider has it, with on_end. Public path: for a
# provider configure() creates, the multi-processor it passes in (always taken). For one
# the application made there is none, so OTEL_AGENTBUS_SDK_INTERNALS=off leaves this on;
# without it, configure(tracer_provider=...) fails with a ConfigurationError saying so.
def _active_processor_present() -> bool:
    provider = TracerProvider(shutdown_on_exit=False)
    return callable(getattr(getattr(provider, "_active_span_processor", None), "on_end", None))


ACTIVE_SPAN_PROCESSOR: Final = _active_processor_present()


def span_processor_of(provider: TracerProvider) -> SpanProcessor | None:
    """The provider's multi-processor, or None when this SDK does not expose one."""
    if not ACTIVE_SPAN_PROCESSOR:
        return None
    processor: SpanProcessor | None = getattr(provider, "_active_span_processor", None)
    return processor


def fast_paths() -> dict[str, bool]:
    """Which shortcuts are active (False: the public path is used)."""
    return {
        "fast_encoder": FAST_ENCODER,
        "http_encoder": http_encoder_available(),
        "encodes_nulls": ENCODES_NULLS,
        "span_containers": SPAN_CONTAINERS,
        "readable_span_positional": READABLE_SPAN_POSITIONAL,
        "batch_drop_hooks": BATCH_DROP_HOOKS,
        "active_span_processor": ACTIVE_SPAN_PROCESSOR,
    }
