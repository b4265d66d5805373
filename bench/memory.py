"""Memory: RSS growth while events pass a slow subscriber with a bounded buffer.

A fresh interpreter per measurement (``python -m bench.memory --events N --policy P``).
Streamed LLM chunks (``agent.llm.delta``, the high-volume, droppable kind; must-deliver
kinds are never dropped, so a subscriber that is slower for ever makes them pile up by
design). One subscriber with the default buffer (1,024) whose handler yields to the loop
twice per event, so it is always behind; the publisher builds each event as it goes (no pre-built
list) on a default bus (1,000 events of history). RSS is read from /proc every 10,000
events; the figure is the peak minus the RSS after a warm-up of 20,000 events.
With ``drop_oldest`` (the default policy) the publisher never waits and the queue sheds the
oldest events; with ``block`` the publisher waits for room.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from typing import Any

from otel_agentbus import Event, EventBus, Scope

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


async def measure(events: int, policy: str) -> dict[str, Any]:
    bus = EventBus()
    handled = 0

    async def slow(event: Event) -> None:
        nonlocal handled
        handled += 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    subscription = bus.subscribe(slow, backpressure=policy)
    scope = Scope(run_id="run-1", agent="bench")
    text = "x" * 100

    async def publish(count: int, offset: int, sample: bool) -> float:
        peak = 0.0
        for index in range(offset, offset + count):
            await bus.publish(Event("agent.llm.delta",
                                    {"call_id": "llm-1", "index": index, "text": text},
                                    scope=scope))
            if index % 64 == 63:
                await asyncio.sleep(0)
            if sample and index % 10_000 == 0:
                peak = max(peak, rss_mb())
        return peak

    await publish(20_000, 0, sample=False)
    await asyncio.sleep(0.05)
    gc.collect()
    baseline = rss_mb()
    start = time.perf_counter()
    peak = await publish(events, 20_000, sample=True)
    elapsed = time.perf_counter() - start
    peak = max(peak, rss_mb())
    stats = subscription.stats()
    await bus.close(drain=False)
    return {
        "policy": policy,
        "events": events,
        "rss_baseline_mb": round(baseline, 1),
        "rss_peak_mb": round(peak, 1),
        "rss_growth_mb": round(peak - baseline, 1),
        "handled": stats.handled,
        "dropped": stats.dropped,
        "max_queued": stats.max_queued,
        "seconds": round(elapsed, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--policy", choices=("drop_oldest", "block"), default="drop_oldest")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.events, args.policy))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
