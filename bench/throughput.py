"""Bus throughput, latency and scaling: our bus, the seed's bus and the peers, same workload.

Every side gets pre-built events (building them is not counted for anyone), one async
no-op handler per subscriber (a distinct function each: pyee and blinker de-duplicate a
handler registered twice), and the clock stops when the last handler call has run. Our
subscribers use the BLOCK policy, so nothing is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from otel_agentbus import Event, EventBus, Scope

from .bench_bus import load_seed
from .common import settle_percentiles

KIND = "agent.tool.call.started"
PEERS = ("bubus", "pyee", "blinker")
PEER_MODULES = {"bubus": "bubus", "pyee": "pyee.asyncio", "blinker": "blinker"}

Handler = Callable[..., Awaitable[None]]


class Counter:
    """Counts handler calls; ``finished`` is set at the target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.handled = 0
        self.finished = asyncio.Event()

    def handler(self) -> Handler:
        async def handle(*args: Any, **kwargs: Any) -> None:
            self.handled += 1
            if self.handled == self.target:
                self.finished.set()

        # A name of its own: bubus tells handlers apart by name.
        self.handlers = getattr(self, "handlers", 0) + 1
        handle.__name__ = handle.__qualname__ = f"handle_{self.handlers}"
        return handle


async def timed_publish(publish: Callable[[Any], Awaitable[object]], batch: list[Any],
                        counter: Counter) -> float:
    """Seconds from publishing the first of ``batch`` (one ``await publish(event)`` each)
    until the counter's last handler call."""
    start = time.perf_counter()
    for event in batch:
        await publish(event)
    await counter.finished.wait()
    return time.perf_counter() - start


# ----------------------------------------------------------------------- ours
async def ours(events: int, subscribers: int) -> float:
    bus = EventBus()
    counter = Counter(events * subscribers)
    for _ in range(subscribers):
        bus.subscribe(counter.handler(), kinds=KIND, backpressure="block")
    batch = [Event(KIND, {"tool_name": "search", "i": i}, scope=Scope(run_id="r1"))
             for i in range(events)]
    elapsed = await timed_publish(bus.publish, batch, counter)
    await bus.close()
    return events / elapsed


async def ours_keyed(events: int, runs: int) -> float:
    """One keyed subscriber (in order per run, runs in parallel), events spread over
    ``runs`` interleaved runs; returns events per second."""
    bus = EventBus()
    counter = Counter(events)
    bus.subscribe(counter.handler(), kinds=KIND, backpressure="block", concurrency="keyed",
                  max_concurrency=1000)
    scopes = [Scope(run_id=f"run-{index}") for index in range(runs)]
    batch = [Event(KIND, {"tool_name": "search", "i": i}, scope=scopes[i % runs])
             for i in range(events)]
    elapsed = await timed_publish(bus.publish, batch, counter)
    await bus.close()
    return events / elapsed


# ----------------------------------------------------------------------- seed
_seed: ModuleType | None = None


def seed_module() -> ModuleType:
    global _seed
    if _seed is None:
        _seed = load_seed()
    return _seed


async def seed(events: int, subscribers: int) -> float:
    module = seed_module()
    bus = module.EventBus()
    counter = Counter(events * subscribers)
    for _ in range(subscribers):
        bus.subscribe([module.EventType.TOOL_CALL_STARTED], counter.handler())
    batch = [module.AgentEvent(type=module.EventType.TOOL_CALL_STARTED, stream_id="s",
                               execution_id="r1", data={"tool_name": "search", "i": i})
             for i in range(events)]
    return events / await timed_publish(bus.publish, batch, counter)


# ---------------------------------------------------------------------- peers
_bubus_event: Any = None


async def bubus(events: int, subscribers: int) -> float:
    """bubus: pydantic events, ``bus.on(EventType, handler)``, ``bus.dispatch(event)``.

    bubus refuses more than 100 pending events (with its default history limit), so events
    go out in bursts of 40, each ended by awaiting its last event (bubus processes in order).
    """
    global _bubus_event
    from bubus import BaseEvent
    from bubus import EventBus as BubusBus

    if _bubus_event is None:
        class ToolCallStarted(BaseEvent[None]):
            tool_name: str
            i: int

        _bubus_event = ToolCallStarted
    bus = BubusBus()
    counter = Counter(events * subscribers)
    for _ in range(subscribers):
        bus.on(_bubus_event, counter.handler())
    batch = [_bubus_event(tool_name="search", i=i) for i in range(events)]
    dispatch = bus.dispatch
    start = time.perf_counter()
    for index, event in enumerate(batch):
        dispatched = dispatch(event)
        if index % 40 == 39:
            await dispatched
    await counter.finished.wait()
    elapsed = time.perf_counter() - start
    await bus.stop(clear=True)
    return events / elapsed


