"""Telemetry: the mirror from bus events to OpenTelemetry spans, span events and metrics.

The names below load on first use: ``telemetry.content`` and ``telemetry.context`` need the
OpenTelemetry API only, and importing them must not pull in the SDK through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import ConfigurationError, CountingSpanExporter, Telemetry, configure
    from .content import CaptureMode, ContentPolicy
    from .context import (
        context_of,
        inject_traceparent,
        span_context_of,
        traceparent_from,
        use_span_of,
        with_current_context,
    )
    from .logs import TraceContextFilter, install_trace_context
    from .mirror import TelemetryMirror
    from .signals import install_signal_handlers, uninstall_signal_handlers

_HOMES: dict[str, str] = {
    "CaptureMode": ".content",
    "ConfigurationError": ".config",
    "ContentPolicy": ".content",
    "CountingSpanExporter": ".config",
    "Telemetry": ".config",
    "TelemetryMirror": ".mirror",
    "TraceContextFilter": ".logs",
    "configure": ".config",
    "context_of": ".context",
    "inject_traceparent": ".context",
    "install_signal_handlers": ".signals",
    "install_trace_context": ".logs",
    "span_context_of": ".context",
    "traceparent_from": ".context",
    "uninstall_signal_handlers": ".signals",
    "use_span_of": ".context",
    "with_current_context": ".context",
}

__all__ = [
    "CaptureMode",
    "ConfigurationError",
    "ContentPolicy",
    "CountingSpanExporter",
    "Telemetry",
    "TelemetryMirror",
    "TraceContextFilter",
    "configure",
    "context_of",
    "inject_traceparent",
    "install_signal_handlers",
    "install_trace_context",
    "span_context_of",
    "traceparent_from",
    "uninstall_signal_handlers",
    "use_span_of",
    "with_current_context",
]


_SUBMODULES = frozenset({"config", "content", "context", "export", "logs", "metrics", "mirror",
                         "otlp", "sdk_internals", "signals"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # ``telemetry.config`` as an attribute, as before
        return importlib.import_module(f".{name}", __name__)
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
