"""Guards: the doom-loop detector and the compaction circuit breaker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from async_helpers import wait_until

from otel_agentbus import Event, EventBus, Scope
from otel_agentbus.runs import RunScope
from otel_agentbus.runtime.guards import BreakerState, CompactionBreaker, DoomLoopDetector
from otel_agentbus.runtime.invocation import (
    Control,
    Invocation,
    InvocationCancelled,
    SessionContext,
)

pytestmark = pytest.mark.timeout(60)


def call(tool: str, arguments: Any = None, run_id: str = "r1", n: int = 0) -> Event:
    return Event("agent.tool.call.started",
                 {"tool_call_id": f"{tool}-{n}", "tool_name": tool, "arguments": arguments},
                 scope=Scope(run_id=run_id, node_id="act"))


def detected(bus: EventBus) -> list[Event]:
    return list(reversed(bus.history(kinds="agent.doom_loop.detected", limit=None)))


async def feed(bus: EventBus, guard: DoomLoopDetector | CompactionBreaker,
               *events: Event) -> None:
    """Publish and wait until the guard's subscription has handled them all."""
    assert guard.subscription is not None
    target = guard.subscription.stats().handled + len(events)
    for event in events:
        await bus.publish(event)
    await wait_until(lambda: guard.subscription is not None
                     and guard.subscription.stats().handled >= target)


# -------------------------------------------------------------------- doom loop
async def test_identical_calls_give_one_event_not_one_per_repeat() -> None:
    bus = EventBus()
    detector = DoomLoopDetector(bus)   # threshold 3
    await feed(bus, detector, *(call("search", {"q": "x", "page": 1}, n=i) for i in range(7)))
    [event] = detected(bus)
    assert event.scope.run_id == "r1"
    assert event.scope.node_id == "act"
    assert event.payload["pattern"] == "repeat"
    assert event.payload["tool_name"] == "search"
    assert event.payload["tool_names"] == ("search",)
    assert event.payload["repetitions"] == 3
    assert event.payload["action"] == "report"
    assert event.payload["tool_call_id"] == "search-2"   # the third call, not a later one
    await bus.close()


async def test_argument_order_does_not_matter_but_values_do() -> None:
    bus = EventBus()
    detector = DoomLoopDetector(bus)
    await feed(bus, detector, call("s", {"a": 1, "b": 2}), call("s", '{"b": 2, "a": 1}'),
               call("s", {"b": 2, "a": 1}))
    assert len(detected(bus)) == 1
    await feed(bus, detector, *(call("s", {"page": n}, run_id="r2") for n in range(6)))
    assert len(detected(bus)) == 1        # different arguments: no loop
    await bus.close()


async def test_runs_are_tracked_apart() -> None:
    bus = EventBus()
    detector = DoomLoopDetector(bus)
    await feed(bus, detector, call("s", 1, "a"), call("s", 1, "b"), call("s", 1, "a"),
               call("s", 1, "b"))
    assert detected(bus) == []
    await feed(bus, detector, call("s", 1, "a"))
    assert [e.scope.run_id for e in detected(bus)] == ["a"]
    await bus.close()


async def test_a_short_cycle_is_detected_once() -> None:
    bus = EventBus()
    detector = DoomLoopDetector(bus)
    cycle = [call("read", {"f": "a"}), call("write", {"f": "a"})] * 5
    await feed(bus, detector, *cycle)
    [event] = detected(bus)
    assert event.payload["pattern"] == "cycle"
    assert event.payload["tool_names"] == ("read", "write")
    assert event.payload["cycle_length"] == 2
    assert event.payload["repetitions"] == 3
    await bus.close()


async def test_cycles_up_to_max_cycle_only() -> None:
    detector = DoomLoopDetector(EventBus(), max_cycle=3, subscribe=False)
    for _ in range(4):
        for tool in ("a", "b", "c", "d"):       # a cycle of 4 > max_cycle
            assert detector.observe("r", tool) is None
    three = DoomLoopDetector(EventBus(), max_cycle=3, subscribe=False)
    found = [three.observe("r", tool) for _ in range(3) for tool in ("a", "b", "c")]
    assert [i for i, e in enumerate(found) if e is not None] == [8]


async def test_a_new_loop_after_a_break_is_reported_again() -> None:
    detector = DoomLoopDetector(EventBus(), subscribe=False)
    found = [detector.observe("r", tool, {"x": 1}) is not None
             for tool in ["a"] * 4 + ["b"] + ["a"] * 3]
    assert found == [False, False, True, False, False, False, False, True]
    assert detector.detected == 2


async def test_run_end_forgets_the_run() -> None:
    bus = EventBus()
    detector = DoomLoopDetector(bus)
    await feed(bus, detector, call("s"), call("s"))
    assert detector.tracked_runs == 1
    await feed(bus, detector, Event("agent.run.completed", scope=Scope(run_id="r1")))
    assert detector.tracked_runs == 0
    await bus.close()


async def test_stop_run_cancels_the_run_through_its_control() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    detector = DoomLoopDetector(bus, stop_run=True)
    control = Control()
    entered = asyncio.Event()

    async def looping_agent(_: Any, ctx: SessionContext, control: Control) -> None:
        assert ctx.run is not None and ctx.run_id is not None
        detector.register(ctx.run_id, control)
        entered.set()
        for n in range(1000):
            ctx.run.publish("agent.tool.call.started",
                            {"tool_call_id": str(n), "tool_name": "search",
                             "arguments": {"q": "same"}})
            await asyncio.sleep(0.01)

    with pytest.raises(InvocationCancelled) as raised:
        await asyncio.wait_for(invocation.emit(looping_agent, None, control=control), 20)
    assert raised.value.reason == "doom_loop"
    [event] = detected(bus)
    assert event.payload["action"] == "stop_run"
    end = bus.history(kinds="agent.run.cancelled", limit=1)[0]
    assert end.payload["reason"] == "doom_loop"
    assert end.seq is not None and event.seq is not None and event.seq < end.seq
    await bus.close()


