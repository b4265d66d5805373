"""A bus used from more than one event loop: it moves to the new loop or says why not."""

from __future__ import annotations

import asyncio
import threading

import pytest

from otel_agentbus import BusClosedError, Event, EventBus, Scope, kinds
from otel_agentbus.bus import BusLoopError

pytestmark = pytest.mark.timeout(20)


def started(run_id: str) -> Event:
    return Event(kinds.RUN_STARTED, scope=Scope(run_id=run_id))


def test_a_subscriber_gets_events_published_from_two_successive_asyncio_runs() -> None:
    bus = EventBus()
    seen: list[str | None] = []

    async def first() -> None:
        handled = asyncio.Event()

        async def handler(event: Event) -> None:
            seen.append(event.scope.run_id)
            handled.set()

        bus.subscribe(handler)
        await bus.publish(started("r1"))
        await handled.wait()

    async def second() -> None:
        result = await bus.publish(started("r2"))
        assert result.delivered == 1
        await bus.close()

    asyncio.run(first())
    asyncio.run(second())
    assert seen == ["r1", "r2"]
    assert bus.stats().delivered == 2
    assert bus.stats().subscriber_stats == ()


def test_events_queued_when_a_loop_ended_are_handled_on_the_next_one() -> None:
    bus = EventBus()
    seen: list[str | None] = []
    gate = asyncio.Event

    async def first() -> None:
        release = gate()

        async def handler(event: Event) -> None:
            if event.scope.run_id == "slow":
                await release.wait()  # never set: the loop ends with this handler waiting
            seen.append(event.scope.run_id)

        bus.subscribe(handler)
        await bus.publish(started("slow"))
        await asyncio.sleep(0)
        await bus.publish(started("queued"))

    async def second() -> None:
        await bus.publish(started("next"))
        await bus.close()

    asyncio.run(first())
    asyncio.run(second())
    assert seen == ["queued", "next"]
    assert bus.stats().failed == 1  # the handler cancelled with the first loop is counted


def test_publish_nowait_from_a_thread_after_the_loop_closed_raises() -> None:
    bus = EventBus()

    async def first() -> None:
        bus.subscribe(lambda event: None)
        await bus.publish(started("r1"))

    asyncio.run(first())
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            bus.publish_nowait(started("late"))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=publish)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], BusClosedError)
    assert "loop is closed" in str(errors[0])


def test_publish_nowait_from_sync_code_after_the_loop_closed_raises() -> None:
    bus = EventBus()

    async def first() -> None:
        bus.subscribe(lambda event: None)

    asyncio.run(first())
    with pytest.raises(BusClosedError, match="loop is closed"):
        bus.publish_nowait(started("late"))


def test_a_stream_is_iterated_on_the_second_loop() -> None:
    bus = EventBus()
    holder = []

    async def first() -> None:
        stream = bus.stream(kinds=kinds.RUN_STARTED)
        holder.append(stream)
        await bus.publish(started("r1"))

    async def second() -> list[str | None]:
        stream = holder[0]
        await bus.publish(started("r2"))
        got = [(await stream.next(timeout=5)).scope.run_id for _ in range(2)]

        async def later() -> None:
            await asyncio.sleep(0)
            await bus.publish(started("r3"))

        task = asyncio.create_task(later())
        got.append((await stream.next(timeout=5)).scope.run_id)  # waits on this loop
        await task
        await bus.close()
        return got

    asyncio.run(first())
    assert asyncio.run(second()) == ["r1", "r2", "r3"]


def test_subscribing_from_another_loop_while_the_bus_loop_runs_is_refused() -> None:
    bus = EventBus()
    ready = threading.Event()
    stop = threading.Event()
    loop = asyncio.new_event_loop()

    async def own() -> None:
        bus.subscribe(lambda event: None)
        ready.set()
        await asyncio.to_thread(stop.wait)
        await bus.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(own(),))
    thread.start()
    try:
        assert ready.wait(5)
        async def elsewhere() -> None:
            bus.subscribe(lambda event: None)

        with pytest.raises(BusLoopError, match="another thread"):
            asyncio.run(elsewhere())
    finally:
        stop.set()
        thread.join()
        loop.close()


def test_an_event_published_while_asyncio_run_cancels_its_tasks_is_not_lost() -> None:
    bus = EventBus()
    seen: list[str | None] = []

    async def first() -> None:
        bus.subscribe(lambda event: seen.append(event.scope.run_id))

        async def agent() -> None:
            try:
                await asyncio.Event().wait()
            finally:  # cancelled by asyncio.run's ending, as an agent's run would be
                await bus.publish(started("cancelled-run"))

        asyncio.get_running_loop().create_task(agent())
        await asyncio.sleep(0)

    async def second() -> None:
        await bus.publish(started("r2"))
        await bus.close()

    asyncio.run(first())
    asyncio.run(second())
    assert seen == ["cancelled-run", "r2"]
