"""Hostile events (hypothesis): huge strings, deep nesting, non-JSON values, NaN, bytes,
cycles, lone surrogates, odd keys and kinds, in payloads and scope fields.

Each one is either rejected at construction with a clear error (``EventValidationError``
or ``UnknownKindError``, both ``ValueError``) or accepted, delivered and exported safely:
every exported string (attribute values and keys, span and event names, status messages)
within the length limit (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``, 8192 by default), arrays
bounded, and the batch encodable by the real OTLP encoder. After each hostile event the
bus still serves: a normal event published next is delivered.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from telemetry_helpers import HarnessFactory, otlp_bytes

from otel_agentbus import Event, EventValidationError, Scope, UnknownKindError
from otel_agentbus.telemetry.content import MAX_ARRAY_ITEMS, CaptureMode, ContentPolicy

pytestmark = pytest.mark.timeout(120)


def huge(char: str, count: int) -> str:
    return char * count


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


def cyclic_list() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


class Opaque:
    pass


STRINGS = st.one_of(
    st.text(max_size=20),
    st.builds(huge, st.sampled_from(["x", "é", "😀", "\x00", "\ud800", " "]),
              st.integers(8000, 40_000)),
    st.sampled_from(["", "\ud800", "a\udfffb", "\x00\x01\x7f", "…" * 9000, "custom.x"]),
)
NOT_JSON = st.one_of(
    st.sampled_from([b"bytes", bytearray(b"x"), {1, 2}, frozenset({3}), 1 + 2j, Opaque(),
                     float("nan"), float("inf"), -float("inf"), decimal.Decimal("1.5"),
                     datetime.datetime(2026, 1, 1), ..., print]),
    st.builds(cyclic_dict), st.builds(cyclic_list),
    st.builds(lambda: {1: "int key"}), st.builds(lambda: {None: "none key"}),
    st.builds(lambda: {("tuple",): 1}),
)
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                   st.floats(allow_nan=False, allow_infinity=False), STRINGS, NOT_JSON)
VALUES = st.one_of(
    st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4)
                 | st.dictionaries(STRINGS, inner, max_size=4), max_leaves=12),
    st.builds(nested, st.integers(1, 150), LEAVES),
    st.builds(lambda n: ["s"] * n, st.integers(100, 3000)),  # long arrays
    st.builds(lambda n: list(range(n)), st.integers(100, 3000)),
)
KEYS = st.one_of(
    st.sampled_from(["tool_name", "tool_call_id", "call_id", "arguments", "result", "model",
                     "provider", "messages", "content", "options", "reasoning", "chosen",
                     "error", "error_type", "finish_reasons", "iteration", "description",
                     "api_key", "context", "is_error", "traceparent", "max_iterations"]),
    STRINGS,
)
KINDS = st.one_of(
    st.sampled_from(["agent.tool.call.started", "agent.tool.call.completed",
                     "agent.llm.request", "agent.llm.delta", "agent.llm.response",
                     "agent.llm.failed", "agent.decision.made", "agent.decision.outcome",
                     "agent.problem.reported", "agent.state.changed",
                     "agent.node.loop.started", "agent.node.loop.iteration",
                     "agent.node.loop.failed", "custom.thing"]),
    st.builds(lambda s: "custom." + s, STRINGS),
    st.text(max_size=12),
)
PAYLOADS = st.one_of(st.dictionaries(KEYS, VALUES, max_size=6),
                     st.sampled_from([[1, 2], "text", b"raw", 42]))
SCOPE_VALUES = st.one_of(st.none(), STRINGS, st.sampled_from([b"id", 7]))

SETTINGS = settings(max_examples=150, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


def check_exported(spans: list[ReadableSpan], limit: int) -> int:
    """Every exported string within ``limit``; returns the OTLP bytes of the batch."""

    def check_attributes(attributes: Any, where: str) -> None:
        for key, value in dict(attributes or {}).items():
            assert len(key) <= limit, (where, len(key))
            if isinstance(value, str):
                assert len(value) <= limit, (where, key, len(value))
            elif isinstance(value, tuple | list):
                assert len(value) <= MAX_ARRAY_ITEMS, (where, key, len(value))
                for item in value:
                    assert not isinstance(item, str) or len(item) <= limit, (where, key)

    for span in spans:
        assert len(span.name) <= limit + 32, len(span.name)
        description = span.status.description
        assert description is None or len(description) <= limit
        check_attributes(span.attributes, span.name[:40])
        for event in span.events:
            assert len(event.name) <= 256
            check_attributes(event.attributes, event.name)
    return len(otlp_bytes(spans))  # the real encoder: raises on anything it cannot encode


def build(kind: str, payload: Any, node_id: Any, scope_field: tuple[str, Any]) -> Event:
    scope = Scope(run_id="r1", agent="agent")
    changes: dict[str, Any] = {"node_id": node_id, scope_field[0]: scope_field[1]}
    if scope_field[0] == "run_id" and scope_field[1] is None:
        changes["run_id"] = "r1"
    return Event(kind, payload, scope=scope._replace(**changes))


def run(main: Callable[[], Any]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), 30)

    asyncio.run(bounded())


@SETTINGS
@given(
    agent=STRINGS,
    hostile=st.lists(st.tuples(KINDS, PAYLOADS, SCOPE_VALUES,
                               st.tuples(st.sampled_from(["agent", "session_id", "stream_id",
                                                          "run_id", "graph_id"]),
                                         SCOPE_VALUES)),
                     min_size=1, max_size=4),
    capture=st.booleans(),
    limit=st.sampled_from([8192, 100]),
)
def test_hostile_events_are_rejected_clearly_or_exported_safely(
    agent: str, hostile: list[tuple[str, Any, Any, tuple[str, Any]]], capture: bool,
    limit: int,
) -> None:
    async def main() -> None:
        factory = HarnessFactory()
        policy = ContentPolicy(capture=CaptureMode.SPAN_AND_EVENT if capture
                               else CaptureMode.NO_CONTENT, max_length=limit)
        h = factory(content=policy)
        try:
            seen: set[str] = set()
            h.bus.subscribe(lambda e: seen.add(e.id), buffer=100_000)
            run_scope = Scope(run_id="r1", agent=agent, session_id=agent)
            await h.bus.publish(Event("agent.run.started", scope=run_scope))
            for n, (kind, payload, node_id, scope_field) in enumerate(hostile):
                try:
                    event = build(kind, payload, node_id, scope_field)
                except (EventValidationError, UnknownKindError) as error:
                    assert str(error)  # a clear message, never an empty one
                else:
                    result = await h.bus.publish(event)  # accepted: never raises
                    assert result.delivered == 1
                normal = Event("custom.normal", {"n": n}, scope=Scope(run_id="r1", agent="a"))
                await h.bus.publish(normal)
                for _ in range(1000):  # the bus keeps serving: the next event arrives
                    if normal.id in seen:
                        break
                    await asyncio.sleep(0)
                assert normal.id in seen
            await h.bus.publish(Event("agent.run.completed", scope=run_scope))
            await h.bus.close()
            assert h.bus.stats().hook_errors == 0  # the mirror never choked
            check_exported(list(h.exporter.get_finished_spans()), limit)
        finally:
            await factory.close()

    run(main)


def test_the_check_can_fail() -> None:
    """The limits are real: an over-long value is caught, a lone surrogate does not encode."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    span = tracer.start_span("s", attributes={"k": "x" * 200})
    span.end()
    with pytest.raises(AssertionError):
        check_exported([span], 100)  # type: ignore[list-item]
    bad = tracer.start_span("s\ud800")
    bad.end()
    with pytest.raises(UnicodeEncodeError):
        check_exported([bad], 100)  # type: ignore[list-item]
