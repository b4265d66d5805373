"""Bus throughput and latency, side by side with the seed's Hive EventBus, in one process.

Both buses get the same workload: pre-built events (so event construction is not counted
for either), one async no-op handler per subscriber, and the clock stops when every handler
call has happened. Our subscribers use the BLOCK policy, so nothing is dropped. Figures are
medians of several rounds, and the rounds of the two buses alternate.

    python bench/bench_bus.py [--quick] [--json]
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import ModuleType
from typing import Any

from otel_agentbus import Event, EventBus, Scope

if __package__:
    from .common import script_main, settle_percentiles
else:  # run as a script: python bench/bench_bus.py
    from common import script_main, settle_percentiles

KIND = "agent.tool.call.started"


def load_seed() -> ModuleType:
    """The seed bus from ../shared/baselines (or $AGENTBUS_SEED_BUS)."""
    default = Path(__file__).resolve().parents[2] / "shared" / "baselines" / "hive_event_bus.py"
    path = Path(os.environ.get("AGENTBUS_SEED_BUS", default))
    if not path.exists():
        raise SystemExit(f"seed bus not found at {path}; set AGENTBUS_SEED_BUS")
    spec = importlib.util.spec_from_file_location("hive_event_bus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hive_event_bus"] = module
    spec.loader.exec_module(module)
    return module


async def ours_throughput(events: int, subscribers: int) -> float:
    bus = EventBus()
    handled = 0
    finished = asyncio.Event()
    target = events * subscribers

    async def handler(event: Event) -> None:
        nonlocal handled
        handled += 1
        if handled == target:
            finished.set()

    for _ in range(subscribers):
        bus.subscribe(handler, kinds=KIND, backpressure="block")
    batch = [
        Event(KIND, {"tool_name": "search", "i": i}, scope=Scope(run_id="r1", stream_id="s"))
        for i in range(events)
    ]
    start = time.perf_counter()
    for event in batch:
        await bus.publish(event)
    await finished.wait()
    elapsed = time.perf_counter() - start
    await bus.close()
    return events / elapsed


async def seed_throughput(seed: ModuleType, events: int, subscribers: int) -> float:
    bus = seed.EventBus()
    handled = 0

    async def handler(event: Any) -> None:
        nonlocal handled
        handled += 1

    for _ in range(subscribers):
        bus.subscribe([seed.EventType.TOOL_CALL_STARTED], handler)
    batch = [
        seed.AgentEvent(
            type=seed.EventType.TOOL_CALL_STARTED, stream_id="s", execution_id="r1",
            data={"tool_name": "search", "i": i},
        )
        for i in range(events)
    ]
    start = time.perf_counter()
    for event in batch:
        await bus.publish(event)
    elapsed = time.perf_counter() - start
    assert handled == events * subscribers
    return events / elapsed


async def paced_latency(
    publish: Callable[[int], Coroutine[Any, Any, Any]], samples: list[int], rate: float,
    count: int,
) -> tuple[float, float]:
    """Publish ``count`` events at ``rate``/s; handlers append (now - sent) in ns."""
    interval = 1.0 / rate
    start = time.perf_counter()
    for index in range(count):
        due = start + index * interval
        # Busy pacing on purpose: asyncio.sleep(d) has ~1 ms granularity, far too coarse.
        while time.perf_counter() < due:  # noqa: ASYNC110
            await asyncio.sleep(0)
        await publish(time.perf_counter_ns())
    return await settle_percentiles(samples, count, turns=10_000)


async def ours_latency(rate: float, count: int) -> tuple[float, float]:
    bus = EventBus()
    samples: list[int] = []

    async def handler(event: Event) -> None:
        samples.append(time.perf_counter_ns() - event.payload["sent"])

    bus.subscribe(handler, kinds=KIND, backpressure="block")

    async def publish(sent: int) -> None:
        await bus.publish(Event(KIND, {"sent": sent}, scope=Scope(run_id="r1")))

    result = await paced_latency(publish, samples, rate, count)
    await bus.close()
    return result


async def seed_latency(seed: ModuleType, rate: float, count: int) -> tuple[float, float]:
    bus = seed.EventBus()
    samples: list[int] = []

    async def handler(event: Any) -> None:
        samples.append(time.perf_counter_ns() - event.data["sent"])

    bus.subscribe([seed.EventType.TOOL_CALL_STARTED], handler)

    async def publish(sent: int) -> None:
        await bus.publish(seed.AgentEvent(
            type=seed.EventType.TOOL_CALL_STARTED, stream_id="s", data={"sent": sent}
        ))

    return await paced_latency(publish, samples, rate, count)


async def measure(quick: bool) -> dict[str, Any]:
    seed = load_seed()
    rounds = 3 if quick else 7
    events = 5_000 if quick else 30_000
    figures: dict[str, Any] = {"rounds": rounds, "events_per_round": events}
    await ours_throughput(events, 10)  # warm-up: first-call costs belong to neither side
    await seed_throughput(seed, events // 4, 10)
    for subscribers in (1, 10):
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(rounds):  # alternate, so drift on the machine hits both sides alike
            ours.append(await ours_throughput(events, subscribers))
            theirs.append(await seed_throughput(seed, events // 2, subscribers))
        figures[f"bus_{subscribers}sub_events_per_s"] = round(statistics.median(ours))
        figures[f"seed_{subscribers}sub_events_per_s"] = round(statistics.median(theirs))
        figures[f"bus_{subscribers}sub_vs_seed"] = round(
            statistics.median(ours) / statistics.median(theirs), 2
        )
    # Latency at a fixed rate: half of the seed's one-subscriber maximum, so both keep up.
    rate = min(20_000.0, figures["seed_1sub_events_per_s"] / 2)
    count = 2_000 if quick else 10_000
    ours_p50, ours_p99 = await ours_latency(rate, count)
    seed_p50, seed_p99 = await seed_latency(seed, rate, count)
    figures.update(
        latency_rate_per_s=round(rate),
        bus_latency_p50_us=round(ours_p50, 1),
        bus_latency_p99_us=round(ours_p99, 1),
        seed_latency_p50_us=round(seed_p50, 1),
        seed_latency_p99_us=round(seed_p99, 1),
    )
    return figures


def print_table(figures: dict[str, Any]) -> None:
    rows = [
        ("throughput, 1 subscriber (events/s)", "bus_1sub_events_per_s",
         "seed_1sub_events_per_s", "bus_1sub_vs_seed"),
        ("throughput, 10 subscribers (events/s)", "bus_10sub_events_per_s",
         "seed_10sub_events_per_s", "bus_10sub_vs_seed"),
    ]
    print(f"{'measure':<42}{'otel-agentbus':>15}{'seed bus':>12}{'ratio':>8}")
    for label, ours, theirs, ratio in rows:
        print(f"{label:<42}{figures[ours]:>15,}{figures[theirs]:>12,}{figures[ratio]:>8}")
    rate = figures["latency_rate_per_s"]
    print(f"{f'latency p50 at {rate}/s (us)':<42}{figures['bus_latency_p50_us']:>15}"
          f"{figures['seed_latency_p50_us']:>12}")
    print(f"{f'latency p99 at {rate}/s (us)':<42}{figures['bus_latency_p99_us']:>15}"
          f"{figures['seed_latency_p99_us']:>12}")
    print(f"(medians of {figures['rounds']} rounds, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores)")


def main(argv: list[str] | None = None) -> int:
    return script_main(__doc__.splitlines()[0] if __doc__ else None, measure, print_table, argv)


if __name__ == "__main__":
    raise SystemExit(main())
