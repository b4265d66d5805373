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
from .handles import SpanHandle, current_handle, publish_start
from .kinds import Delivery, UnknownKindError, is_must_deliver, known_kinds
from .recording import NoScopeError, decision, outcome, problem
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
    "NoScopeError",
    "PublishResult",
    "Scope",
    "Severity",
    "Source",
    "SpanHandle",
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
