"""A listener's handle owns it (seed 002's ``impl Drop for InvocationHandle``): closing the
handle or dropping its last reference stops the listener, so its handler is not called again.
"""

from __future__ import annotations

import gc

import pytest
from async_helpers import wait_until

from otel_agentbus import Event, EventBus, Scope
from otel_agentbus.runtime.invocation import ANY, Invocation, ListenerHandle

pytestmark = pytest.mark.timeout(60)


def tool_event(n: int) -> Event:
    return Event("agent.tool.call.started", {"tool_call_id": f"t{n}", "tool_name": "x"},
                 scope=Scope(run_id="r"))


async def _handled_by_a_witness(bus: EventBus, n: int, seen: list[str]) -> None:
    """Publish event ``n`` and wait until a listener that stays alive has handled it: every
    other listener still subscribed has been offered it by then (publish queues for all)."""
    await bus.publish(tool_event(n))
    await wait_until(lambda: f"t{n}" in seen)


async def test_close_stops_the_listener() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    calls: list[str] = []
    witnessed: list[str] = []
    witness = invocation.on(ANY, lambda e, ctx, c: witnessed.append(e.payload["tool_call_id"]))
    handle = invocation.on(ANY, lambda e, ctx, c: calls.append(e.payload["tool_call_id"]))
    await _handled_by_a_witness(bus, 1, witnessed)
    await wait_until(lambda: calls == ["t1"])
    handle.close()
    assert handle.is_finished
    await _handled_by_a_witness(bus, 2, witnessed)
    assert calls == ["t1"]
    witness.close()
    await bus.close()


async def test_leaving_a_with_block_stops_the_listener() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    calls: list[str] = []
    witnessed: list[str] = []
    witness = invocation.on(ANY, lambda e, ctx, c: witnessed.append(e.payload["tool_call_id"]))
    with invocation.on(ANY, lambda e, ctx, c: calls.append(e.payload["tool_call_id"])):
        await _handled_by_a_witness(bus, 1, witnessed)
        await wait_until(lambda: calls == ["t1"])
    await _handled_by_a_witness(bus, 2, witnessed)
    assert calls == ["t1"]
    witness.close()
    await bus.close()


async def test_dropping_the_last_reference_stops_the_listener() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    calls: list[str] = []
    witnessed: list[str] = []
    witness = invocation.on(ANY, lambda e, ctx, c: witnessed.append(e.payload["tool_call_id"]))
    handle: ListenerHandle | None = invocation.on(
        ANY, lambda e, ctx, c: calls.append(e.payload["tool_call_id"]))
    assert handle is not None
    subscription = handle.subscription
    assert subscription is not None
    await _handled_by_a_witness(bus, 1, witnessed)
    await wait_until(lambda: calls == ["t1"])
    del handle
    gc.collect()  # CPython frees it at once; this covers interpreters that do not
    assert subscription.closed
    assert subscription not in bus.subscriptions
    await _handled_by_a_witness(bus, 2, witnessed)
    assert calls == ["t1"]
    witness.close()
    await bus.close()


async def test_a_discarded_handle_never_calls_its_handler() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    calls: list[str] = []
    witnessed: list[str] = []
    witness = invocation.on(ANY, lambda e, ctx, c: witnessed.append(e.payload["tool_call_id"]))
    invocation.on(ANY, lambda e, ctx, c: calls.append(e.payload["tool_call_id"]))
    gc.collect()
    assert len(bus.subscriptions) == 1
    await _handled_by_a_witness(bus, 1, witnessed)
    assert calls == []
    witness.close()
    await bus.close()


async def test_a_handle_kept_alive_keeps_its_listener() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    calls: list[str] = []
    handles = [invocation.on(ANY, lambda e, ctx, c: calls.append(e.payload["tool_call_id"]))]
    gc.collect()
    await bus.publish(tool_event(1))
    await wait_until(lambda: calls == ["t1"])
    assert not handles[0].is_finished
    handles[0].close()
    await bus.close()
