"""The JSON wire form of an event, validated with pydantic where untrusted input enters.

Webhooks, files and other runtimes hand us JSON; this module turns it into an
:class:`~otel_agentbus.events.Event` or says exactly which field is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .events import Correlation, Event, EventValidationError, Scope, Severity, Source


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceModel(_Strict):
    component: str = ""
    name: str = ""


class ScopeModel(_Strict):
    run_id: str | None = None
    stream_id: str | None = None
    node_id: str | None = None
    agent: str | None = None
    session_id: str | None = None
    turn_id: str | None = None
    graph_id: str | None = None
    runtime_id: str | None = None
    channel: str | None = None
    account: str | None = None
    chat_id: str | None = None
    topic_id: str | None = None
    space_id: str | None = None
    space_type: str | None = None
    chat_type: str | None = None
    sender_id: str | None = None
    message_id: str | None = None


class CorrelationModel(_Strict):
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    span_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")
    parent_span_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")
    correlation_id: str | None = None
    request_id: str | None = None
    parent_turn_id: str | None = None
    reply_to_id: str | None = None


class EventModel(_Strict):
    """The JSON schema of an event (``EventModel.model_json_schema()`` documents it)."""

    id: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    time_unix_nano: int = Field(ge=0)
    source: SourceModel = SourceModel()
    scope: ScopeModel = ScopeModel()
    correlation: CorrelationModel = CorrelationModel()
    severity: Severity = Severity.INFO
    payload: dict[str, Any] = Field(default_factory=dict)
    attrs: dict[str, Any] = Field(default_factory=dict)
    seq: int | None = Field(default=None, ge=0)


def dumps(data: Any) -> str:
    """Compact JSON that refuses NaN and infinities (they are not JSON)."""
    return json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def event_from_model(model: EventModel) -> Event:
    """Build the runtime event (kind and payload checks happen in ``Event``)."""
    event = Event(
        model.kind,
        model.payload,
        source=Source(**model.source.model_dump()),
        scope=Scope(**model.scope.model_dump()),
        correlation=Correlation(**model.correlation.model_dump()),
        severity=model.severity,
        attrs=model.attrs,
        id=model.id,
        time_ns=model.time_unix_nano,
    )
    if model.seq is not None:
        event._stamp(model.seq)
    return event


def event_from_mapping(data: Mapping[str, Any]) -> Event:
    """Validate a decoded JSON object and build the event."""
    try:
        model = EventModel.model_validate(dict(data))
    except ValidationError as error:
        raise EventValidationError(f"invalid event: {_describe(error)}") from None
    return event_from_model(model)


def event_from_json(text: str | bytes) -> Event:
    """Parse JSON text (NaN and Infinity literals are refused) and build the event."""

    def refuse_constant(name: str) -> Any:
        raise EventValidationError(f"invalid event: {name} is not valid JSON")

    try:
        data = json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as error:
        raise EventValidationError(f"invalid event JSON: {error}") from None
    if not isinstance(data, dict):
        raise EventValidationError(
            f"invalid event JSON: expected an object, got {type(data).__name__}"
        )
    return event_from_mapping(data)
