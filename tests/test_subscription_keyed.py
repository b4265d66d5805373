"""Keyed delivery with many interleaved runs: a bounded pool of runners, one key at a time each.

Handler "delays" are counts of ``asyncio.sleep(0)``; no test asserts on wall time (timeouts
only stop a test that would otherwise hang).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from typing import Any

import pytest
from async_helpers import yields

from otel_agentbus import Event, EventBus, Scope

pytestmark = pytest.mark.timeout(30)

KIND = "custom.work"


@pytest.fixture(autouse=True)
def _quiet_bus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="otel_agentbus.bus")


def work(run: int, i: int, **payload: Any) -> Event:
    return Event(KIND, {"run": run, "i": i, **payload}, scope=Scope(run_id=f"r{run}"))


class Probe:
    """Records, per run, the order handled; the tasks handlers ran on; the peak in flight."""

    def __init__(self, delays: dict[tuple[int, int], int] | None = None) -> None:
        self.order: dict[int, list[int]] = defaultdict(list)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.running: set[int] = set()
        self.peak = 0
        self.violations: list[str] = []
        self.delays = delays or {}

    async def __call__(self, event: Event) -> None:
        run, i = event.payload["run"], event.payload["i"]
        assert isinstance(run, int) and isinstance(i, int)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        if run in self.running:
            self.violations.append(f"run {run} handled twice at once")
        self.running.add(run)
        self.peak = max(self.peak, len(self.running))
        await yields(self.delays.get((run, i), 0))
        self.running.discard(run)
        self.order[run].append(i)


@pytest.mark.parametrize("max_concurrency", [1, 7, 1000])
async def test_many_interleaved_runs_keep_order_with_a_bounded_pool(max_concurrency: int) -> None:
    rng = random.Random(max_concurrency)
    runs, per_run = 300, 8
    probe = Probe({(r, i): rng.choice([0, 0, 1, 3]) for r in range(runs) for i in range(per_run)})
    bus = EventBus()
    sub = bus.subscribe(probe, concurrency="keyed", max_concurrency=max_concurrency,
                        buffer=64, backpressure="block")
    for i in range(per_run):
        for run in range(runs):
            await bus.publish(work(run, i))
            if rng.random() < 0.05:
                await yields(rng.randint(1, 3))
    await asyncio.wait_for(bus.close(), 10)

    assert probe.violations == []
    assert dict(probe.order) == {run: list(range(per_run)) for run in range(runs)}
    assert probe.peak <= max_concurrency
    # Runners outlive their key: never more tasks than max_concurrency, whatever the number
    # of runs (a task per key made one per key whose queue refilled: thousands here).
    assert len(probe.tasks) <= max_concurrency
    stats = sub.stats()
    total = runs * per_run
    assert (stats.received, stats.handled, stats.failed, stats.dropped, stats.queued) == (
        total, total, 0, 0, 0)
    assert stats.max_queued <= 64


async def test_runners_are_reused_across_bursts() -> None:
    probe = Probe()
    bus = EventBus()
    bus.subscribe(probe, concurrency="keyed", max_concurrency=50)
    for burst in range(5):
        for run in range(200):
            await bus.publish(work(run, burst))
        await yields(20)  # every runner parks between bursts
    await asyncio.wait_for(bus.close(), 10)
    assert dict(probe.order) == {run: list(range(5)) for run in range(200)}
    assert len(probe.tasks) <= 50


async def test_up_to_max_concurrency_runs_are_handled_at_once() -> None:
    """Every handler waits until all ``limit`` runs have started: a hang unless parallel."""
    limit = 40
    started: set[int] = set()
    all_started = asyncio.Event()
    in_flight = 0
    peak = 0

    async def handler(event: Event) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        run = event.payload["run"]
        assert isinstance(run, int)
        if run < limit:
            started.add(run)
            if len(started) == limit:
                all_started.set()
            await all_started.wait()
        in_flight -= 1

    bus = EventBus()
    sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=limit)
    for run in range(limit + 10):  # ten more runs than may run at once
        await bus.publish(work(run, 0))
    await asyncio.wait_for(all_started.wait(), 5)
    await asyncio.wait_for(bus.close(), 5)
    assert peak == limit
    assert sub.stats().handled == limit + 10


async def test_a_timed_out_run_does_not_hold_up_the_others() -> None:
    handled: list[tuple[int, int]] = []
    others_done_at_timeout: list[int] = []

    async def handler(event: Event) -> None:
        run, i = event.payload["run"], event.payload["i"]
        assert isinstance(run, int) and isinstance(i, int)
        if (run, i) == (0, 0):
            try:
                await asyncio.Event().wait()  # hangs until its timeout cancels it
            except asyncio.CancelledError:
                others_done_at_timeout.append(sum(1 for r, _ in handled if r != 0))
                raise
        handled.append((run, i))

    bus = EventBus()
    sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=3, timeout=0.2)
    for i in range(5):
        for run in range(3):
            await bus.publish(work(run, i))
    await asyncio.wait_for(bus.close(), 5)
    assert others_done_at_timeout == [10]  # runs 1 and 2 went on while run 0 hung
    assert [i for run, i in handled if run == 0] == [1, 2, 3, 4]  # then run 0, in order
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.timed_out, stats.failed) == (15, 14, 1, 0)


async def test_close_with_drain_handles_every_pending_key() -> None:
    probe = Probe({(r, 0): 2 for r in range(0, 500, 3)})
    bus = EventBus()
    sub = bus.subscribe(probe, concurrency="keyed", max_concurrency=16, buffer=10_000)
    for i in range(4):
        for run in range(500):
            await bus.publish(work(run, i))
    assert sub.stats().queued > 0  # nothing handled yet: close must drain it all
    await asyncio.wait_for(bus.close(drain=True), 10)
    assert dict(probe.order) == {run: [0, 1, 2, 3] for run in range(500)}
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.dropped, stats.queued) == (2000, 2000, 0, 0)
    assert sub.done
    await yields(3)
    assert all(task.done() for task in probe.tasks)  # no runner outlives its subscription


async def test_close_without_drain_cancels_in_flight_handlers_and_counts_the_rest() -> None:
    gate = asyncio.Event()
    started: list[int] = []
    cancelled: list[int] = []

    async def handler(event: Event) -> None:
        run = event.payload["run"]
        assert isinstance(run, int)
        started.append(run)
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled.append(run)
            raise

    bus = EventBus()
    sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=4, buffer=1_000)
    for i in range(3):
        for run in range(10):
            await bus.publish(work(run, i))
    for _ in range(200):
        if len(started) == 4:
            break
        await asyncio.sleep(0)
    assert len(started) == 4
    await asyncio.wait_for(bus.close(drain=False), 5)
    await yields(3)
    assert sorted(cancelled) == sorted(started)  # every handler in flight was cancelled
    assert len(started) == 4  # and none started after the close
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.failed) == (30, 0, 0)
    assert stats.received == stats.handled + stats.failed + stats.dropped + stats.queued


async def test_error_raise_with_many_runs_stops_every_runner() -> None:
    handled: list[tuple[int, int]] = []

    async def handler(event: Event) -> None:
        run, i = event.payload["run"], event.payload["i"]
        assert isinstance(run, int) and isinstance(i, int)
        if (run, i) == (5, 1):
            raise ValueError("boom")
        await asyncio.sleep(0)
        handled.append((run, i))

    bus = EventBus()
    sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=8, buffer=1_000,
                        error_policy="raise")
    for i in range(5):
        for run in range(20):
            await bus.publish(work(run, i))
    with pytest.raises(ValueError, match="boom"):
        await asyncio.wait_for(sub.wait(), 5)
    after_failure = len(handled)
    await yields(10)
    assert len(handled) <= after_failure + 8  # handlers already suspended may complete
    await bus.close()
    await yields(3)
    stats = sub.stats()
    assert stats.failed == 1
    assert stats.received == 100
    assert stats.received == stats.handled + stats.failed + stats.dropped + stats.queued


async def test_a_handler_cancelling_its_task_is_one_failure_and_the_run_goes_on() -> None:
    handled: list[tuple[int, int]] = []

    async def handler(event: Event) -> None:
        run, i = event.payload["run"], event.payload["i"]
        assert isinstance(run, int) and isinstance(i, int)
        if (run, i) == (1, 0):
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
        handled.append((run, i))

    bus = EventBus()
    sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=2)
    await bus.publish(work(1, 0))
    await bus.publish(work(2, 0))
    await yields(10)
    await bus.publish(work(1, 1))  # the run's next event still gets a runner
    await asyncio.wait_for(bus.close(), 5)
    assert sorted(handled) == [(1, 1), (2, 0)]
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.failed, stats.dropped) == (3, 2, 1, 0)


async def test_keys_beyond_max_concurrency_wait_in_the_queue_under_backpressure() -> None:
    gate = asyncio.Event()

    async def handler(event: Event) -> None:
        await gate.wait()

    bus = EventBus()
    sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=2, buffer=3,
                        backpressure="block")
    for run in range(5):  # runs 0 and 1 take both runners; 2, 3, 4 fill the buffer
        await bus.publish(work(run, 0))
    await yields(10)
    publisher = asyncio.create_task(bus.publish(work(5, 0)))
    await yields(10)
    assert not publisher.done()  # the sixth run waits for room
    assert sub.stats().queued == 3
    gate.set()
    result = await asyncio.wait_for(publisher, 5)
    assert (result.delivered, result.blocked) == (1, 1)
    await asyncio.wait_for(bus.close(), 5)
    assert sub.stats().handled == 6
