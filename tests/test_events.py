"""The event envelope: kinds, immutability, JSON round trip, validation errors."""

from __future__ import annotations

import enum
import json
import math
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_agentbus import (
    Correlation,
    Event,
    EventValidationError,
    Scope,
    Severity,
    Source,
    UnknownKindError,
    is_must_deliver,
    known_kinds,
)
from otel_agentbus.events import MAX_NESTING, thaw_json
from otel_agentbus.kinds import KNOWN_KINDS, Delivery, kind_info, validate_kind

TRACE = "0123456789abcdef0123456789abcdef"
SPAN = "0123456789abcdef"


def _full_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "source": Source("tool", "search"),
        "scope": Scope(
            run_id="run-1", stream_id="s", node_id="n", agent="writer", session_id="sess",
            turn_id="t1", graph_id="g",
        ),
        "correlation": Correlation(
            trace_id=TRACE, span_id=SPAN, parent_span_id="fedcba9876543210",
            correlation_id="corr", request_id="req",
        ),
        "severity": Severity.WARN,
        "attrs": {"gen_ai.system": "openai", "n": 3},
        "time_ns": 1_700_000_000_123_456_789,
    }
    fields.update(overrides)
    payload = fields.pop("payload", {
        "text": "héllo wörld ✓ 日本語 🚀",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["x", []]}], "empty": {}},
        "big": 2**70,
        "neg": -1.5e-300,
    })
    return Event("agent.tool.call.completed", payload, **fields)


# ----------------------------------------------------------------------------- kinds
@pytest.mark.parametrize("kind", known_kinds())
def test_every_known_kind_is_accepted(kind: str) -> None:
    event = Event(kind)
    assert event.kind == kind
    assert event.must_deliver is (KNOWN_KINDS[kind].delivery is Delivery.MUST_DELIVER)
    assert is_must_deliver(kind) is event.must_deliver


def test_known_kinds_table_has_both_delivery_classes() -> None:
    kinds = known_kinds()
    assert len(kinds) == len(set(kinds)) == len(KNOWN_KINDS)
    assert Event("agent.run.started").must_deliver is True
    assert Event("agent.llm.delta").must_deliver is False
    assert Event("custom").must_deliver is False


@pytest.mark.parametrize("kind", ["custom.x", "custom.my_app.thing", "custom.a.b.c"])
def test_custom_kinds_are_accepted_and_droppable(kind: str) -> None:
    event = Event(kind)
    assert event.kind == kind
    assert event.must_deliver is False
    assert kind_info(kind).delivery is Delivery.DROPPABLE
    assert validate_kind(kind) == kind


@pytest.mark.parametrize("kind", ["agent.run.start", "agent.tool.call", "run.started", "Custom.x",
                                  "", "customx", "agent.run.started "])
def test_unknown_kind_is_an_error_naming_it(kind: str) -> None:
    with pytest.raises(UnknownKindError) as info:
        Event(kind)
    assert repr(kind) in str(info.value)
    assert "custom." in str(info.value)


@pytest.mark.parametrize("kind", ["custom.", "custom..x", "custom.x.", "custom.a..b"])
def test_malformed_custom_kinds_are_rejected(kind: str) -> None:
    with pytest.raises(UnknownKindError) as info:
        Event(kind)
    assert "custom" in str(info.value)


@pytest.mark.parametrize("kind", [None, 3, b"custom.x"])
def test_non_str_kind_is_rejected(kind: object) -> None:
    with pytest.raises(UnknownKindError, match="must be a str"):
        Event(kind)  # type: ignore[arg-type]


def test_unknown_kind_error_is_a_value_error() -> None:
    assert issubclass(UnknownKindError, ValueError)
    assert issubclass(EventValidationError, ValueError)


# ------------------------------------------------------------------------ defaults
def test_defaults() -> None:
    event = Event("custom.x")
    assert event.payload == {}
    assert event.attrs == {}
    assert event.scope == Scope()
    assert event.source == Source("", "")
    assert event.correlation == Correlation()
    assert event.severity is Severity.INFO
    assert event.seq is None
    assert isinstance(event.id, str) and event.id
    assert event.time_ns > 0
    assert event.run_id is None and event.trace_id is None and event.span_id is None