async def test_stop_run_with_a_global_stopper() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    DoomLoopDetector(bus, stop_run=True, stop=invocation.cancel_run)

    async def looping_agent(_: Any, ctx: SessionContext, control: Control) -> None:
        assert ctx.run is not None
        while True:
            ctx.run.publish("agent.tool.call.started", {"tool_name": "ls", "arguments": "."})
            await asyncio.sleep(0.01)

    with pytest.raises(InvocationCancelled, match="doom_loop"):
        await asyncio.wait_for(invocation.emit(looping_agent, None), 20)
    await bus.close()


async def test_invalid_detector_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        DoomLoopDetector(EventBus(), threshold=1, subscribe=False)


# ------------------------------------------------------------------ the breaker
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def compressed(success: bool, run_id: str = "r1", error: str | None = None) -> Event:
    payload: dict[str, Any] = {"success": success}
    if error:
        payload["error"] = error
    return Event("agent.context.compressed", payload, scope=Scope(run_id=run_id))


def opened(bus: EventBus) -> list[Event]:
    return list(reversed(bus.history(kinds="agent.compaction.circuit_opened", limit=None)))


async def test_breaker_opens_after_m_failures_publishes_once_resets_after_cooldown() -> None:
    bus = EventBus()
    clock = FakeClock()
    breaker = CompactionBreaker(bus, threshold=3, cooldown=30, clock=clock)
    await feed(bus, breaker, compressed(False), compressed(False))
    assert breaker.state("r1") is BreakerState.CLOSED
    assert breaker.allow("r1")
    await feed(bus, breaker, compressed(False, error="model refused"))
    assert breaker.state("r1") is BreakerState.OPEN
    assert not breaker.allow("r1")
    await feed(bus, breaker, compressed(False), compressed(False))   # still open
    [event] = opened(bus)
    assert event.scope.run_id == "r1"
    assert event.payload["failures"] == 3
    assert event.payload["threshold"] == 3
    assert event.payload["last_error"] == "model refused"
    assert breaker.failures("r1") == 5

    clock.now += 29
    assert breaker.is_open("r1")
    clock.now += 1                                  # the cool-down has passed
    assert breaker.state("r1") is BreakerState.HALF_OPEN
    assert breaker.allow("r1")
    await feed(bus, breaker, compressed(True))
    assert breaker.state("r1") is BreakerState.CLOSED
    assert breaker.failures("r1") == 0
    assert len(opened(bus)) == 1
    await bus.close()


async def test_a_success_resets_the_count() -> None:
    bus = EventBus()
    breaker = CompactionBreaker(bus, threshold=3)
    await feed(bus, breaker, compressed(False), compressed(False), compressed(True),
                       compressed(False), compressed(False))
    assert breaker.state("r1") is BreakerState.CLOSED
    assert opened(bus) == []
    await bus.close()


async def test_a_failed_half_open_attempt_opens_it_again() -> None:
    bus = EventBus()
    clock = FakeClock()
    breaker = CompactionBreaker(bus, threshold=2, cooldown=5, clock=clock, subscribe=False)
    assert not breaker.record_failure("r")
    assert breaker.record_failure("r")
    clock.now += 5
    assert breaker.state("r") is BreakerState.HALF_OPEN
    assert breaker.record_failure("r", error="still failing")   # opens again at once
    assert breaker.is_open("r")
    events = opened(bus)
    assert len(events) == 2
    assert events[1].payload["half_open_retry_failed"] is True
    breaker.reset("r")
    assert breaker.state("r") is BreakerState.CLOSED
    await bus.close()


async def test_explicit_failures_apply_to_the_current_run() -> None:
    bus = EventBus()
    breaker = CompactionBreaker(bus, threshold=2, subscribe=False)
    async with RunScope(bus, "summarizer") as run:
        breaker.record_failure()
        breaker.record_failure(error="context too long")
        assert breaker.is_open()
        assert breaker.is_open(run.run_id)
    [event] = opened(bus)
    assert event.scope.run_id == run.run_id
    assert event.scope.agent == "summarizer"
    assert breaker.state("other") is BreakerState.CLOSED
    await bus.close()


async def test_breaker_stop_run_cancels_the_run() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    CompactionBreaker(bus, threshold=2, stop_run=True, stop=invocation.cancel_run)

    async def agent(_: Any, ctx: SessionContext, control: Control) -> None:
        assert ctx.run is not None
        while True:
            ctx.run.publish("agent.context.compressed", {"success": False})
            await asyncio.sleep(0.01)

    with pytest.raises(InvocationCancelled, match="compaction_circuit_open"):
        await asyncio.wait_for(invocation.emit(agent, None), 20)
    assert opened(bus)[0].payload["action"] == "stop_run"
    await bus.close()


async def test_breaker_forgets_ended_runs() -> None:
    bus = EventBus()
    breaker = CompactionBreaker(bus, threshold=5)
    await feed(bus, breaker, compressed(False))
    assert breaker.failures("r1") == 1
    await feed(bus, breaker, Event("agent.run.failed", scope=Scope(run_id="r1")))
    assert breaker.failures("r1") == 0
    breaker.close()
    await bus.close()
