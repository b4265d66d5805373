"""Property tests of delivery: ordering, no loss under BLOCK, exact drop accounting.

Each example runs its own event loop (``asyncio.run``); handler "delays" are counts of
``asyncio.sleep(0)``, so the interleavings are random but the tests use no wall time.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from async_helpers import yields
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_agentbus import Event, EventBus, Scope

pytestmark = pytest.mark.timeout(60)

MUST = "agent.run.started"
DROPPABLE = "agent.llm.delta"

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def run(main: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), 10)

    asyncio.run(bounded())


# ------------------------------------------------------------- (1) keyed order
@SETTINGS
@given(
    plan=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 2)),
                  max_size=40),
    max_concurrency=st.integers(1, 4),
    buffer=st.integers(1, 8),
    by_run=st.booleans(),
)
def test_keyed_preserves_per_key_order(
    plan: list[tuple[int, int, int]], max_concurrency: int, buffer: int, by_run: bool
) -> None:
    """(key, handler yields, publisher yields after) per event."""

    async def main() -> None:
        bus = EventBus()
        seen: dict[int, list[int]] = defaultdict(list)
        running: set[int] = set()
        violations: list[str] = []
        peak = 0

        async def handler(event: Event) -> None:
            nonlocal peak
            key = event.payload["k"]
            if key in running:
                violations.append(f"key {key} ran twice at once")
            running.add(key)
            peak = max(peak, len(running))
            await yields(event.payload["y"])
            running.discard(key)
            seen[key].append(event.payload["i"])

        options: dict[str, Any] = {}
        if not by_run:
            options["key"] = lambda e: e.payload["k"]
        sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=max_concurrency,
                            buffer=buffer, backpressure="block", **options)
        for i, (key, handler_yields, publisher_yields) in enumerate(plan):
            # With the default key, key 0 has neither run nor stream: the shared None key.
            scope = Scope(run_id=f"r{key}") if key else Scope()
            await bus.publish(Event("custom.work", {"k": key, "y": handler_yields, "i": i},
                                    scope=scope))
            await yields(publisher_yields)
        await bus.close()

        expected: dict[int, list[int]] = defaultdict(list)
        for i, (key, _, _) in enumerate(plan):
            expected[key].append(i)
        assert violations == []
        assert dict(seen) == dict(expected)
        assert peak <= max_concurrency
        stats = sub.stats()
        assert (stats.received, stats.handled, stats.dropped, stats.failed) == (
            len(plan), len(plan), 0, 0)

    run(main)


# ------------------------------------------------------ (2) BLOCK loses nothing
@SETTINGS
@given(
    publishers=st.lists(st.lists(st.integers(0, 3), max_size=15), min_size=1, max_size=3),
    buffer=st.integers(1, 5),
    concurrency=st.sampled_from(["sequential", "concurrent", "keyed"]),
    handler_yields=st.lists(st.integers(0, 3), min_size=1, max_size=10),
    must_every=st.integers(0, 4),
)
def test_block_loses_nothing(
    publishers: list[list[int]], buffer: int, concurrency: str, handler_yields: list[int],
    must_every: int,
) -> None:
    """Several publishers, each a list of yields to take after each of its events."""

    async def main() -> None:
        bus = EventBus()
        handled: list[tuple[int, int]] = []
        count = 0

        async def handler(event: Event) -> None:
            nonlocal count
            await yields(handler_yields[count % len(handler_yields)])
            count += 1
            handled.append((event.payload["p"], event.payload["i"]))

        sub = bus.subscribe(handler, buffer=buffer, backpressure="block",
                            concurrency=concurrency, max_concurrency=2,
                            key=lambda e: e.payload["p"])

        async def publish(p: int, gaps: list[int]) -> None:
            for i, gap in enumerate(gaps):
                kind = MUST if must_every and i % must_every == 0 else DROPPABLE
                result = await bus.publish(Event(kind, {"p": p, "i": i}))
                assert (result.delivered, result.dropped) == (1, 0)
                await yields(gap)

        await asyncio.gather(*(publish(p, gaps) for p, gaps in enumerate(publishers)))
        await bus.close()

        total = sum(len(gaps) for gaps in publishers)
        expected = {(p, i) for p, gaps in enumerate(publishers) for i in range(len(gaps))}
        assert len(handled) == total
        assert set(handled) == expected
        if concurrency != "concurrent":
            for p, gaps in enumerate(publishers):
                assert [i for q, i in handled if q == p] == list(range(len(gaps)))
        stats = sub.stats()
        assert (stats.received, stats.handled, stats.dropped, stats.overflowed) == (
            total, total, 0, 0)
        assert stats.max_queued <= buffer
        assert bus.stats().dropped == 0

    run(main)


# ---------------------------------------------------- (3) exact drop accounting
@SETTINGS
@given(
    plan=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2)), min_size=1, max_size=50),
    buffer=st.integers(1, 5),
    policy=st.sampled_from(["drop_newest", "drop_oldest"]),
    nowait=st.booleans(),
)
def test_drop_counts_are_exact(
    plan: list[tuple[int, int]], buffer: int, policy: str, nowait: bool
) -> None:
    """(handler yields, publisher yields after) per event; all droppable."""

    async def main() -> None:
        bus = EventBus()
        handled: list[int] = []

        async def handler(event: Event) -> None:
            await yields(event.payload["y"])
            assert event.seq is not None
            handled.append(event.seq)

        sub = bus.subscribe(handler, buffer=buffer, backpressure=policy)
        published: list[int] = []
        dropped_at_publish = 0
        for handler_yields, publisher_yields in plan:
            event = Event(DROPPABLE, {"y": handler_yields})
            result = bus.publish_nowait(event) if nowait else await bus.publish(event)
            assert result.seq is not None
            published.append(result.seq)
            dropped_at_publish += result.dropped
            await yields(publisher_yields)
        await bus.close()

        n = len(plan)
        stats = sub.stats()
        assert stats.received == n
        assert stats.received == stats.handled + stats.dropped
        assert stats.handled == len(handled)
        assert handled == sorted(set(handled))  # in order, each at most once
        assert set(handled) <= set(published)
        assert len(handled) + stats.dropped == n
        assert stats.max_queued <= buffer
        assert bus.stats().dropped == stats.dropped
        if policy == "drop_newest":
            assert dropped_at_publish == stats.dropped
            assert handled[0] == published[0]  # the first event always gets in
        else:
            assert dropped_at_publish == 0  # the new event always gets in
            assert handled[-1] == published[-1]  # and the newest is never evicted

    run(main)


# -------------------------------------------------- (4) must-deliver never dropped
@SETTINGS
@given(
    plan=st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(0, 3), st.integers(0, 2)),
                  min_size=1, max_size=40),
    buffer=st.integers(1, 4),
    policy=st.sampled_from(["drop_newest", "drop_oldest", "block"]),
    concurrency=st.sampled_from(["sequential", "keyed"]),
)
def test_must_deliver_is_never_dropped(
    plan: list[tuple[bool, bool, int, int]], buffer: int, policy: str, concurrency: str
) -> None:
    """(must deliver?, publish_nowait?, handler yields, publisher yields after) per event."""

    async def main() -> None:
        bus = EventBus()
        handled: list[int] = []

        async def handler(event: Event) -> None:
            await yields(event.payload["y"])
            assert event.seq is not None
            handled.append(event.seq)

        sub = bus.subscribe(handler, buffer=buffer, backpressure=policy,
                            concurrency=concurrency)
        must: set[int] = set()
        awaited_droppable: set[int] = set()
        for is_must, nowait, handler_yields, publisher_yields in plan:
            event = Event(MUST if is_must else DROPPABLE, {"y": handler_yields})
            result = bus.publish_nowait(event) if nowait else await bus.publish(event)
            assert result.seq is not None
            if is_must:
                must.add(result.seq)
                assert (result.delivered, result.dropped) == (1, 0)
            elif not nowait:
                awaited_droppable.add(result.seq)
            await yields(publisher_yields)
        await bus.close()

        stats = sub.stats()
        assert must <= set(handled)
        assert len(handled) == len(set(handled)) == stats.handled
        assert stats.handled + stats.dropped == stats.received == len(plan)
        if policy == "block":
            # An awaited publish waits for room; only publish_nowait may drop.
            assert awaited_droppable <= set(handled)
        if stats.overflowed:
            assert stats.max_queued > buffer
        else:
            assert stats.max_queued <= buffer

    run(main)
