"""The invocation API: emit, on, and a Control whose cancel, timeout and limit all work."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from async_helpers import wait_until

from otel_agentbus import Event, EventBus, Scope
from otel_agentbus.runs import current_run
from otel_agentbus.runtime.invocation import (
    ANY,
    Control,
    Invocation,
    InvocationCancelled,
    InvocationTimeout,
    SessionContext,
)

pytestmark = pytest.mark.timeout(60)


def run_events(bus: EventBus, run_id: str | None = None) -> list[Event]:
    return [e for e in reversed(bus.history(limit=None, run_id=run_id))
            if e.kind.startswith("agent.run.")]


def tool_event(n: int, run_id: str = "r") -> Event:
    return Event("agent.tool.call.started", {"tool_call_id": f"t{n}", "tool_name": "x"},
                 scope=Scope(run_id=run_id))


# ------------------------------------------------------------------------- emit
async def test_emit_runs_one_run_and_returns_its_output() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    seen: list[SessionContext] = []

    async def agent(question: str, ctx: SessionContext, control: Control) -> dict[str, str]:
        seen.append(ctx)
        assert current_run() is ctx.run
        await asyncio.sleep(0)
        return {"answer": question.upper()}

    output = await invocation.emit(agent, "hi", agent="echo", session_id="conv-1")
    assert output == {"answer": "HI"}
    [ctx] = seen
    assert ctx.session_id == "conv-1"
    assert ctx.agent == "echo"
    events = run_events(bus)
    assert [e.kind for e in events] == ["agent.run.started", "agent.run.completed"]
    assert events[0].payload["input"] == "hi"
    assert events[1].payload["output"] == {"answer": "HI"}
    assert {e.scope.run_id for e in events} == {ctx.run_id}
    assert invocation.running == []
    await bus.close()


async def test_a_sync_agent_function_works_too() -> None:
    bus = EventBus()
    assert await Invocation(bus).emit(lambda x, ctx, c: x * 2, 21) == 42
    await bus.close()


async def test_an_agent_error_is_reraised_and_the_run_fails() -> None:
    bus = EventBus()
    error = ValueError("bad input")

    async def agent(_: Any, ctx: SessionContext, control: Control) -> None:
        raise error

    with pytest.raises(ValueError) as raised:
        await Invocation(bus).emit(agent, None)
    assert raised.value is error
    assert run_events(bus)[-1].kind == "agent.run.failed"
    await bus.close()


async def test_timeout_really_cancels_the_run() -> None:
    bus = EventBus()
    observed: list[str] = []

    async def slow(_: Any, ctx: SessionContext, control: Control) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            observed.append("cancelled")
            raise
        finally:
            observed.append("finally")

    control = Control(timeout=0.2)
    started = time.monotonic()
    with pytest.raises(InvocationTimeout) as raised:
        await Invocation(bus).emit(slow, None, control=control)
    elapsed = time.monotonic() - started
    assert isinstance(raised.value, TimeoutError)
    assert 0.15 <= elapsed < 10
    assert observed == ["cancelled", "finally"]
    end = run_events(bus)[-1]
    assert end.kind == "agent.run.cancelled"
    assert end.payload["reason"] == "timeout"
    assert raised.value.run_id == end.scope.run_id
    await bus.close()


async def test_a_fast_run_under_a_timeout_completes() -> None:
    bus = EventBus()

    async def quick(x: int, ctx: SessionContext, control: Control) -> int:
        return x + 1

    assert await Invocation(bus).emit(quick, 1, control=Control(timeout=10)) == 2
    assert run_events(bus)[-1].kind == "agent.run.completed"
    await bus.close()


async def test_an_agent_ignoring_cancellation_does_not_hang_emit() -> None:
    bus = EventBus()
    release = asyncio.Event()

    async def stubborn(_: Any, ctx: SessionContext, control: Control) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await release.wait()   # swallows the cancellation for a while

    started = time.monotonic()
    with pytest.raises(InvocationTimeout):
        await Invocation(bus, cancel_grace=0.2).emit(stubborn, None,
                                                     control=Control(timeout=0.1))
    assert time.monotonic() - started < 10
    release.set()
    await bus.close()


async def test_cancel_stops_the_running_emit_with_its_reason() -> None:
    bus = EventBus()
    control = Control()
    entered = asyncio.Event()
    observed: list[str] = []

    async def agent(_: Any, ctx: SessionContext, control: Control) -> None:
        entered.set()
        try:
            await asyncio.sleep(30)
        finally:
            observed.append("finally")

    task = asyncio.create_task(Invocation(bus).emit(agent, None, control=control))
    await asyncio.wait_for(entered.wait(), 10)
    control.cancel("user pressed stop")
    with pytest.raises(InvocationCancelled) as raised:
        await asyncio.wait_for(task, 10)
    assert raised.value.reason == "user pressed stop"
    assert observed == ["finally"]
    end = run_events(bus)[-1]
    assert end.kind == "agent.run.cancelled"
    assert end.payload["reason"] == "user pressed stop"
    # A cancelled control refuses later emits at once, before any run starts.
    before = len(run_events(bus))
    with pytest.raises(InvocationCancelled):
        await Invocation(bus).emit(agent, None, control=control)
    assert len(run_events(bus)) == before
    await bus.close()


async def test_cancel_from_another_thread() -> None:
    bus = EventBus()
    control = Control()
    entered = threading.Event()

    async def agent(_: Any, ctx: SessionContext, control: Control) -> None:
        entered.set()
        await asyncio.sleep(30)

    def canceller() -> None:
        assert entered.wait(10)
        control.cancel("from a thread")

    thread = threading.Thread(target=canceller)
    thread.start()
    with pytest.raises(InvocationCancelled, match="from a thread"):
        await asyncio.wait_for(Invocation(bus).emit(agent, None, control=control), 10)
    thread.join(10)
    await bus.close()


async def test_cancelling_the_caller_cancels_the_run() -> None:
    bus = EventBus()
    entered = asyncio.Event()

    async def agent(_: Any, ctx: SessionContext, control: Control) -> None:
        entered.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(Invocation(bus).emit(agent, None))
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    end = run_events(bus)[-1]
    assert end.kind == "agent.run.cancelled"
    assert end.payload["reason"] == "caller cancelled"
    await bus.close()


async def test_cancel_run_by_id_is_what_guards_use() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    entered = asyncio.Event()

    async def agent(_: Any, ctx: SessionContext, control: Control) -> None:
        entered.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(invocation.emit(agent, None, run_id="run-42"))
    await asyncio.wait_for(entered.wait(), 10)
    assert invocation.running == ["run-42"]
    assert invocation.cancel_run("run-42", "doom_loop")
    assert not invocation.cancel_run("other")
    with pytest.raises(InvocationCancelled) as raised:
        await asyncio.wait_for(task, 10)
    assert raised.value.reason == "doom_loop"
    assert run_events(bus, "run-42")[-1].payload["reason"] == "doom_loop"
    await bus.close()


async def test_concurrency_limit_holds_for_a_hundred_emits() -> None:
    bus = EventBus(history_size=0)
    control = Control(concurrency_limit=5)
    in_flight = 0
    peak = 0

    async def agent(n: int, ctx: SessionContext, control: Control) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1
        return n

    invocation = Invocation(bus)
    results = await asyncio.wait_for(asyncio.gather(
        *(invocation.emit(agent, n, control=control) for n in range(100))), 30)
    assert results == list(range(100))
    assert peak == 5              # reached, never passed
    assert control.max_in_flight == 5
    assert control.in_flight == 0
    await bus.close()


async def test_the_deadline_covers_waiting_for_a_slot() -> None:
    bus = EventBus()
    control = Control(concurrency_limit=1)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder(_: Any, ctx: SessionContext, control: Control) -> None:
        entered.set()
        await release.wait()

    invocation = Invocation(bus)
    first = asyncio.create_task(invocation.emit(holder, None, control=control))
    await asyncio.wait_for(entered.wait(), 10)
    control.set_timeout(0.1)
    started_runs = len(run_events(bus))
    with pytest.raises(InvocationTimeout):
        await invocation.emit(holder, None, control=control)
    assert len(run_events(bus)) == started_runs   # the second never started
    control.set_timeout(None)
    release.set()
    await asyncio.wait_for(first, 10)
    assert control.in_flight == 0
    await bus.close()


async def test_invalid_control_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Control(timeout=-1)
    with pytest.raises(ValueError, match="concurrency_limit"):
        Control(concurrency_limit=0)


# --------------------------------------------------------------------------- on
async def test_on_handles_only_matching_events() -> None:
    bus = EventBus()
    invocation = Invocation(bus)
    calls: list[tuple[str, str | None]] = []
    handle = invocation.on("agent.tool.call.started",
                           lambda e, ctx, c: calls.append((e.kind, ctx.run_id)))
    await bus.publish(Event("agent.run.started", scope=Scope(run_id="r")))
    await bus.publish(tool_event(1))
    await wait_until(lambda: handle.handled == 1)
    await asyncio.sleep(0.05)
    assert calls == [("agent.tool.call.started", "r")]
    handle.abort()
    await bus.close()


@pytest.mark.parametrize("kind", [ANY, None])
async def test_any_kind_gets_every_event(kind: str | None) -> None:
    bus = EventBus()
    kinds: list[str] = []
    handle = Invocation(bus).on(kind, lambda e, ctx, c: kinds.append(e.kind))
    await bus.publish(Event("agent.run.started", scope=Scope(run_id="r")))
    await bus.publish(tool_event(1))
    await wait_until(lambda: handle.handled == 2)
    assert sorted(kinds) == ["agent.run.started", "agent.tool.call.started"]
    handle.abort()
    await bus.close()


async def test_on_takes_the_bus_filters() -> None:
    bus = EventBus()
    runs: list[str | None] = []
    handle = Invocation(bus).on(ANY, lambda e, ctx, c: runs.append(ctx.run_id), run_id="mine")
    await bus.publish(tool_event(1, "theirs"))
    await bus.publish(tool_event(2, "mine"))
    await wait_until(lambda: handle.handled == 1)
    await asyncio.sleep(0.05)
    assert runs == ["mine"]
    handle.abort()
    await bus.close()


async def test_concurrency_limit_holds_for_a_hundred_handler_calls() -> None:
    bus = EventBus()
    control = Control(concurrency_limit=3)
    in_flight = 0
    peak = 0

    async def handler(event: Event, ctx: SessionContext, control: Control) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.002)
        in_flight -= 1

    handle = Invocation(bus).on("agent.tool.call.started", handler, control=control)
    for n in range(100):
        await bus.publish(tool_event(n))
    await wait_until(lambda: handle.handled == 100, timeout=30)
    assert peak == 3
    assert control.max_in_flight == 3
    handle.abort()
    await bus.close()


async def test_the_limit_is_shared_by_emits_and_handlers() -> None:
    bus = EventBus()
    control = Control(concurrency_limit=2)
    release = asyncio.Event()
    calls: list[int] = []

    async def holder(_: Any, ctx: SessionContext, control: Control) -> None:
        await release.wait()

    invocation = Invocation(bus)
    emits = [asyncio.create_task(invocation.emit(holder, None, control=control))
             for _ in range(2)]
    await wait_until(lambda: control.in_flight == 2)
    handle = invocation.on("agent.tool.call.started",
                           lambda e, ctx, c: calls.append(1), control=control)
    await bus.publish(tool_event(1))
    await asyncio.sleep(0.1)
    assert calls == []                    # both slots are taken by the runs
    release.set()
    await wait_until(lambda: calls == [1])
    await asyncio.wait_for(asyncio.gather(*emits), 10)
    handle.abort()
    await bus.close()


async def test_cancel_stops_listeners_no_call_after_cancel() -> None:
    bus = EventBus()
    control = Control()
    calls: list[int] = []
    invocation = Invocation(bus)
    handles = [invocation.on("agent.tool.call.started",
                             lambda e, ctx, c: calls.append(e.payload["n"]), control=control)
               for _ in range(2)]

    def event(n: int) -> Event:
        return Event("agent.tool.call.started", {"tool_name": "x", "n": n},
                     scope=Scope(run_id="r"))

    await bus.publish(event(1))
    await wait_until(lambda: len(calls) == 2)
    control.cancel()
    for n in range(2, 20):
        await bus.publish(event(n))
    await asyncio.wait_for(asyncio.gather(*(h.wait() for h in handles)), 10)
    await asyncio.sleep(0.05)
    assert calls == [1, 1]
    assert all(h.is_finished for h in handles)
    await bus.close()


async def test_cancel_also_stops_running_handler_calls() -> None:
    bus = EventBus()
    control = Control()
    entered = asyncio.Event()
    observed: list[str] = []

    async def handler(event: Event, ctx: SessionContext, control: Control) -> None:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            observed.append("cancelled")
            raise

    handle = Invocation(bus).on(ANY, handler, control=control)
    await bus.publish(tool_event(1))
    await asyncio.wait_for(entered.wait(), 10)
    assert not handle.is_finished
    control.cancel()
    await asyncio.wait_for(handle.wait(), 10)
    assert observed == ["cancelled"]
    await bus.close()


async def test_abort_finishes_the_handle() -> None:
    bus = EventBus()
    calls: list[int] = []
    handle = Invocation(bus).on(ANY, lambda e, ctx, c: calls.append(1))
    await bus.publish(tool_event(1))
    await wait_until(lambda: calls == [1])
    assert not handle.is_finished
    handle.abort()
    await asyncio.wait_for(handle.wait(), 10)
    assert handle.is_finished
    await bus.publish(tool_event(2))
    await asyncio.sleep(0.05)
    assert calls == [1]
    handle.abort()   # idempotent
    await bus.close()


async def test_closing_the_bus_finishes_listeners() -> None:
    bus = EventBus()
    handle = Invocation(bus).on(ANY, lambda e, ctx, c: None)
    await bus.close()
    await asyncio.wait_for(handle.wait(), 10)
    assert handle.is_finished


async def test_handler_errors_are_counted_and_the_listener_goes_on() -> None:
    bus = EventBus()

    def handler(event: Event, ctx: SessionContext, control: Control) -> None:
        if event.payload["tool_call_id"] == "t1":
            raise RuntimeError("boom")

    handle = Invocation(bus).on(ANY, handler)
    await bus.publish(tool_event(1))
    await bus.publish(tool_event(2))
    await wait_until(lambda: handle.handled == 1 and handle.failed == 1)
    handle.abort()
    await bus.close()


async def test_shared_data_is_visible_to_handlers_and_agents() -> None:
    bus = EventBus()
    control = Control(data={"budget": 3})
    invocation = Invocation(bus)

    def count_tools(event: Event, ctx: SessionContext, control: Control) -> None:
        control.data["budget"] -= 1
        control.data.setdefault("runs", []).append(ctx.run_id)

    handle = invocation.on("agent.tool.call.started", count_tools, control=control)

    async def agent(_: Any, ctx: SessionContext, control: Control) -> int:
        assert ctx.run is not None
        ctx.run.publish("agent.tool.call.started", {"tool_call_id": "a", "tool_name": "x"})
        await wait_until(lambda: control.data["budget"] == 2)
        return int(control.data["budget"])

    assert await invocation.emit(agent, None, control=control, run_id="run-d") == 2
    assert control.data["runs"] == ["run-d"]
    handle.abort()
    await bus.close()
