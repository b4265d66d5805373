"""Seed 000 (Hive ``EventBus``), as the seed text calls it: the call patterns and the
delivery the seed's ``publish`` has. The emitters' signatures and data, the event types
and the filters are in ``test_hive_compat.py``; the table is ``docs/conformance-hive.md``."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from otel_agentbus.compat.hive import AgentEvent, EventBus, EventHandler, EventType, Subscription

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    hive = EventBus()
    yield hive
    await hive.close()


async def test_the_seeds_docstring_example(capsys: pytest.CaptureFixture[str]) -> None:
    # --- the seed's example, verbatim
    bus = EventBus()

    async def on_execution_complete(event: AgentEvent) -> None:
        print(f"Execution {event.execution_id} completed")

    bus.subscribe(
        event_types=[EventType.EXECUTION_COMPLETED],
        handler=on_execution_complete,
    )

    await bus.publish(AgentEvent(
        type=EventType.EXECUTION_COMPLETED,
        stream_id="webhook",
        execution_id="exec_123",
        data={"result": "success"},
    ))
    # --- printed before publish returned: the seed awaits its handlers
    assert capsys.readouterr().out == "Execution exec_123 completed\n"
    await bus.close()


def test_subscription_record_and_handler_type_are_the_seeds() -> None:
    assert [f.name for f in dataclasses.fields(Subscription)] == [
        "id", "event_types", "handler", "filter_stream", "filter_node", "filter_execution"]
    assert EventHandler == Callable[[AgentEvent], Awaitable[None]]


async def test_subscribe_returns_sequential_sub_ids_and_unsubscribe_a_bool(
    bus: EventBus
) -> None:
    async def handler(event: AgentEvent) -> None: ...

    assert bus.subscribe([EventType.CUSTOM], handler) == "sub_1"
    assert bus.subscribe(event_types=[EventType.CUSTOM], handler=handler,
                         filter_stream="s", filter_node="n", filter_execution="e") == "sub_2"
    assert bus.unsubscribe("sub_1") is True
    assert bus.unsubscribe("sub_1") is False
    assert bus.get_stats()["subscriptions"] == 1


async def test_publish_returns_after_every_matching_handler_ran(bus: EventBus) -> None:
    done: list[str] = []

    async def slow(event: AgentEvent) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        done.append("slow")

    async def fast(event: AgentEvent) -> None:
        done.append("fast")

    bus.subscribe([EventType.STREAM_STARTED], slow)
    bus.subscribe([EventType.STREAM_STARTED], fast)
    await bus.publish(AgentEvent(EventType.STREAM_STARTED, "s"))
    assert sorted(done) == ["fast", "slow"]


async def test_handlers_of_one_publish_run_concurrently(bus: EventBus) -> None:
    first_started = asyncio.Event()

    async def first(event: AgentEvent) -> None:
        first_started.set()
        await second_ran.wait()

    second_ran = asyncio.Event()

    async def second(event: AgentEvent) -> None:
        await first_started.wait()
        second_ran.set()

    bus.subscribe([EventType.CUSTOM], first)
    bus.subscribe([EventType.CUSTOM], second)
    await asyncio.wait_for(bus.publish(AgentEvent(EventType.CUSTOM, "s")), 10)


async def test_handlers_of_different_publishes_overlap_even_one_handler_with_itself(
    bus: EventBus
) -> None:
    inside = 0
    peak = 0
    both_in = asyncio.Event()

    async def handler(event: AgentEvent) -> None:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        if inside == 2:
            both_in.set()
        await both_in.wait()
        inside -= 1

    bus.subscribe([EventType.CUSTOM], handler)
    await asyncio.wait_for(asyncio.gather(
        bus.publish(AgentEvent(EventType.CUSTOM, "a")),
        bus.publish(AgentEvent(EventType.CUSTOM, "b"))), 10)
    assert peak == 2


async def test_max_concurrent_handlers_bounds_the_handlers_running_at_once() -> None:
    bus = EventBus(max_history=10, max_concurrent_handlers=2)
    inside = peak = 0

    async def handler(event: AgentEvent) -> None:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        for _ in range(3):
            await asyncio.sleep(0)
        inside -= 1

    for _ in range(4):
        bus.subscribe([EventType.CUSTOM], handler)
    await bus.publish(AgentEvent(EventType.CUSTOM, "s"))
    assert peak == 2
    await bus.close()


async def test_a_failing_handler_is_logged_and_the_others_still_run(
    bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def failing(event: AgentEvent) -> None:
        raise ValueError("nope")

    async def fine(event: AgentEvent) -> None:
        ran.append(event.stream_id)

    bus.subscribe([EventType.CUSTOM], failing)
    bus.subscribe([EventType.CUSTOM], fine)
    with caplog.at_level(logging.ERROR, logger="otel_agentbus.compat.hive"):
        await bus.publish(AgentEvent(EventType.CUSTOM, "a"))
    assert ran == ["a"]
    assert [r.getMessage() for r in caplog.records] == ["Handler error for custom: nope"]


async def test_subscription_filters_match_like_the_seeds_matches(bus: EventBus) -> None:
    seen: dict[str, list[str]] = {"stream": [], "node": [], "execution": [], "type": []}

    def recorder(name: str) -> Any:
        async def handler(event: AgentEvent) -> None:
            seen[name].append(event.data["n"])
        return handler

    bus.subscribe([EventType.CUSTOM], recorder("stream"), filter_stream="s1")
    bus.subscribe([EventType.CUSTOM], recorder("node"), filter_node="n1")
    bus.subscribe([EventType.CUSTOM], recorder("execution"), filter_execution="e1")
    bus.subscribe([EventType.GOAL_ACHIEVED], recorder("type"))
    await bus.publish(AgentEvent(EventType.CUSTOM, "s1", node_id="n1", execution_id="e1",
                                 data={"n": "all"}))
    await bus.publish(AgentEvent(EventType.CUSTOM, "s2", node_id="n1", data={"n": "node"}))
    await bus.publish(AgentEvent(EventType.CUSTOM, "s2", execution_id="e1",
                                 data={"n": "exec"}))
    assert seen == {"stream": ["all"], "node": ["all", "node"], "execution": ["all", "exec"],
                    "type": []}


async def test_get_history_is_most_recent_first_filtered_and_limited(bus: EventBus) -> None:
    for i in range(3):
        await bus.emit_execution_started("s1", f"e{i}")
    await bus.emit_execution_completed("s2", "e0")
    history = bus.get_history()
    assert [(e.type, e.execution_id) for e in history][:2] == [
        (EventType.EXECUTION_COMPLETED, "e0"), (EventType.EXECUTION_STARTED, "e2")]
    assert [e.execution_id for e in bus.get_history(EventType.EXECUTION_STARTED, limit=2)] == [
        "e2", "e1"]
    assert [e.stream_id for e in bus.get_history(stream_id="s2")] == ["s2"]
    assert [e.type for e in bus.get_history(execution_id="e0")] == [
        EventType.EXECUTION_COMPLETED, EventType.EXECUTION_STARTED]


async def test_get_stats_counts_by_type(bus: EventBus) -> None:
    async def handler(event: AgentEvent) -> None: ...

    bus.subscribe([EventType.CUSTOM], handler)
    await bus.emit_execution_started("s", "e")
    await bus.emit_execution_failed("s", "e", "boom")
    assert bus.get_stats() == {"total_events": 2, "subscriptions": 1,
                               "events_by_type": {"execution_started": 1,
                                                  "execution_failed": 1}}


async def test_wait_for_returns_the_event(bus: EventBus) -> None:
    waiter = asyncio.ensure_future(bus.wait_for(EventType.NODE_STALLED, stream_id="s",
                                                node_id="n", execution_id="e", timeout=10))
    await asyncio.sleep(0)
    await bus.emit_node_stalled("s", "other", reason="not this one", execution_id="e")
    await bus.emit_node_stalled("s", "n", reason="stuck", execution_id="e")
    event = await waiter
    assert event is not None and event.data == {"reason": "stuck"}
    assert bus.get_stats()["subscriptions"] == 0  # its subscription is gone


async def test_wait_for_returns_none_on_timeout(bus: EventBus) -> None:
    assert await bus.wait_for(EventType.GOAL_ACHIEVED, timeout=0.01) is None


async def test_queued_delivery_is_an_opt_in_that_does_not_wait() -> None:
    bus = EventBus(queued_delivery=True)
    release = asyncio.Event()
    handled: list[str] = []

    async def blocked(event: AgentEvent) -> None:
        await release.wait()
        handled.append(event.stream_id)

    bus.subscribe([EventType.CUSTOM], blocked)
    await asyncio.wait_for(bus.publish(AgentEvent(EventType.CUSTOM, "s")), 10)
    assert handled == []  # queued, not yet handled: the project's faster delivery
    release.set()
    await bus.close()  # drains
    assert handled == ["s"]
