"""The event envelope: one immutable record of something an agent did.

``Event`` is a slotted class rather than a pydantic model because it is built on every
publish: its constructor checks and freezes the payload in one pass (a few microseconds
for a typical payload). Pydantic validates the JSON wire form (see :mod:`otel_agentbus.wire`),
where untrusted input enters.
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias, cast

from .kinds import KNOWN_KINDS, MUST_DELIVER_KINDS, validate_kind
from .payload import MAX_DEPTH, Leaves, walker

JSONValue: TypeAlias = Any
"""A JSON value as the bus stores it: str, int, float, bool, None, tuple, mapping."""

MAX_NESTING: Final = MAX_DEPTH
"""Deeper payloads are rejected: real payloads are shallow, cycles are infinitely deep
(the package's one limit, :data:`otel_agentbus.payload.MAX_DEPTH`)."""


class Severity(enum.StrEnum):
    """Operational severity, as in seed 004."""

    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


class Source(NamedTuple):
    """Which component published the event (for example ``("tool", "search")``)."""

    component: str = ""
    name: str = ""


class Scope(NamedTuple):
    """Who the event belongs to: the union of the seeds' scope fields."""

    run_id: str | None = None
    """The run (Hive's ``execution_id``)."""
    stream_id: str | None = None
    node_id: str | None = None
    agent: str | None = None
    session_id: str | None = None
    """The session or conversation; becomes ``gen_ai.conversation.id``."""
    turn_id: str | None = None
    graph_id: str | None = None
    # Routing fields of PicoClaw's scope (seed 004): which runtime, and where a message
    # came from or goes to. Appended after the fields above so positional use stays valid.
    runtime_id: str | None = None
    channel: str | None = None
    """The messaging channel (``telegram``, ``slack``, ...)."""
    account: str | None = None
    chat_id: str | None = None
    topic_id: str | None = None
    space_id: str | None = None
    space_type: str | None = None
    chat_type: str | None = None
    sender_id: str | None = None
    message_id: str | None = None


class Correlation(NamedTuple):
    """Cross-event and cross-system identifiers.

    ``trace_id`` and ``span_id`` (lower-case hex) are stamped at publish time with the span
    the event belongs to, so subscribers, logs and traces meet on one trace id.
    """

    trace_id: str | None = None
    span_id: str | None = None
    parent_span_id: str | None = None
    correlation_id: str | None = None
    request_id: str | None = None
    parent_turn_id: str | None = None
    """The turn that spawned this one (PicoClaw sub-turns, seed 004)."""
    reply_to_id: str | None = None
    """The message this event answers (seed 004)."""


class EventValidationError(ValueError):
    """An event that cannot be published; the message names the field and the problem."""


_freeze = walker(Leaves.REJECT, freeze=True, error=EventValidationError)
"""``_freeze(value, where, depth)``: checks that ``value`` is JSON data and returns it
immutable (read-only mappings, tuples), the error naming the field by ``where``."""


EMPTY_SOURCE: Final = Source()
EMPTY_SCOPE: Final = Scope()
EMPTY_CORRELATION: Final = Correlation()
_EMPTY_MAPPING: Final[Mapping[str, JSONValue]] = MappingProxyType({})

_id_prefix: Final = os.urandom(6).hex() + "-"
"""Random per process; the counter after it is decimal (formatting it as zero-padded hex
cost a fifth of a microsecond per event more)."""
_id_counter = itertools.count(1)


def new_event_id() -> str:
    """A process-unique id: a random prefix plus a counter, far cheaper than uuid4.

    ``Event.__init__`` inlines the same expression.
    """
    return f"{_id_prefix}{next(_id_counter)}"


def freeze_json(value: object, where: str = "payload") -> JSONValue:
    """Check that ``value`` is JSON data and return an immutable copy of it.

    Dicts become read-only mappings and lists become tuples, so no subscriber can change
    what another one sees. ``where`` names the field in the error message.
    """
    return _freeze(value, where, 0)


def thaw_json(value: JSONValue) -> Any:
    """The mutable, plain-JSON form of a frozen value (for ``json.dumps`` and friends)."""
    kind = type(value)
    if kind is MappingProxyType or kind is dict:
        return {key: thaw_json(item) for key, item in value.items()}
    if kind is tuple or kind is list:
        return [thaw_json(item) for item in value]
    return value


def _check_str_fields(value: tuple[Any, ...], field_name: str) -> None:
    for name, item in zip(value._fields, value, strict=True):  # type: ignore[attr-defined]
        if item is not None and type(item) is not str:
            raise EventValidationError(
                f"{field_name}.{name} must be a str or None, got {type(item).__name__}"
            )


def _check_source(source: Source) -> None:
    for name, item in zip(source._fields, source, strict=True):
        if not isinstance(item, str):
            raise EventValidationError(f"source.{name} must be a str, got {type(item).__name__}")


class Event:
    """One immutable event.

    ``seq`` is the per-bus sequence number, given at publish: a subscriber that sees a gap
    in it knows events were published that it did not get (filtered out or dropped; the
    subscription's stats say which).
    """

    __slots__ = (
        "_must_deliver",
        "_span_context",
        "attrs",
        "correlation",
        "id",
        "kind",
        "payload",
        "scope",
        "seq",
        "severity",
        "source",
        "time_ns",
    )

    id: str
    kind: str
    time_ns: int
    source: Source
    scope: Scope
    correlation: Correlation
    severity: Severity
    payload: Mapping[str, JSONValue]
    attrs: Mapping[str, JSONValue]
    seq: int | None
    _must_deliver: bool
    _span_context: object

    def __init__(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        source: Source = EMPTY_SOURCE,
        scope: Scope = EMPTY_SCOPE,
        correlation: Correlation = EMPTY_CORRELATION,
        severity: Severity | str = Severity.INFO,
        attrs: Mapping[str, Any] | None = None,
        id: str | None = None,
        time_ns: int | None = None,
    ) -> None:
        if kind not in KNOWN_KINDS:
            kind = validate_kind(kind)  # an alias (kinds.KIND_ALIASES) becomes its kind
        if scope is not EMPTY_SCOPE:
            if type(scope) is not Scope:
                raise EventValidationError(f"scope must be a Scope, got {type(scope).__name__}")
            for item in scope:
                if item is not None and type(item) is not str:
                    _check_str_fields(scope, "scope")
        if source is not EMPTY_SOURCE:
            if type(source) is not Source:
                raise EventValidationError(f"source must be a Source, got {type(source).__name__}")
            if type(source[0]) is not str or type(source[1]) is not str:
                _check_source(source)
        if correlation is not EMPTY_CORRELATION:
            if type(correlation) is not Correlation:
                raise EventValidationError(
                    f"correlation must be a Correlation, got {type(correlation).__name__}"
                )
            _check_str_fields(correlation, "correlation")
        if type(severity) is not Severity:
            try:
                severity = Severity(severity)
            except ValueError:
                raise EventValidationError(
                    f"severity {severity!r} is not one of {[s.value for s in Severity]}"
                ) from None
        if payload is None:
            frozen_payload: Mapping[str, JSONValue] = _EMPTY_MAPPING
        elif type(payload) is dict or isinstance(payload, Mapping):
            frozen_payload = _freeze(payload, "payload", 0)
        else:
            raise EventValidationError(
                f"payload must be a mapping with str keys, got {type(payload).__name__}"
            )
        if attrs is None:
            frozen_attrs: Mapping[str, JSONValue] = _EMPTY_MAPPING
        elif isinstance(attrs, Mapping):
            frozen_attrs = _freeze(attrs, "attrs", 0)
        else:
            raise EventValidationError(f"attrs must be a mapping, got {type(attrs).__name__}")
        if time_ns is None:
            time_ns = _time_ns()
        elif type(time_ns) is not int or time_ns < 0:
            raise EventValidationError(f"time_ns must be a non-negative int, got {time_ns!r}")
        if id is None:
            id = f"{_id_prefix}{next(_id_counter)}"
        elif type(id) is not str or not id:
            raise EventValidationError(f"id must be a non-empty str, got {id!r}")
        _fill(self, id, kind, time_ns, source, scope, correlation, severity, frozen_payload,
              frozen_attrs)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"Event is immutable: cannot set {name!r}; use event.replace({name}=...) for a copy"
        )

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Event is immutable: cannot delete {name!r}")

    @property
    def must_deliver(self) -> bool:
        """True when backpressure may never drop this event (see :mod:`otel_agentbus.kinds`)."""
        return self._must_deliver

    @property
    def timestamp(self) -> datetime:
        """The event time as an aware UTC datetime (microsecond precision)."""
        return datetime.fromtimestamp(self.time_ns / 1e9, tz=UTC)

    @property
    def run_id(self) -> str | None:
        return self.scope.run_id

    @property
    def trace_id(self) -> str | None:
        return self.correlation.trace_id

    @property
    def span_id(self) -> str | None:
        return self.correlation.span_id

    def replace(self, **changes: Any) -> Event:
        """A validated copy with some fields changed (a new id unless ``id`` is given)."""
        fields: dict[str, Any] = {
            "payload": self.payload,
            "source": self.source,
            "scope": self.scope,
            "correlation": self.correlation,
            "severity": self.severity,
            "attrs": self.attrs,
            "time_ns": self.time_ns,
        }
        kind = changes.pop("kind", self.kind)
        unknown = set(changes) - set(fields) - {"id"}
        if unknown:
            raise TypeError(f"Event.replace() got unknown field(s): {sorted(unknown)}")
        fields.update(changes)
        return Event(kind, **fields)

    def _copy_unpublished(self) -> Event:
        """A copy with no sequence number, so one Event object can be published again."""
        clone = object.__new__(Event)
        for name in Event.__slots__:
            object.__setattr__(clone, name, getattr(self, name))
        object.__setattr__(clone, "seq", None)
        return clone

    def _stamp(self, seq: int) -> None:
        """Give the event its bus sequence number; done once, before anyone sees it."""
        _set_seq(self, seq)

    def _stamp_correlation(self, correlation: Correlation, span_context: object = None) -> None:
        """Set the trace context the event belongs to; done before delivery.

        ``span_context`` is the OpenTelemetry SpanContext itself (with its sampled flag),
        kept so helpers can make the event's span current without re-parsing hex ids.
        """
        _set_correlation(self, correlation)
        _set_span_context(self, span_context)

    def to_dict(self) -> dict[str, Any]:
        """The plain-JSON form; ``Event.from_dict(e.to_dict()) == e``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "time_unix_nano": self.time_ns,
            "source": self.source._asdict(),
            "scope": {k: v for k, v in self.scope._asdict().items() if v is not None},
            "correlation": {
                k: v for k, v in self.correlation._asdict().items() if v is not None
            },
            "severity": self.severity.value,
            "payload": thaw_json(self.payload),
            "attrs": thaw_json(self.attrs),
            "seq": self.seq,
        }

    def to_json(self) -> str:
        """Compact JSON text of :meth:`to_dict`."""
        from .wire import dumps

        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Validate a plain-JSON event (pydantic) and build it; raises EventValidationError."""
        from .wire import event_from_mapping

        return event_from_mapping(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse and validate JSON text produced by :meth:`to_json` (or by another runtime)."""
        from .wire import event_from_json

        return event_from_json(text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _COMPARED)

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        scope = ", ".join(f"{k}={v!r}" for k, v in self.scope._asdict().items() if v is not None)
        return f"Event({self.kind!r}, seq={self.seq}, {scope or 'no scope'}, id={self.id!r})"


def _slot_setter(name: str) -> Callable[[Event, Any], None]:
    """The slot's own setter: bypasses Event.__setattr__ (which refuses writes) at C speed."""
    return cast(Callable[[Event, Any], None], Event.__dict__[name].__set__)


_set_id = _slot_setter("id")
_set_kind = _slot_setter("kind")
_set_time_ns = _slot_setter("time_ns")
_set_source = _slot_setter("source")
_set_scope = _slot_setter("scope")
_set_correlation = _slot_setter("correlation")
_set_severity = _slot_setter("severity")
_set_payload = _slot_setter("payload")
_set_attrs = _slot_setter("attrs")
_set_seq = _slot_setter("seq")
_set_must_deliver = _slot_setter("_must_deliver")
_set_span_context = _slot_setter("_span_context")
_time_ns = time.time_ns


def _fill(event: Event, id: str, kind: str, time_ns: int, source: Source, scope: Scope,
          correlation: Correlation, severity: Severity, payload: Mapping[str, JSONValue],
          attrs: Mapping[str, JSONValue]) -> None:
    """Set every slot of a new, unpublished event from checked values."""
    _set_id(event, id)
    _set_kind(event, kind)
    _set_time_ns(event, time_ns)
    _set_source(event, source)
    _set_scope(event, scope)
    _set_correlation(event, correlation)
    _set_severity(event, severity)
    _set_payload(event, payload)
    _set_attrs(event, attrs)
    _set_seq(event, None)
    _set_must_deliver(event, kind in MUST_DELIVER_KINDS)
    _set_span_context(event, None)
_COMPARED: Final = tuple(name for name in Event.__slots__ if name != "_span_context")
"""The span context object is a local cache of ``correlation``; equality ignores it."""
_new_object = object.__new__


def _library_event(
    kind: str, payload: Mapping[str, Any], scope: Scope, source: Source,
    severity: Severity = Severity.INFO, *, frozen: bool = False,
) -> Event:
    """The ``Event(...)`` the library's own instrumentation publishes, built without
    re-checking what the library has checked already (a known kind, a Scope and a Source of
    str fields, a Severity): one tool call publishes two of these, and those checks were a
    third of an event's cost. The payload is frozen and validated here (it carries the
    caller's arguments and results) unless ``frozen`` says the caller built it of str,
    int, bool and already frozen values, in a dict nobody else holds."""
    if frozen:
        payload = MappingProxyType(payload)
    elif payload:
        payload = _freeze(payload, "payload", 0)
    else:
        payload = _EMPTY_MAPPING
    event: Event = _new_object(Event)
    _fill(event, f"{_id_prefix}{next(_id_counter)}", kind, _time_ns(), source, scope,
          EMPTY_CORRELATION, severity, payload, _EMPTY_MAPPING)
    return event
