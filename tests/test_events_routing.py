"""The core additions seeds 002 and 004 needed: kind aliases, the chat kind family, routing
fields on Scope and Correlation (through JSON, filters and the telemetry mirror)."""

from __future__ import annotations

import pytest
from async_helpers import wait_until
from telemetry_helpers import HarnessFactory

from otel_agentbus import Correlation, Event, EventBus, Scope
from otel_agentbus.kinds import KIND_ALIASES, KNOWN_KINDS, Delivery, kind_info, validate_kind
from otel_agentbus.runs import RunScope

pytestmark = pytest.mark.timeout(60)

ROUTING = Scope(run_id="r1", runtime_id="rt", channel="telegram", account="acc",
                chat_id="c1", topic_id="t1", space_id="s1", space_type="group",
                chat_type="private", sender_id="u1", message_id="m1")


@pytest.mark.parametrize(("alias", "kind"), sorted(KIND_ALIASES.items()))
def test_an_alias_is_accepted_and_stored_as_the_tables_kind(alias: str, kind: str) -> None:
    assert kind in KNOWN_KINDS
    assert alias not in KNOWN_KINDS
    assert validate_kind(alias) == kind
    assert Event(alias).kind == kind
    assert kind_info(alias) is KNOWN_KINDS[kind]  # and so its delivery class


async def test_a_filter_on_an_alias_gets_the_kind() -> None:
    bus = EventBus()
    got: list[Event] = []
    sub = bus.subscribe(got.append, kinds="agent.tool.exec_start")
    await bus.publish(Event("agent.tool.call.started"))
    await wait_until(lambda: len(got) == 1)
    sub.close()
    await bus.close()


def test_the_chat_family_is_apart_from_the_agents_deltas() -> None:
    chat = [k for k in KNOWN_KINDS if k.startswith("chat.")]
    assert chat == ["chat.started", "chat.text.delta", "chat.tool_call.started",
                    "chat.tool_call.arguments.delta", "chat.tool_call.completed",
                    "chat.finished"]
    assert KNOWN_KINDS["chat.started"].delivery is Delivery.MUST_DELIVER
    assert KNOWN_KINDS["chat.text.delta"].delivery is Delivery.DROPPABLE


def test_routing_fields_round_trip_through_json() -> None:
    event = Event("agent.steering.injected", scope=ROUTING,
                  correlation=Correlation(request_id="q", parent_turn_id="turn-0",
                                          reply_to_id="msg-0"))
    back = Event.from_json(event.to_json())
    assert back == event
    assert back.scope.chat_id == "c1" and back.correlation.reply_to_id == "msg-0"


def test_a_routing_field_must_be_a_str() -> None:
    with pytest.raises(ValueError, match=r"scope\.chat_id must be a str"):
        Event("agent.error", scope=Scope(chat_id=42))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"correlation\.reply_to_id must be a str"):
        Event("agent.error", correlation=Correlation(reply_to_id=1))  # type: ignore[arg-type]


async def test_routing_scope_fields_filter() -> None:
    from otel_agentbus.filters import EventFilter

    bus = EventBus()
    got: list[Event] = []
    sub = bus.subscribe(got.append, filter=EventFilter(scope=(("chat_id", "c1"),)))
    await bus.publish(Event("agent.error", scope=Scope(chat_id="c2")))
    await bus.publish(Event("agent.error", scope=ROUTING))
    await wait_until(lambda: len(got) == 1)
    assert got[0].scope.chat_id == "c1"
    sub.close()
    await bus.close()


async def test_the_mirror_keeps_the_publishers_turn_and_reply_ids(
        make: HarnessFactory) -> None:
    harness = make()
    async with RunScope(harness.bus, "claw") as run:
        event = Event("agent.steering.injected", scope=run.scope,
                      correlation=Correlation(parent_turn_id="turn-0", reply_to_id="msg-0"))
        await harness.bus.publish(event)
    [stamped] = harness.bus.history(kinds="agent.steering.injected")
    assert stamped.correlation.trace_id  # stamped with the run's trace ...
    assert stamped.correlation.parent_turn_id == "turn-0"  # ... keeping the publisher's ids
    assert stamped.correlation.reply_to_id == "msg-0"
    run_span = harness.one("invoke_agent claw")
    assert stamped.correlation.trace_id == format(run_span.context.trace_id, "032x")


async def test_an_event_outside_a_run_keeps_its_ids_too(make: HarnessFactory) -> None:
    harness = make()
    with harness.tracer().start_as_current_span("outer") as outer:
        await harness.bus.publish(Event("gateway.ready", correlation=Correlation(
            reply_to_id="msg-0")))
    [stamped] = harness.bus.history(kinds="gateway.ready")
    assert stamped.correlation.trace_id == format(outer.get_span_context().trace_id, "032x")
    assert stamped.correlation.reply_to_id == "msg-0"


async def test_chat_deltas_count_as_chunks_not_span_events(make: HarnessFactory) -> None:
    harness = make()
    async with RunScope(harness.bus, "claw") as run:
        for _ in range(3):
            await harness.bus.publish(Event("chat.text.delta", {"delta": "x"},
                                            scope=run.scope))
        await harness.bus.publish(Event("chat.finished", scope=run.scope))
    span = harness.one("invoke_agent claw")
    assert [e.name for e in span.events] == ["chat.finished"]
    assert (span.attributes or {})["agentbus.llm.chunks"] == 3
