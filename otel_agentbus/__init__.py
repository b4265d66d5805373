"""otel-agentbus: an OpenTelemetry-native event bus for agent runtimes.

Publish what your agent does as :class:`Event` objects on an :class:`EventBus`; subscribers
get them in-process, and the telemetry mirror turns them into traces, span events and
metrics exported over OTLP.
"""

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
from .kinds import Delivery, UnknownKindError, is_must_deliver, known_kinds
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
from .telemetry import Telemetry, configure

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
    "PublishResult",
    "Scope",
    "Severity",
    "Source",
    "SubscribeOptions",
    "SubscriberStats",
    "Subscription",
    "SubscriptionClosedError",
    "Telemetry",
    "UnknownKindError",
    "__version__",
    "configure",
    "is_must_deliver",
    "known_kinds",
    "make_filter",
]