async def pyee(events: int, subscribers: int) -> float:
    """pyee's AsyncIOEventEmitter: ``emit`` schedules each coroutine handler as a task."""
    from pyee.asyncio import AsyncIOEventEmitter

    emitter = AsyncIOEventEmitter()
    counter = Counter(events * subscribers)
    for _ in range(subscribers):
        emitter.on(KIND, counter.handler())
    batch = [{"tool_name": "search", "i": i} for i in range(events)]
    emit = emitter.emit
    start = time.perf_counter()
    for payload in batch:
        emit(KIND, payload)
    await counter.finished.wait()
    return events / (time.perf_counter() - start)


async def blinker(events: int, subscribers: int) -> float:
    """blinker's ``await signal.send_async(...)``: awaits each receiver in turn."""
    from blinker import Signal

    signal = Signal()
    counter = Counter(events * subscribers)
    for _ in range(subscribers):
        signal.connect(counter.handler(), weak=False)
    batch = [{"tool_name": "search", "i": i} for i in range(events)]
    send = signal.send_async
    start = time.perf_counter()
    for payload in batch:
        await send(None, payload=payload)
    await counter.finished.wait()
    return events / (time.perf_counter() - start)


SIDES: dict[str, Callable[[int, int], Awaitable[float]]] = {
    "ours": ours, "seed": seed, "bubus": bubus, "pyee": pyee, "blinker": blinker,
}


async def calibrate(side: Callable[[int, int], Awaitable[float]], subscribers: int,
                    seconds: float, cap: int) -> int:
    """Events per round so that a round of ``side`` takes about ``seconds``."""
    rate = await side(100, subscribers)
    rate = await side(max(100, min(cap, int(rate * seconds / 4))), subscribers)
    return max(100, min(cap, int(rate * seconds)))


# -------------------------------------------------------------------- latency
async def paced(publish: Callable[[int], Awaitable[object]], sent: list[int],
                samples: list[int], rate: float, count: int) -> tuple[float, float]:
    """Publish ``count`` pre-built events at ``rate`` per second: every event that is due
    goes out (``sent[i]`` stamped just before), then the loop gets one turn so handlers can
    run. Handlers append ``now - sent[i]``; returns p50 and p99 in µs."""
    start = time.perf_counter()
    index = 0
    clock, clock_ns = time.perf_counter, time.perf_counter_ns
    while index < count:
        due = min(count, int((clock() - start) * rate) + 1)
        while index < due:
            sent[index] = clock_ns()
            await publish(index)
            index += 1
        await asyncio.sleep(0)
    return await settle_percentiles(samples, count, turns=100_000)


async def ours_latency(rate: float, count: int) -> tuple[float, float]:
    bus = EventBus()
    samples: list[int] = []
    sent = [0] * count

    async def handler(event: Event) -> None:
        samples.append(time.perf_counter_ns() - sent[event.payload["i"]])

    bus.subscribe(handler, kinds=KIND, backpressure="block")
    scope = Scope(run_id="r1")
    batch = [Event(KIND, {"tool_name": "search", "i": i}, scope=scope) for i in range(count)]
    publish = bus.publish

    async def send(index: int) -> None:
        await publish(batch[index])

    result = await paced(send, sent, samples, rate, count)
    await bus.close()
    return result


async def seed_latency(rate: float, count: int) -> tuple[float, float]:
    module = seed_module()
    bus = module.EventBus()
    samples: list[int] = []
    sent = [0] * count

    async def handler(event: Any) -> None:
        samples.append(time.perf_counter_ns() - sent[event.data["i"]])

    bus.subscribe([module.EventType.TOOL_CALL_STARTED], handler)
    batch = [module.AgentEvent(type=module.EventType.TOOL_CALL_STARTED, stream_id="s",
                               execution_id="r1", data={"tool_name": "search", "i": i})
             for i in range(count)]
    publish = bus.publish

    async def send(index: int) -> None:
        await publish(batch[index])

    return await paced(send, sent, samples, rate, count)
