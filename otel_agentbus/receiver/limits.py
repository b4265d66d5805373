"""Bounds on what one export request may expand to, enforced while it is decoded.

A 15 MB request holding one span with 1,000,000 attributes used to cost 17x its size in
memory (a Python object per key and value, then a JSON string). Every decoder (the fast
span decoder, the reference converter, OTLP/JSON) charges what it builds to a
:class:`DecodeBudget` as it goes; past a limit the whole request is refused with
:class:`LimitExceeded` (HTTP 413, gRPC RESOURCE_EXHAUSTED) and counted, before anything is
written. Refusing rather than truncating keeps a request atomic (stored whole or not at
all) and the rows of both span decoders identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


class LimitExceeded(ValueError):
    """A request expands past a :class:`DecodeLimits` bound; the message names which."""


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Per-request bounds. The SDK's own defaults are 128 attributes, events and links per
    span, so these leave a wide margin for legitimate senders."""

    max_span_attributes: int = 4096
    """Attributes of one span (also of one event or link)."""
    max_span_events: int = 4096
    max_span_links: int = 1024
    max_request_values: int = 500_000
    """Attribute values in the whole request, nested array and kvlist items included."""
    max_decoded_bytes: int = 128 * 1024 * 1024
    """Characters of the JSON columns built for the whole request."""
    max_json_nodes: int = 2_000_000
    """Objects and arrays in one OTLP/JSON document (counted while it is parsed)."""


DEFAULT_LIMITS: Final = DecodeLimits()


class DecodeBudget:
    """What one request has used so far; each charge raises once a bound is passed."""

    __slots__ = ("_bytes", "_values", "limits")

    def __init__(self, limits: DecodeLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._values = 0
        self._bytes = 0

    def span(self, attributes: int, events: int, links: int) -> None:
        """Check one span's shape before its parts are converted."""
        limits = self.limits
        if attributes > limits.max_span_attributes:
            raise LimitExceeded(
                f"a span has {attributes} attributes; the limit is {limits.max_span_attributes}"
            )
        if events > limits.max_span_events:
            raise LimitExceeded(
                f"a span has {events} events; the limit is {limits.max_span_events}"
            )
        if links > limits.max_span_links:
            raise LimitExceeded(f"a span has {links} links; the limit is {limits.max_span_links}")
        self.values(attributes)

    def attributes(self, count: int) -> None:
        """Check the attribute count of an event, a link, a resource or a data point."""
        if count > self.limits.max_span_attributes:
            raise LimitExceeded(
                f"an item has {count} attributes; the limit is {self.limits.max_span_attributes}"
            )
        self.values(count)

    @property
    def used_values(self) -> int:
        return self._values

    def values(self, count: int) -> None:
        self._values += count
        if self._values > self.limits.max_request_values:
            raise LimitExceeded(
                f"the request holds more than {self.limits.max_request_values} attribute values"
            )

    def decoded(self, size: int) -> None:
        self._bytes += size
        if self._bytes > self.limits.max_decoded_bytes:
            raise LimitExceeded(
                f"the request decodes to more than {self.limits.max_decoded_bytes} bytes"
            )


@dataclass(frozen=True, slots=True)
class HTTPLimits:
    """Connection limits and timeouts of the OTLP/HTTP listener (seconds)."""

    max_connections: int = 256
    """Open connections; one more is answered 503 and closed on arrival."""
    header_timeout: float = 10.0
    """From connecting (or the end of an idle wait) to a request's complete headers."""
    body_timeout: float = 60.0
    """From a request's headers to its complete body (all of it, not between chunks)."""
    idle_timeout: float = 30.0
    """A keep-alive connection with no request in progress is closed after this."""
    max_header_bytes: int = 64 * 1024
    """Request line and headers together."""

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("header_timeout", "body_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
