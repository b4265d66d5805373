"""otel-agentbus: an OpenTelemetry-native event bus for agent runtimes.

Publish what your agent does as :class:`Event` objects on an :class:`EventBus`; subscribers
get them in-process, and the telemetry mirror turns them into traces, span events and
metrics exported over OTLP.

``Telemetry`` and ``configure`` load on first use: importing the bus, events, filters and
subscriptions needs the OpenTelemetry API only; the SDK loads when telemetry is configured.
"""

from typing import TYPE_CHECKING, Any

from .bus import BusClosedError, BusStats, EventBus, PublishResult
from .events import (
    Correlation,
    Event,
    EventValidationError,
    Scope,
    Severity,
    Source,
)
from .filters import EventFilter, InvalidFilterError, make_filter
from .handles import SpanHandle, current_handle, publish_start
from .kinds import Delivery, UnknownKindError, is_must_deliver, known_kinds
from .recording import NoScopeError, decision, outcome, problem
from .subscribe_options import SubscribeOptions
from .subscription import (
    Backpressure,
    Concurrency,
    ErrorPolicy,
    InvalidSubscriptionError,
    SubscriberStats,
    Subscription,
    SubscriptionClosedError,
)

if TYPE_CHECKING:
    from .telemetry.config import Telemetry, configure

__version__ = "0.1.0"

__all__ = [
    "Backpressure",
    "BusClosedError",
    "BusStats",
    "Concurrency",
    "Correlation",
    "Delivery",
    "ErrorPolicy",
    "Event",
    "EventBus",
    "EventFilter",
    "EventValidationError",
    "InvalidFilterError",
    "InvalidSubscriptionError",
    "NoScopeError",
    "PublishResult",
    "Scope",
    "Severity",
    "Source",
    "SpanHandle",
    "SubscribeOptions",
    "SubscriberStats",
    "Subscription",
    "SubscriptionClosedError",
    "Telemetry",
    "UnknownKindError",
    "__version__",
    "configure",
    "current_handle",
    "decision",
    "is_must_deliver",
    "known_kinds",
    "make_filter",
    "outcome",
    "problem",
    "publish_start",
]


def __getattr__(name: str) -> Any:
    if name in ("Telemetry", "configure"):
        from .telemetry import config

        value = getattr(config, name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