def test_ids_are_unique() -> None:
    ids = {Event("custom.x").id for _ in range(1000)}
    assert len(ids) == 1000


def test_severity_from_string() -> None:
    assert Event("custom.x", severity="warn").severity is Severity.WARN
    assert Event("custom.x", severity=Severity.ERROR).severity is Severity.ERROR


def test_accessors() -> None:
    event = _full_event()
    assert event.run_id == "run-1"
    assert event.trace_id == TRACE
    assert event.span_id == SPAN
    assert event.timestamp.year == 2023
    assert event.timestamp.tzinfo is not None


# ------------------------------------------------------------------- immutability
@pytest.mark.parametrize("name", ["kind", "payload", "seq", "scope", "id", "new_attribute"])
def test_setattr_raises(name: str) -> None:
    event = Event("custom.x", {"a": 1})
    with pytest.raises(AttributeError, match="immutable"):
        setattr(event, name, "changed")
    assert event.kind == "custom.x"
    assert event.seq is None


def test_delattr_raises() -> None:
    event = Event("custom.x", {"a": 1})
    with pytest.raises(AttributeError, match="immutable"):
        del event.payload
    assert event.payload == {"a": 1}


def test_payload_is_deeply_read_only() -> None:
    event = Event("custom.x", {"d": {"x": 1, "l": [1, {"y": 2}]}, "l": [1, 2]})
    assert isinstance(event.payload, MappingProxyType)
    with pytest.raises(TypeError):
        event.payload["new"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        event.payload["d"]["x"] = 2
    with pytest.raises(TypeError):
        del event.payload["d"]["x"]
    assert event.payload["l"] == (1, 2)
    assert isinstance(event.payload["d"]["l"], tuple)
    with pytest.raises(AttributeError):
        event.payload["l"].append(3)
    with pytest.raises(TypeError):
        event.payload["d"]["l"][1]["y"] = 3
    assert thaw_json(event.payload) == {"d": {"x": 1, "l": [1, {"y": 2}]}, "l": [1, 2]}


def test_attrs_are_read_only() -> None:
    event = Event("custom.x", attrs={"a": [1]})
    with pytest.raises(TypeError):
        event.attrs["a"] = 2  # type: ignore[index]
    assert event.attrs["a"] == (1,)


def test_callers_mutations_after_construction_do_not_leak_in() -> None:
    inner = {"x": 1}
    items = [1, 2]
    payload: dict[str, Any] = {"inner": inner, "items": items, "top": "v"}
    attrs: dict[str, Any] = {"k": [1]}
    event = Event("custom.x", payload, attrs=attrs)
    payload["top"] = "changed"
    payload["added"] = True
    inner["x"] = 99
    items.append(3)
    attrs["k"].append(2)
    assert thaw_json(event.payload) == {"inner": {"x": 1}, "items": [1, 2], "top": "v"}
    assert thaw_json(event.attrs) == {"k": [1]}


def test_str_and_int_subclasses_are_stored_as_plain_values() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    class Key(str):
        pass

    event = Event("custom.x", {Key("k"): Color.RED, "level": Level.HIGH})
    (key,) = [k for k in event.payload if k == "k"]
    assert type(key) is str
    assert type(event.payload["k"]) is str and event.payload["k"] == "red"
    assert type(event.payload["level"]) is int and event.payload["level"] == 3
    assert Event.from_json(event.to_json()) == event


def test_mappingproxy_and_tuple_inputs_are_accepted() -> None:
    event = Event("custom.x", MappingProxyType({"t": (1, (2, 3))}))
    assert event.payload == {"t": (1, (2, 3))}


def test_replace_makes_a_validated_copy() -> None:
    event = _full_event()
    copy = event.replace(severity="error", payload={"a": 1})
    assert copy.severity is Severity.ERROR
    assert copy.payload == {"a": 1}
    assert copy.id != event.id
    assert copy.scope == event.scope and copy.kind == event.kind
    assert event.severity is Severity.WARN
    same_id = event.replace(id=event.id)
    assert same_id == event
    with pytest.raises(TypeError, match="seq"):
        event.replace(seq=5)
    with pytest.raises(UnknownKindError):
        event.replace(kind="nope")


def test_equality_and_hash() -> None:
    event = _full_event()
    twin = Event.from_json(event.to_json())
    assert twin == event and hash(twin) == hash(event)
    assert twin is not event
    assert event != _full_event()  # different id
    assert event != "not an event"
    assert event.replace(id=event.id, severity="error") != event


# ------------------------------------------------------------------- JSON round trip
def test_json_round_trip_full_event() -> None:
    event = _full_event()
    event._stamp(41)
    text = event.to_json()
    back = Event.from_json(text)
    assert back == event
    assert back.seq == 41
    assert back.correlation == event.correlation
    assert back.scope == event.scope
    assert back.payload["text"] == "héllo wörld ✓ 日本語 🚀"
    assert back.payload["big"] == 2**70
    assert back.must_deliver is event.must_deliver
    # Non-ASCII is written as is; the JSON is compact.
    assert "日本語" in text and ": " not in text
    assert Event.from_json(text.encode()) == event
    assert Event.from_dict(json.loads(text)) == event


def test_to_dict_shape() -> None:
    event = Event("agent.run.started", {"a": [1]}, scope=Scope(run_id="r"),
                  id="abc", time_ns=5)
    assert event.to_dict() == {
        "id": "abc",
        "kind": "agent.run.started",
        "time_unix_nano": 5,
        "source": {"component": "", "name": ""},
        "scope": {"run_id": "r"},
        "correlation": {},
        "severity": "info",
        "payload": {"a": [1]},
        "attrs": {},
        "seq": None,
    }


def test_round_trip_of_unpublished_and_minimal_events() -> None:
    event = Event("custom.x")
    back = Event.from_json(event.to_json())
    assert back == event and back.seq is None
    minimal = Event.from_json('{"id":"i","kind":"agent.error","time_unix_nano":0}')
    assert minimal.kind == "agent.error" and minimal.time_ns == 0
    assert minimal.payload == {} and minimal.severity is Severity.INFO


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
_maybe_text = st.none() | st.text(min_size=1, max_size=10)
_hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
_hex16 = st.text("0123456789abcdef", min_size=16, max_size=16)


@settings(max_examples=200, deadline=None)
@given(
    payload=st.dictionaries(st.text(max_size=10), _json_values, max_size=6),
    attrs=st.dictionaries(st.text(max_size=10), _json_scalars, max_size=3),
    kind=st.sampled_from(known_kinds()) | st.from_regex(r"custom\.[a-z]{1,5}(\.[a-z_]{1,5})?",
                                                          fullmatch=True),
    scope=st.builds(Scope, run_id=_maybe_text, stream_id=_maybe_text, node_id=_maybe_text,
                    agent=_maybe_text, session_id=_maybe_text, turn_id=_maybe_text,
                    graph_id=_maybe_text),
    correlation=st.builds(Correlation, trace_id=st.none() | _hex32, span_id=st.none() | _hex16,
                          parent_span_id=st.none() | _hex16, correlation_id=_maybe_text,
                          request_id=_maybe_text),
    source=st.builds(Source, st.text(max_size=5), st.text(max_size=5)),
    severity=st.sampled_from(list(Severity)),
    seq=st.none() | st.integers(min_value=0, max_value=2**63),
    time_ns=st.integers(min_value=0, max_value=2**64),
)
def test_json_round_trip_property(
    payload: dict[str, Any], attrs: dict[str, Any], kind: str, scope: Scope,
    correlation: Correlation, source: Source, severity: Severity, seq: int | None,
    time_ns: int,
) -> None:
    event = Event(kind, payload, attrs=attrs, scope=scope, correlation=correlation,
                  source=source, severity=severity, time_ns=time_ns)
    if seq is not None:
        event._stamp(seq)
    back = Event.from_json(event.to_json())
    assert back == event
    assert back.seq == seq
    assert thaw_json(back.payload) == payload
    assert thaw_json(back.attrs) == attrs
    assert back.to_json() == event.to_json()


# -------------------------------------------------------------------------- bad input
class _Opaque:
    pass


@pytest.mark.parametrize(
    ("payload", "where", "what"),
    [
        ({"b": b"bytes"}, "payload.b", "bytes"),
        ({"s": {1, 2}}, "payload.s", "set"),
        ({"o": _Opaque()}, "payload.o", "_Opaque"),
        ({"f": frozenset()}, "payload.f", "frozenset"),
        ({"deep": {"list": [1, {"x": object()}]}}, "payload.deep.list[1].x", "object"),
        ({"n": math.nan}, "payload.n", "nan"),
        ({"n": math.inf}, "payload.n", "inf"),
        ({"n": -math.inf}, "payload.n", "-inf"),
        ({"l": [1.0, float("nan")]}, "payload.l[1]", "nan"),
    ],
)
def test_non_json_payload_values_are_rejected(payload: dict[str, Any], where: str,
                                               what: str) -> None:
    with pytest.raises(EventValidationError) as info:
        Event("custom.x", payload)
    message = str(info.value)
    assert message.startswith(where + ":"), message
    assert what in message


def test_non_finite_float_message_mentions_json() -> None:
    with pytest.raises(EventValidationError, match="not a finite number"):
        Event("custom.x", {"n": math.nan})


@pytest.mark.parametrize("key", [1, None, ("t",), 2.5, b"k"])
def test_non_str_keys_are_rejected(key: object) -> None:
    with pytest.raises(EventValidationError) as info:
        Event("custom.x", {"outer": {key: 1}})
    message = str(info.value)
    assert message.startswith("payload.outer:")
    assert repr(key) in message and "JSON keys are strings" in message


def test_attrs_are_checked_too() -> None:
    with pytest.raises(EventValidationError, match=r"^attrs\.a: a bytes"):
        Event("custom.x", attrs={"a": b""})
    with pytest.raises(EventValidationError, match="attrs must be a mapping"):
        Event("custom.x", attrs=[("a", 1)])  # type: ignore[arg-type]


def test_self_referencing_dict_is_rejected() -> None:
    cycle: dict[str, Any] = {"a": 1}
    cycle["self"] = cycle
    with pytest.raises(EventValidationError, match="nested deeper than"):
        Event("custom.x", cycle)


def test_self_referencing_list_is_rejected() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(EventValidationError, match=r"^payload\.l\[1\]\[1\].*nested deeper"):
        Event("custom.x", {"l": loop})


def _nested(levels: int) -> dict[str, Any]:
    """A payload whose dicts are ``levels`` deep (the payload itself is level 1)."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def test_nesting_limit_boundary() -> None:
    ok = Event("custom.x", _nested(MAX_NESTING))
    assert Event.from_json(ok.to_json()) == ok
    with pytest.raises(EventValidationError) as info:
        Event("custom.x", _nested(MAX_NESTING + 1))
    assert f"nested deeper than {MAX_NESTING} levels" in str(info.value)
    assert str(info.value).startswith("payload." + ".".join(["a"] * MAX_NESTING) + ":")


def test_nesting_limit_applies_to_json_input() -> None:
    text = json.dumps({"id": "x", "kind": "custom.x", "time_unix_nano": 1,
                       "payload": _nested(MAX_NESTING + 1)})
    with pytest.raises(EventValidationError, match="nested deeper"):
        Event.from_json(text)


@pytest.mark.parametrize("payload", [[("a", 1)], "text", 5])
def test_payload_must_be_a_mapping(payload: object) -> None:
    with pytest.raises(EventValidationError, match="payload must be a mapping"):
        Event("custom.x", payload)  # type: ignore[arg-type]


@pytest.mark.parametrize("severity", ["fatal", "INFO", 3, None])
def test_bad_severity(severity: object) -> None:
    with pytest.raises(EventValidationError) as info:
        Event("custom.x", severity=severity)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"severity {severity!r}")
    assert "'debug', 'info', 'warn', 'error'" in message


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        (Scope(run_id=1), "scope.run_id must be a str or None, got int"),  # type: ignore[arg-type]
        (Scope(graph_id=b"g"), "scope.graph_id must be a str or None, got bytes"),  # type: ignore[arg-type]
        (Scope(session_id=["s"]), "scope.session_id must be a str or None, got list"),  # type: ignore[arg-type]
        (("r",), "scope must be a Scope, got tuple"),
        ({"run_id": "r"}, "scope must be a Scope, got dict"),
    ],
)
def test_bad_scope(scope: object, message: str) -> None:
    with pytest.raises(EventValidationError) as info:
        Event("custom.x", scope=scope)  # type: ignore[arg-type]
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (Source(component=1), "source.component must be a str, got int"),  # type: ignore[arg-type]
        (Source("tool", None), "source.name must be a str, got NoneType"),  # type: ignore[arg-type]
        (("tool", "x"), "source must be a Source, got tuple"),
    ],
)
def test_bad_source(source: object, message: str) -> None:
    with pytest.raises(EventValidationError) as info:
        Event("custom.x", source=source)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_bad_correlation() -> None:
    with pytest.raises(EventValidationError, match=r"^correlation\.span_id must be a str"):
        Event("custom.x", correlation=Correlation(span_id=5))  # type: ignore[arg-type]
    with pytest.raises(EventValidationError, match="correlation must be a Correlation"):
        Event("custom.x", correlation={"trace_id": TRACE})  # type: ignore[arg-type]


@pytest.mark.parametrize("time_ns", [-1, 1.5, True, "1"])
def test_bad_time(time_ns: object) -> None:
    with pytest.raises(EventValidationError, match="time_ns must be a non-negative int"):
        Event("custom.x", time_ns=time_ns)  # type: ignore[arg-type]


@pytest.mark.parametrize("event_id", ["", 5])
def test_bad_id(event_id: object) -> None:
    with pytest.raises(EventValidationError, match="id must be a non-empty str"):
        Event("custom.x", id=event_id)  # type: ignore[arg-type]


def _wire(**overrides: Any) -> str:
    data: dict[str, Any] = {"id": "e1", "kind": "custom.x", "time_unix_nano": 10}
    data.update(overrides)
    for key in [k for k, v in data.items() if v is _DELETE]:
        del data[key]
    return json.dumps(data)


_DELETE = object()


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("{", ["invalid event JSON"]),
        ("", ["invalid event JSON"]),
        ('{"id": "e1", "kind": }', ["invalid event JSON"]),
        ("[1, 2]", ["expected an object", "list"]),
        ('"event"', ["expected an object", "str"]),
        ('{"id":"e1","kind":"custom.x","time_unix_nano":1,"payload":{"x":NaN}}',
         ["NaN is not valid JSON"]),
        ('{"id":"e1","kind":"custom.x","time_unix_nano":1,"payload":{"x":-Infinity}}',
         ["-Infinity is not valid JSON"]),
        (_wire(kind=_DELETE), ["kind", "Field required"]),
        (_wire(id=_DELETE), ["id", "Field required"]),
        (_wire(kind=""), ["kind", "at least 1"]),
        (_wire(time_unix_nano=-5), ["time_unix_nano", "greater than or equal to 0"]),
        (_wire(seq=-1), ["seq", "greater than or equal to 0"]),
        (_wire(correlation={"trace_id": "XYZ"}), ["correlation.trace_id", "pattern"]),
        (_wire(correlation={"trace_id": TRACE.upper()}), ["correlation.trace_id"]),
        (_wire(correlation={"span_id": TRACE}), ["correlation.span_id"]),
        (_wire(bogus=1), ["bogus", "Extra inputs are not permitted"]),
        (_wire(scope={"run": "r"}), ["scope.run", "Extra inputs"]),
        (_wire(scope={"run_id": 5}), ["scope.run_id"]),
        (_wire(severity="fatal"), ["severity"]),
        (_wire(payload=[1]), ["payload"]),
        (_wire(source={"component": 1}), ["source.component"]),
    ],
)
def test_from_json_rejects_bad_input(text: str, fragments: list[str]) -> None:
    with pytest.raises(EventValidationError) as info:
        Event.from_json(text)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_from_json_unknown_kind_names_it() -> None:
    with pytest.raises(UnknownKindError, match=r"'agent\.nope'"):
        Event.from_json(_wire(kind="agent.nope"))


def test_from_json_lists_every_bad_field() -> None:
    with pytest.raises(EventValidationError) as info:
        Event.from_json(_wire(kind=_DELETE, extra=1, correlation={"span_id": "x"}))
    message = str(info.value)
    assert "kind: Field required" in message
    assert "extra: Extra inputs are not permitted" in message
    assert "correlation.span_id" in message


def test_to_json_refuses_nan_smuggled_past_validation() -> None:
    from otel_agentbus.wire import dumps

    with pytest.raises(ValueError):
        dumps({"x": math.nan})
