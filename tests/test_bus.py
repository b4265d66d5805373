"""The EventBus and its subscriptions, one behaviour per test."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from otel_agentbus import (
    BusClosedError,
    Concurrency,
    Correlation,
    Event,
    EventBus,
    EventValidationError,
    InvalidFilterError,
    InvalidSubscriptionError,
    PublishResult,
    Scope,
    Source,
    SubscriptionClosedError,
    make_filter,
)

pytestmark = pytest.mark.timeout(20)

DROPPABLE = "agent.llm.delta"
MUST = "agent.run.started"
TRACE = "0123456789abcdef0123456789abcdef"


@pytest.fixture(autouse=True)
def _quiet_bus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL, logger="otel_agentbus.bus")


def ev(kind: str = "custom.x", payload: dict[str, Any] | None = None, **kw: Any) -> Event:
    return Event(kind, payload, **kw)


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    """Yield to the loop until ``cond()`` holds; fail after ``timeout`` seconds."""
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0)
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


async def spin(times: int = 10) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


class Recorder:
    """A sync handler that records (seq, kind) of what it got."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def seqs(self) -> list[int | None]:
        return [e.seq for e in self.events]

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


# ===================================================================== filters
async def test_filter_by_kinds() -> None:
    bus = EventBus()
    one, many = Recorder(), Recorder()
    bus.subscribe(one, kinds="agent.run.started")
    bus.subscribe(many, kinds=["agent.run.started", "custom.b"])
    for kind in ["agent.run.started", "custom.a", "custom.b", "agent.run.completed"]:
        await bus.publish(ev(kind))
    await bus.close()
    assert one.kinds == ["agent.run.started"]
    assert many.kinds == ["agent.run.started", "custom.b"]


async def test_filter_by_kind_prefix() -> None:
    bus = EventBus()
    llm, both = Recorder(), Recorder()
    bus.subscribe(llm, kind_prefix="agent.llm.")
    bus.subscribe(both, kind_prefix=["agent.llm.tool_call.", "custom."])
    kinds = ["agent.llm.delta", "agent.run.started", "agent.llm.tool_call.delta", "custom.z",
             "agent.error"]
    for kind in kinds:
        await bus.publish(ev(kind))
    await bus.close()
    assert llm.kinds == ["agent.llm.delta", "agent.llm.tool_call.delta"]
    assert both.kinds == ["agent.llm.tool_call.delta", "custom.z"]


async def test_filter_by_source_and_source_names() -> None:
    bus = EventBus()
    tools, named, search_only = Recorder(), Recorder(), Recorder()
    bus.subscribe(tools, source="tool")
    bus.subscribe(named, source_names=["search", "fetch"])
    bus.subscribe(search_only, source="tool", source_names="search")
    for source in [Source("tool", "search"), Source("tool", "calc"), Source("llm", "fetch"),
                   Source()]:
        await bus.publish(ev(source=source))
    await bus.close()
    assert [e.source for e in tools.events] == [Source("tool", "search"), Source("tool", "calc")]
    assert [e.source for e in named.events] == [Source("tool", "search"), Source("llm", "fetch")]
    assert [e.source for e in search_only.events] == [Source("tool", "search")]


SCOPE_FIELDS = ["run_id", "stream_id", "node_id", "agent", "session_id", "turn_id", "graph_id"]


@pytest.mark.parametrize("field", SCOPE_FIELDS)
async def test_filter_by_each_scope_field(field: str) -> None:
    bus = EventBus()
    got = Recorder()
    bus.subscribe(got, **{field: "wanted"})
    await bus.publish(ev(scope=Scope(**{field: "wanted"}), payload={"i": 1}))
    await bus.publish(ev(scope=Scope(**{field: "other"}), payload={"i": 2}))
    await bus.publish(ev(payload={"i": 3}))
    other_field = next(f for f in SCOPE_FIELDS if f != field)
    await bus.publish(ev(scope=Scope(**{other_field: "wanted"}), payload={"i": 4}))
    await bus.close()
    assert [e.payload["i"] for e in got.events] == [1]


async def test_execution_id_is_an_alias_of_run_id() -> None:
    bus = EventBus()
    alias, both = Recorder(), Recorder()
    bus.subscribe(alias, execution_id="r1")
    bus.subscribe(both, execution_id="r1", run_id="r1")
    await bus.publish(ev(scope=Scope(run_id="r1")))
    await bus.publish(ev(scope=Scope(run_id="r2")))
    await bus.close()
    assert [e.run_id for e in alias.events] == ["r1"]
    assert [e.run_id for e in both.events] == ["r1"]


async def test_execution_id_disagreeing_with_run_id_is_rejected() -> None:
    bus = EventBus()
    with pytest.raises(InvalidSubscriptionError, match="run_id and execution_id disagree"):
        bus.subscribe(Recorder(), execution_id="a", run_id="b")
    assert bus.subscriptions == ()


async def test_filter_by_predicate() -> None:
    bus = EventBus()
    got = Recorder()
    bus.subscribe(got, predicate=lambda e: e.payload.get("n", 0) > 1)
    for n in [0, 1, 2, 3]:
        await bus.publish(ev(payload={"n": n}))
    await bus.close()
    assert [e.payload["n"] for e in got.events] == [2, 3]


async def test_predicate_that_raises_is_a_counted_failure() -> None:
    bus = EventBus()
    got = Recorder()

    def predicate(event: Event) -> bool:
        if event.payload["n"] == 1:
            raise KeyError("bad")
        return True

    sub = bus.subscribe(got, predicate=predicate)
    results = [await bus.publish(ev(payload={"n": n})) for n in range(3)]
    assert [r.matched for r in results] == [1, 0, 1]
    await until(lambda: len(got.events) == 2)
    assert sub.stats().failed == 1
    assert bus.stats().failed == 1
    await bus.close()
    assert [e.payload["n"] for e in got.events] == [0, 2]


async def test_combined_filter_argument() -> None:
    bus = EventBus()
    anded, mixed, alone = Recorder(), Recorder(), Recorder()
    wanted = make_filter(kinds=["custom.a", "custom.b"]) & make_filter(run_id="r1")
    bus.subscribe(anded, filter=wanted)
    # Keyword filters and filter= are combined with AND too.
    bus.subscribe(mixed, filter=wanted, kind_prefix="custom.b")
    bus.subscribe(alone, filter=make_filter(source="tool"))
    events = [
        ev("custom.a", scope=Scope(run_id="r1")),
        ev("custom.b", scope=Scope(run_id="r1"), source=Source("tool", "t")),
        ev("custom.a", scope=Scope(run_id="r2")),
        ev("custom.c", scope=Scope(run_id="r1")),
    ]
    for event in events:
        await bus.publish(event)
    await bus.close()
    assert anded.seqs == [1, 2]
    assert mixed.seqs == [2]
    assert alone.seqs == [2]
    assert wanted.matches(events[0]) and not wanted.matches(events[2])


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"kinds": "agent.run.start"}, "'agent.run.start'"),
        ({"kinds": ["custom.ok", "nope"]}, "'nope'"),
        ({"kinds": []}, "kinds is empty"),
        ({"kinds": 5}, "kinds must be a str or an iterable"),
        ({"kinds": ["custom."]}, "'custom.'"),
        ({"kind_prefix": ""}, "kind_prefix must be non-empty"),
        ({"kind_prefix": []}, "kind_prefix must be non-empty"),
        ({"kind_prefix": 7}, "kind_prefix must be a str or an iterable"),
        ({"source": 3}, "source must be a component name"),
        ({"source_names": [1]}, "source_names must be strings"),
        ({"source_names": []}, "source_names is empty"),
        ({"source_names": 9}, "source_names must be a str or an iterable"),
        ({"run_id": 5}, "run_id filter must be a str"),
        ({"execution_id": 5}, "run_id filter must be a str"),
        ({"node_id": ["n"]}, "node_id filter must be a str"),
        ({"graph_id": 1}, "graph_id filter must be a str"),
        ({"predicate": "yes"}, "predicate must be callable"),
    ],
)
async def test_invalid_filters_are_rejected_and_the_bus_keeps_serving(
    options: dict[str, Any], fragment: str
) -> None:
    bus = EventBus()
    with pytest.raises(InvalidFilterError) as info:
        bus.subscribe(Recorder(), **options)
    assert fragment in str(info.value)
    with pytest.raises(InvalidFilterError):
        bus.stream(**options)
    assert bus.subscriptions == ()
    got = Recorder()
    bus.subscribe(got)
    assert (await bus.publish(ev())).delivered == 1
    await bus.close()
    assert got.seqs == [1]


@pytest.mark.parametrize(
    ("handler", "options", "fragment"),
    [
        ("not callable", {}, "handler must be callable"),
        (None, {"buffer": 0}, "buffer must be an int >= 1, got 0"),
        (None, {"buffer": -3}, "buffer must be an int >= 1"),
        (None, {"buffer": True}, "buffer must be an int >= 1, got True"),
        (None, {"buffer": 2.0}, "buffer must be an int >= 1"),
        (print, {"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
        (print, {"max_concurrency": "2"}, "max_concurrency must be an int >= 1"),
        (print, {"timeout": 0}, "timeout must be a number > 0"),
        (print, {"timeout": -1.0}, "timeout must be a number > 0"),
        (print, {"timeout": "1"}, "timeout must be a number > 0"),
        (print, {"priority": 1.5}, "priority must be an int"),
        (print, {"key": "run_id"}, "key must be callable"),
        (print, {"backpressure": "drop_all"}, "'drop_all'"),
        (print, {"concurrency": "parallel"}, "'parallel'"),
        (print, {"error_policy": "ignore"}, "'ignore'"),
        (print, {"filter": "kind == x"}, "filter must be an EventFilter"),
        (None, {"concurrency": "keyed"}, "iterator subscription is always sequential"),
    ],
)
async def test_invalid_subscription_options_are_rejected(
    handler: Any, options: dict[str, Any], fragment: str
) -> None:
    bus = EventBus()
    with pytest.raises(InvalidSubscriptionError) as info:
        bus.subscribe(handler, **options)
    assert fragment in str(info.value)
    assert bus.subscriptions == ()
    assert bus.stats().subscribers == 0
    got = Recorder()
    bus.subscribe(got)
    await bus.publish(ev())
    await bus.close()
    assert got.seqs == [1]


async def test_stream_takes_no_handler() -> None:
    bus = EventBus()
    with pytest.raises(InvalidSubscriptionError, match="takes no handler"):
        bus.stream(handler=print)
    with pytest.raises(TypeError, match="cannot also be iterated"):
        bus.subscribe(print).__aiter__()
    await bus.close()


# ======================================================== subscription handle
async def test_subscription_close_stats_and_wait() -> None:
    bus = EventBus()
    got = Recorder()
    sub = bus.subscribe(got, name="recorder")
    assert sub.name == "recorder" and not sub.closed and not sub.done
    await bus.publish(ev())
    await until(lambda: sub.stats().handled == 1)
    sub.close()
    assert sub.closed
    await asyncio.wait_for(sub.wait(), 1)
    assert sub.done
    stats = sub.stats()
    assert (stats.name, stats.received, stats.handled, stats.queued, stats.closed) == (
        "recorder", 1, 1, 0, True)
    result = await bus.publish(ev())
    assert result.matched == 0
    assert bus.stats().subscribers == 0
    assert got.seqs == [1]
    sub.close()  # idempotent
    await bus.close()


async def test_close_before_the_worker_ever_ran() -> None:
    """A subscription closed in the same step it was made still ends (was a hang)."""
    bus = EventBus()
    subs = [bus.subscribe(Recorder(), concurrency=mode) for mode in Concurrency]
    for sub in subs:
        sub.close()
    await asyncio.wait_for(asyncio.gather(*(s.wait() for s in subs)), 1)
    assert all(s.done for s in subs)
    fresh = bus.subscribe(Recorder())
    started = time.monotonic()
    await bus.close(drain=False)
    assert time.monotonic() - started < 1
    assert fresh.done


async def test_unsubscribe_by_handle_and_by_id() -> None:
    bus = EventBus()
    a, b = Recorder(), Recorder()
    sub_a = bus.subscribe(a)
    sub_b = bus.subscribe(b)
    assert bus.unsubscribe(sub_a) is True
    assert bus.unsubscribe(sub_a) is False
    assert bus.unsubscribe(sub_b.id) is True
    assert bus.unsubscribe(sub_b.id) is False
    assert bus.unsubscribe(12345) is False
    assert (await bus.publish(ev())).matched == 0
    await asyncio.wait_for(asyncio.gather(sub_a.wait(), sub_b.wait()), 1)
    await bus.close()
    assert a.events == [] and b.events == []


async def test_async_with_closes_the_bus() -> None:
    got = Recorder()
    async with EventBus() as bus:
        sub = bus.subscribe(got)
        await bus.publish(ev())
    assert bus.closed and sub.done
    assert got.seqs == [1]


# ============================================================ async iteration
async def test_async_iterator_stream() -> None:
    bus = EventBus()
    stream = bus.stream(kinds=["custom.a"])

    async def produce() -> None:
        for kind in ["custom.a", "custom.b", "custom.a", "custom.a"]:
            await bus.publish(ev(kind))
            await asyncio.sleep(0)

    producer = asyncio.create_task(produce())
    got: list[int | None] = []
    async for event in stream:
        got.append(event.seq)
        if len(got) == 3:
            break
    await producer
    assert got == [1, 3, 4]
    assert stream.stats().handled == 3
    await bus.close()


async def test_async_iterator_ends_when_closed() -> None:
    bus = EventBus()
    stream = bus.stream()
    for _ in range(3):
        await bus.publish(ev())
    stream.close(drain=True)
    assert [e.seq async for e in stream] == [1, 2, 3]
    assert stream.done
    with pytest.raises(SubscriptionClosedError):
        await stream.next()
    await bus.close()


async def test_async_iterator_close_without_drain_drops_queue() -> None:
    bus = EventBus()
    stream = bus.stream()
    for _ in range(3):
        await bus.publish(ev())
    stream.close()
    assert [e async for e in stream] == []
    assert stream.stats().dropped == 3
    await bus.close()


async def test_stream_next_with_timeout() -> None:
    bus = EventBus()
    stream = bus.stream()
    with pytest.raises(TimeoutError):
        await stream.next(timeout=0.01)
    await bus.publish(ev())
    assert (await stream.next(timeout=1)).seq == 1
    async with stream:
        pass
    assert stream.closed
    await bus.close()


async def test_close_with_an_unread_stream_ends_it() -> None:
    """bus.close() used to leave an unread iterator open after its timeout."""
    bus = EventBus()
    stream = bus.stream()
    await bus.publish(ev())
    await bus.publish(ev())
    await bus.close(timeout=0.05)
    assert stream.done
    assert stream.stats().dropped == 2
    assert bus.stats().dropped == 2


# ================================================================ once / wait_for
async def test_subscribe_once_handles_only_the_first_match() -> None:
    bus = EventBus()
    seen: list[int | None] = []

    async def handler(event: Event) -> None:
        seen.append(event.seq)

    sub = bus.subscribe_once(handler, kinds="custom.a")
    await bus.publish(ev("custom.b"))
    for _ in range(3):
        await bus.publish(ev("custom.a"))
    await asyncio.wait_for(sub.wait(), 1)
    assert seen == [2]
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.dropped, stats.closed) == (3, 1, 2, True)
    assert bus.stats().subscribers == 0
    await bus.publish(ev("custom.a"))
    await bus.close()
    assert seen == [2]


@pytest.mark.parametrize("concurrency", ["sequential"])
async def test_subscribe_once_with_a_sync_handler(concurrency: str) -> None:
    bus = EventBus()
    got = Recorder()
    sub = bus.subscribe_once(got, concurrency=concurrency)
    for _ in range(3):
        await bus.publish(ev())
    await asyncio.wait_for(sub.wait(), 1)
    assert got.seqs == [1]
    await bus.close()


async def test_stream_once() -> None:
    bus = EventBus()
    stream = bus.stream(once=True)
    await bus.publish(ev())
    await bus.publish(ev())
    assert [e.seq async for e in stream] == [1]
    assert stream.done
    await bus.close()


async def test_wait_for_returns_the_matching_event() -> None:
    bus = EventBus()
    waiter = asyncio.create_task(bus.wait_for("custom.done", run_id="r1", timeout=2))
    await spin()
    await bus.publish(ev("custom.other", scope=Scope(run_id="r1")))
    await bus.publish(ev("custom.done", scope=Scope(run_id="r2")))
    await bus.publish(ev("custom.done", scope=Scope(run_id="r1"), payload={"ok": True}))
    event = await waiter
    assert event is not None
    assert (event.kind, event.seq, event.payload["ok"]) == ("custom.done", 3, True)
    assert bus.stats().subscribers == 0
    await bus.close()


async def test_wait_for_returns_none_on_timeout() -> None:
    bus = EventBus()
    started = time.monotonic()
    assert await bus.wait_for("custom.never", timeout=0.05) is None
    assert 0.04 < time.monotonic() - started < 1
    assert bus.stats().subscribers == 0
    await bus.close()


async def test_wait_for_any_kind() -> None:
    bus = EventBus()
    waiter = asyncio.create_task(bus.wait_for(timeout=2))
    await spin()
    await bus.publish(ev("agent.error"))
    event = await waiter
    assert event is not None and event.kind == "agent.error"
    await bus.close()


# ================================================================ publish result
async def test_publish_result_fields() -> None:
    bus = EventBus()
    gate = asyncio.Event()

    async def stuck(event: Event) -> None:
        await gate.wait()

    bus.subscribe(Recorder(), kinds="custom.a")
    bus.subscribe(Recorder(), kinds="custom.b")
    bus.subscribe(stuck, kinds="custom.a", buffer=1, backpressure="drop_newest")
    first = await bus.publish(ev("custom.a"))
    assert first == PublishResult(seq=1, matched=2, delivered=2, dropped=0, blocked=0,
                                  deferred=False)
    second = await bus.publish(ev("custom.a"))  # the drop_newest queue is full now
    assert (second.seq, second.matched, second.delivered, second.dropped) == (2, 2, 1, 1)
    gate.set()
    await bus.close()


async def test_publish_result_counts_blocked_subscribers() -> None:
    bus = EventBus()
    got = Recorder()
    sub = bus.subscribe(got, buffer=1, backpressure="block")
    assert (await bus.publish(ev())).blocked == 0
    # The worker has not run yet: the queue is full and this publish waits for it.
    result = await bus.publish(ev())
    assert (result.seq, result.matched, result.delivered, result.dropped, result.blocked) == (
        2, 1, 1, 0, 1)
    assert bus.stats().blocked == 1
    await bus.close()
    assert got.seqs == [1, 2]
    assert sub.stats().dropped == 0


async def test_publish_with_no_subscribers() -> None:
    bus = EventBus()
    result = await bus.publish(ev())
    assert result == PublishResult(seq=1)
    assert (result.matched, result.delivered, result.dropped, result.blocked) == (0, 0, 0, 0)
    assert bus.publish_nowait(ev()) == PublishResult(seq=2)
    stats = bus.stats()
    assert (stats.published, stats.matched, stats.delivered, stats.history_size) == (2, 0, 0, 2)
    await bus.close()


async def test_publish_rejects_non_events() -> None:
    bus = EventBus()
    with pytest.raises(EventValidationError, match="takes an Event, got dict"):
        await bus.publish({"kind": "custom.x"})  # type: ignore[arg-type]
    with pytest.raises(EventValidationError):
        bus.publish_nowait("custom.x")  # type: ignore[arg-type]
    assert bus.stats().published == 0
    await bus.close()


# ============================================================ publish_nowait
async def test_publish_nowait_from_sync_code_in_the_loop() -> None:
    bus = EventBus()
    got = Recorder()
    bus.subscribe(got)

    def sync_producer() -> list[PublishResult]:
        return [bus.publish_nowait(ev(payload={"i": i})) for i in range(3)]

    results = sync_producer()
    assert [r.seq for r in results] == [1, 2, 3]
    assert all(r.delivered == 1 and not r.deferred for r in results)
    loop = asyncio.get_running_loop()
    loop.call_soon(bus.publish_nowait, ev(payload={"i": 3}))
    await until(lambda: len(got.events) == 4)
    await bus.close()
    assert [e.payload["i"] for e in got.events] == [0, 1, 2, 3]


async def test_publish_nowait_from_another_thread() -> None:
    bus = EventBus()
    got = Recorder()
    bus.subscribe(got)
    results: list[PublishResult] = []
    thread = threading.Thread(target=lambda: results.append(bus.publish_nowait(ev())))
    thread.start()
    thread.join()
    assert results == [PublishResult(seq=None, deferred=True)]
    await until(lambda: len(got.events) == 1)
    assert got.seqs == [1]
    assert bus.stats().published == 1
    await bus.close()


async def test_publish_nowait_from_threads_is_thread_safe() -> None:
    bus = EventBus(history_size=0)
    got = Recorder()
    sub = bus.subscribe(got, buffer=10_000, backpressure="drop_newest")
    threads_n, per_thread = 4, 1000

    def produce(thread_no: int) -> None:
        for i in range(per_thread):
            bus.publish_nowait(ev(payload={"t": thread_no, "i": i}))

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = threads_n * per_thread
    await until(lambda: len(got.events) == total, timeout=5)
    await bus.close()
    assert len(got.events) == total
    assert sorted(got.seqs) == list(range(1, total + 1))  # type: ignore[type-var]
    assert got.seqs == sorted(got.seqs)  # type: ignore[type-var]
    by_thread: dict[int, list[int]] = defaultdict(list)
    for event in got.events:
        by_thread[event.payload["t"]].append(event.payload["i"])
    assert {t: items for t, items in by_thread.items()} == {
        t: list(range(per_thread)) for t in range(threads_n)}
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.dropped) == (total, total, 0)
    assert bus.stats().published == total


async def test_publish_nowait_from_a_thread_after_close() -> None:
    bus = EventBus()
    bus.subscribe(Recorder())
    await bus.close()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            bus.publish_nowait(ev())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=produce)
    thread.start()
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], BusClosedError)


# =================================================================== handlers
async def test_sync_and_async_handlers() -> None:
    bus = EventBus()
    sync_got: list[int | None] = []
    async_got: list[int | None] = []

    def sync_handler(event: Event) -> None:
        sync_got.append(event.seq)

    async def async_handler(event: Event) -> None:
        await asyncio.sleep(0)
        async_got.append(event.seq)

    class CallableObject:
        def __init__(self) -> None:
            self.got: list[int | None] = []

        async def __call__(self, event: Event) -> None:
            self.got.append(event.seq)

    obj = CallableObject()
    bus.subscribe(sync_handler)
    bus.subscribe(async_handler)
    bus.subscribe(obj)
    bus.subscribe(lambda e: asyncio.sleep(0))  # returns an awaitable: awaited
    for _ in range(3):
        await bus.publish(ev())
    await bus.close()
    assert sync_got == async_got == obj.got == [1, 2, 3]


async def test_default_subscription_names() -> None:
    bus = EventBus()

    def my_handler(event: Event) -> None:
        pass

    assert bus.subscribe(my_handler).name.endswith("my_handler")
    stream = bus.stream()
    assert stream.name == f"stream-{stream.id}"
    await bus.close()


async def test_handler_that_publishes_does_not_deadlock() -> None:
    bus = EventBus()
    answers = Recorder()
    bus.subscribe(answers, kinds="custom.pong")

    async def ping(event: Event) -> None:
        await bus.publish(ev("custom.pong", {"to": event.payload["i"]}))

    bus.subscribe(ping, kinds="custom.ping", buffer=1, backpressure="block")
    for i in range(5):
        await bus.publish(ev("custom.ping", {"i": i}))
    await asyncio.wait_for(bus.close(), 2)
    assert [e.payload["to"] for e in answers.events] == [0, 1, 2, 3, 4]


async def test_handler_publishing_into_its_own_full_block_queue() -> None:
    bus = EventBus()
    seen: list[int] = []

    async def handler(event: Event) -> None:
        seen.append(event.payload["n"])
        if event.payload["n"] == 0:
            for n in (1, 2, 3):
                result = await bus.publish(ev(payload={"n": n}))
                assert result.dropped == 0 and result.blocked == 0
            bus.publish_nowait(ev(payload={"n": 4}))

    sub = bus.subscribe(handler, buffer=1, backpressure="block")
    await bus.publish(ev(payload={"n": 0}))
    await asyncio.wait_for(until(lambda: len(seen) == 5), 2)
    stats = sub.stats()
    assert seen == [0, 1, 2, 3, 4]
    assert (stats.received, stats.handled, stats.dropped, stats.overflowed) == (5, 5, 0, 3)
    await bus.close()


async def test_handlers_are_held_strongly() -> None:
    bus = EventBus()
    hits: list[str] = []

    def subscribe_temporaries() -> None:
        bus.subscribe(lambda e: hits.append("lambda"))
        bound = []

        def closure(event: Event) -> None:
            bound.append(event)
            hits.append("closure")

        bus.subscribe(closure)

        class Holder:
            async def method(self, event: Event) -> None:
                hits.append("method")

        bus.subscribe(Holder().method)

    subscribe_temporaries()
    gc.collect()
    await spin()
    gc.collect()
    await bus.publish(ev())
    await bus.close()
    assert sorted(hits) == ["closure", "lambda", "method"]


# ================================================================ backpressure
async def _gated_subscriber(bus: EventBus, **options: Any) -> tuple[Any, asyncio.Event,
                                                                     list[Event]]:
    """A subscriber whose handler blocks on a gate; returns once it holds the first event."""
    gate = asyncio.Event()
    got: list[Event] = []

    async def handler(event: Event) -> None:
        got.append(event)
        await gate.wait()

    sub = bus.subscribe(handler, **options)
    return sub, gate, got


async def test_drop_newest_exact_counts() -> None:
    bus = EventBus()
    sub, gate, got = await _gated_subscriber(bus, buffer=3, backpressure="drop_newest")
    await bus.publish(ev(DROPPABLE))
    await until(lambda: len(got) == 1)  # the handler holds event 1, the queue is empty
    results = [await bus.publish(ev(DROPPABLE)) for _ in range(9)]
    assert [r.dropped for r in results] == [0, 0, 0] + [1] * 6
    assert sub.stats().queued == 3 and sub.stats().dropped == 6
    gate.set()
    await bus.close()
    assert [e.seq for e in got] == [1, 2, 3, 4]
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.dropped, stats.max_queued) == (10, 4, 6, 3)
    assert bus.stats().dropped == 6


async def test_drop_oldest_exact_counts() -> None:
    bus = EventBus()
    sub, gate, got = await _gated_subscriber(bus, buffer=3, backpressure="drop_oldest")
    await bus.publish(ev(DROPPABLE))
    await until(lambda: len(got) == 1)
    results = [await bus.publish(ev(DROPPABLE)) for _ in range(9)]
    # The new event always gets in; an older one makes room.
    assert all(r.delivered == 1 and r.dropped == 0 for r in results)
    assert sub.stats().dropped == 6
    gate.set()
    await bus.close()
    assert [e.seq for e in got] == [1, 8, 9, 10]
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.dropped) == (10, 4, 6)
    # Evictions count in the bus totals too.
    assert bus.stats().dropped == 6


async def test_block_publisher_waits_and_nothing_is_lost() -> None:
    bus = EventBus()
    sub, gate, got = await _gated_subscriber(bus, buffer=2, backpressure="block")
    for _ in range(3):  # 1 in the handler, 2 queued
        await bus.publish(ev(DROPPABLE))
    await until(lambda: len(got) == 1)
    publisher = asyncio.create_task(bus.publish(ev(DROPPABLE)))
    await spin(20)
    assert not publisher.done()
    assert sub.stats().received == 3
    gate.set()
    result = await asyncio.wait_for(publisher, 1)
    assert (result.delivered, result.dropped, result.blocked) == (1, 0, 1)
    for _ in range(20):
        await bus.publish(ev(DROPPABLE))
    await bus.close()
    assert [e.seq for e in got] == list(range(1, 25))
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.dropped, stats.overflowed) == (24, 24, 0, 0)
    assert stats.max_queued == 2
    assert bus.stats().dropped == 0


async def test_block_publishers_keep_their_order() -> None:
    bus = EventBus()
    got = Recorder()

    async def slow(event: Event) -> None:
        await spin(3)
        got(event)

    bus.subscribe(slow, buffer=1, backpressure="block")
    publishers = [asyncio.create_task(bus.publish(ev(payload={"p": p}))) for p in range(10)]
    results = await asyncio.wait_for(asyncio.gather(*publishers), 2)
    assert all(r.delivered == 1 for r in results)
    await bus.close()
    assert [e.payload["p"] for e in got.events] == list(range(10))


async def test_cancelled_blocked_publisher_does_not_strand_the_next_one() -> None:
    """A blocked publisher cancelled after being woken used to swallow the wake-up."""
    bus = EventBus()
    sub, gate, got = await _gated_subscriber(bus, buffer=1, backpressure="block")
    await bus.publish(ev())
    await until(lambda: len(got) == 1)
    await bus.publish(ev())  # queue full
    first = asyncio.create_task(bus.publish(ev(payload={"who": "first"})))
    second = asyncio.create_task(bus.publish(ev(payload={"who": "second"})))
    await spin()
    gate.set()
    # The worker takes event 2 and wakes the first blocked publisher; cancel it then.
    await until(lambda: bool(sub._space_waiters) and sub._space_waiters[0].done())
    first.cancel()
    result = await asyncio.wait_for(second, 1)
    assert result.delivered == 1
    await bus.close()
    assert [e.payload.get("who") for e in got] == [None, None, "second"]


async def test_block_publisher_released_when_subscription_closes() -> None:
    bus = EventBus()
    sub, _gate, got = await _gated_subscriber(bus, buffer=1, backpressure="block")
    await bus.publish(ev())
    await until(lambda: len(got) == 1)
    await bus.publish(ev())
    publisher = asyncio.create_task(bus.publish(ev()))
    await spin()
    assert not publisher.done()
    await asyncio.wait_for(bus.close(drain=False), 1)
    result = await asyncio.wait_for(publisher, 1)
    assert (result.delivered, result.dropped, result.blocked) == (0, 1, 1)
    assert sub.done


async def test_block_with_publish_nowait_drops_droppable_and_overflows_must_deliver() -> None:
    bus = EventBus()
    sub, gate, got = await _gated_subscriber(bus, buffer=1, backpressure="block")
    bus.publish_nowait(ev(DROPPABLE))
    await until(lambda: len(got) == 1)
    assert bus.publish_nowait(ev(DROPPABLE)).delivered == 1
    assert bus.publish_nowait(ev(DROPPABLE)).dropped == 1
    assert bus.publish_nowait(ev(MUST)).delivered == 1
    stats = sub.stats()
    assert (stats.received, stats.dropped, stats.overflowed, stats.queued) == (4, 1, 1, 2)
    gate.set()
    await bus.close()
    assert [e.seq for e in got] == [1, 2, 4]


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
async def test_must_deliver_events_are_never_dropped(policy: str) -> None:
    bus = EventBus()
    sub, gate, got = await _gated_subscriber(bus, buffer=2, backpressure=policy)
    await bus.publish(ev(MUST))
    await until(lambda: len(got) == 1)
    kinds = [MUST, DROPPABLE, MUST, MUST, DROPPABLE, DROPPABLE, MUST]
    results = [await bus.publish(ev(kind)) for kind in kinds]
    assert all(r.dropped == 0 for r, k in zip(results, kinds, strict=True) if k == MUST)
    gate.set()
    await bus.close()
    handled_kinds = [e.kind for e in got]
    assert handled_kinds.count(MUST) == 5
    stats = sub.stats()
    assert stats.received == 8
    assert stats.handled + stats.dropped == 8
    if policy == "drop_newest":
        # Queue: M2 D3; then M4 M5 M8 overflow and D6 D7 are dropped.
        assert [e.seq for e in got] == [1, 2, 3, 4, 5, 8]
        assert (stats.dropped, stats.overflowed) == (2, 3)
    else:
        # Must-deliver events overflow rather than evict; droppable ones evict the oldest
        # droppable queued event (D3, then D6), never a must-deliver one.
        assert [e.seq for e in got] == [1, 2, 4, 5, 7, 8]
        assert (stats.dropped, stats.overflowed) == (2, 3)


async def test_drop_oldest_drops_the_new_event_when_only_must_deliver_is_queued() -> None:
    bus = EventBus()
    _sub, gate, got = await _gated_subscriber(bus, buffer=2, backpressure="drop_oldest")
    await bus.publish(ev(MUST))
    await until(lambda: len(got) == 1)
    await bus.publish(ev(MUST))
    await bus.publish(ev(MUST))
    result = await bus.publish(ev(DROPPABLE))
    assert (result.delivered, result.dropped) == (0, 1)
    gate.set()
    await bus.close()
    assert [e.seq for e in got] == [1, 2, 3]


# ================================================================= concurrency
async def test_sequential_preserves_order() -> None:
    bus = EventBus()
    order: list[int | None] = []

    async def handler(event: Event) -> None:
        await spin(event.seq % 3)  # type: ignore[operator]
        order.append(event.seq)

    in_flight = 0
    peak = 0

    async def counting(event: Event) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await spin(2)
        in_flight -= 1

    bus.subscribe(handler)
    bus.subscribe(counting)
    for _ in range(30):
        await bus.publish(ev())
    await bus.close()
    assert order == list(range(1, 31))
    assert peak == 1


async def test_concurrent_respects_max_concurrency() -> None:
    bus = EventBus()
    in_flight = 0
    peak = 0
    done: list[int | None] = []

    async def handler(event: Event) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await spin(5)
        in_flight -= 1
        done.append(event.seq)

    sub = bus.subscribe(handler, concurrency="concurrent", max_concurrency=3)
    for _ in range(20):
        await bus.publish(ev())
    await bus.close()
    assert peak == 3
    assert sorted(done) == list(range(1, 21))  # type: ignore[type-var]
    assert sub.stats().handled == 20


async def test_concurrent_runs_handlers_in_parallel() -> None:
    bus = EventBus()
    arrived: dict[int, asyncio.Event] = {1: asyncio.Event(), 2: asyncio.Event()}
    done: list[int | None] = []

    async def handler(event: Event) -> None:
        assert event.seq is not None
        arrived[event.seq].set()
        await asyncio.wait_for(arrived[3 - event.seq].wait(), 1)
        done.append(event.seq)

    sub = bus.subscribe(handler, concurrency="concurrent", max_concurrency=2)
    await bus.publish(ev())
    await bus.publish(ev())
    await bus.close()
    assert sorted(done) == [1, 2]  # type: ignore[type-var]
    assert sub.stats().failed == 0


async def test_keyed_preserves_order_per_key_and_runs_keys_in_parallel() -> None:
    bus = EventBus()
    started = {"a": asyncio.Event(), "b": asyncio.Event()}
    order: dict[str, list[int]] = defaultdict(list)

    async def handler(event: Event) -> None:
        run = event.run_id
        assert run is not None
        i = event.payload["i"]
        if i == 0:
            # Each key's first handler waits for the other key's: deadlock if sequential.
            started[run].set()
            await asyncio.wait_for(started["b" if run == "a" else "a"].wait(), 1)
        await spin(i % 3)
        order[run].append(i)

    sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=2)
    for i in range(10):
        for run in ("a", "b"):
            await bus.publish(ev(scope=Scope(run_id=run), payload={"i": i}))
    await bus.close()
    assert order == {"a": list(range(10)), "b": list(range(10))}
    stats = sub.stats()
    assert (stats.handled, stats.failed, stats.timed_out) == (20, 0, 0)


async def test_keyed_max_concurrency_limits_keys_in_flight() -> None:
    bus = EventBus()
    running: set[str] = set()
    peak = 0
    order: dict[str, list[int]] = defaultdict(list)

    async def handler(event: Event) -> None:
        nonlocal peak
        key = event.payload["k"]
        assert key not in running  # one event per key at a time
        running.add(key)
        peak = max(peak, len(running))
        await spin(4)
        running.discard(key)
        order[key].append(event.payload["i"])

    sub = bus.subscribe(handler, concurrency="keyed", max_concurrency=2,
                        key=lambda e: e.payload["k"])
    for i in range(6):
        for key in "wxyz":
            await bus.publish(ev(payload={"k": key, "i": i}))
    await bus.close()
    assert peak == 2
    assert order == {k: list(range(6)) for k in "wxyz"}
    assert sub.stats().handled == 24


async def test_keyed_default_key_is_run_then_stream() -> None:
    bus = EventBus()
    keys_seen: list[object] = []
    from otel_agentbus.subscription import run_key

    bus.subscribe(lambda e: keys_seen.append(run_key(e)), concurrency="keyed")
    await bus.publish(ev(scope=Scope(run_id="r", stream_id="s")))
    await bus.publish(ev(scope=Scope(stream_id="s")))
    await bus.publish(ev())
    await bus.close()
    assert keys_seen == ["r", "s", None]


async def test_keyed_broken_key_function_is_a_counted_failure() -> None:
    bus = EventBus()
    got = Recorder()

    def key(event: Event) -> object:
        return event.payload["k"]  # KeyError when missing

    sub = bus.subscribe(got, concurrency="keyed", key=key)
    await bus.publish(ev(payload={"k": 1}))
    await bus.publish(ev())
    await bus.publish(ev(payload={"k": 2}))
    await bus.close()
    assert got.seqs == [1, 3]
    assert (sub.stats().failed, sub.stats().handled) == (1, 2)


# ===================================================================== timeout
@pytest.mark.parametrize("concurrency", ["sequential", "concurrent", "keyed"])
async def test_timeout_cancels_the_handler(concurrency: str) -> None:
    bus = EventBus()
    observed: list[str] = []

    async def handler(event: Event) -> None:
        if event.payload["slow"]:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                observed.append("cancelled")
                raise
            finally:
                observed.append("finally")
        else:
            observed.append(f"fast {event.seq}")

    sub = bus.subscribe(handler, timeout=0.05, concurrency=concurrency, max_concurrency=1)
    started = time.monotonic()
    await bus.publish(ev(payload={"slow": True}))
    await bus.publish(ev(payload={"slow": False}))
    await asyncio.wait_for(bus.close(), 2)
    assert time.monotonic() - started < 1
    assert observed == ["cancelled", "finally", "fast 2"]
    stats = sub.stats()
    assert (stats.timed_out, stats.handled, stats.failed) == (1, 1, 0)
    assert bus.stats().timed_out == 1


async def test_sync_handler_with_timeout_is_handled() -> None:
    bus = EventBus()
    got = Recorder()
    sub = bus.subscribe(got, timeout=1)
    await bus.publish(ev())
    await bus.close()
    assert got.seqs == [1]
    assert (sub.stats().handled, sub.stats().timed_out) == (1, 0)


async def test_handler_raising_timeout_error_without_timeout_is_a_failure() -> None:
    bus = EventBus()

    def handler(event: Event) -> None:
        raise TimeoutError("its own")

    sub = bus.subscribe(handler)
    await bus.publish(ev())
    await bus.close()
    assert (sub.stats().failed, sub.stats().timed_out) == (1, 0)


# ================================================================ error policy
@pytest.mark.parametrize("kind_of_handler", ["sync", "async"])
async def test_error_isolate(kind_of_handler: str) -> None:
    bus = EventBus()
    handled: list[int | None] = []
    bystander = Recorder()

    def check(event: Event) -> None:
        if event.seq == 2:
            raise ValueError("boom")
        handled.append(event.seq)

    async def async_check(event: Event) -> None:
        check(event)

    sub = bus.subscribe(check if kind_of_handler == "sync" else async_check)
    other = bus.subscribe(bystander)
    for _ in range(4):
        await bus.publish(ev())
    await until(lambda: len(handled) == 3 and len(bystander.events) == 4)
    assert not sub.closed
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.failed) == (4, 3, 1)
    assert other.stats().failed == 0
    assert bus.stats().failed == 1
    await bus.close()
    assert handled == [1, 3, 4]
    assert bystander.seqs == [1, 2, 3, 4]


@pytest.mark.parametrize("kind_of_handler", ["sync", "async"])
async def test_error_raise_closes_the_subscription(kind_of_handler: str) -> None:
    bus = EventBus()
    handled: list[int | None] = []
    bystander = Recorder()
    error = ValueError("boom")

    def check(event: Event) -> None:
        if event.seq == 2:
            raise error
        handled.append(event.seq)

    async def async_check(event: Event) -> None:
        check(event)

    sub = bus.subscribe(check if kind_of_handler == "sync" else async_check,
                        error_policy="raise")
    bus.subscribe(bystander)
    for _ in range(4):  # all queued before the worker runs
        await bus.publish(ev())
    with pytest.raises(ValueError, match="boom") as info:
        await asyncio.wait_for(sub.wait(), 1)
    assert info.value is error
    assert sub.closed and sub.done
    # Nothing after the failure reaches the handler (it used to, for non-awaiting handlers).
    assert handled == [1]
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.failed, stats.dropped) == (4, 1, 1, 2)
    assert (await bus.publish(ev())).matched == 1  # only the bystander
    await bus.close()
    assert bystander.seqs == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        await sub.wait()


@pytest.mark.parametrize("concurrency", ["concurrent", "keyed"])
async def test_error_raise_in_parallel_modes_accounts_for_every_event(concurrency: str) -> None:
    bus = EventBus()
    handled: list[int | None] = []

    def check(event: Event) -> None:
        if event.seq == 2:
            raise ValueError("boom")
        handled.append(event.seq)

    sub = bus.subscribe(check, error_policy="raise", concurrency=concurrency,
                        max_concurrency=1)
    for _ in range(4):
        await bus.publish(ev())
    with pytest.raises(ValueError, match="boom"):
        await asyncio.wait_for(sub.wait(), 1)
    assert handled == [1]
    stats = sub.stats()
    # Keyed mode used to lose the events already moved to the key's own queue.
    assert (stats.received, stats.handled, stats.failed, stats.dropped, stats.queued) == (
        4, 1, 1, 2, 0)
    assert bus.stats().dropped == 2
    await bus.close()


async def test_error_raise_from_a_suspended_handler() -> None:
    bus = EventBus()
    handled: list[int | None] = []

    async def check(event: Event) -> None:
        await asyncio.sleep(0)
        if event.seq == 1:
            raise RuntimeError("late")
        handled.append(event.seq)

    sub = bus.subscribe(check, error_policy="raise")
    for _ in range(3):
        await bus.publish(ev())
    with pytest.raises(RuntimeError, match="late"):
        await asyncio.wait_for(sub.wait(), 1)
    assert handled == []
    await bus.close()


@pytest.mark.parametrize("mode", ["sync", "async", "async-timeout", "concurrent"])
async def test_handler_cancelling_itself_is_counted_not_fatal(mode: str) -> None:
    bus = EventBus()
    handled: list[int | None] = []

    def check(event: Event) -> None:
        if event.seq == 1:
            raise asyncio.CancelledError()
        handled.append(event.seq)

    async def async_check(event: Event) -> None:
        await asyncio.sleep(0)
        check(event)

    options: dict[str, Any] = {}
    if mode == "async-timeout":
        options["timeout"] = 5
    if mode == "concurrent":
        options["concurrency"] = "concurrent"
    sub = bus.subscribe(check if mode == "sync" else async_check, **options)
    for _ in range(3):
        await bus.publish(ev())
    await until(lambda: len(handled) == 2)
    assert not sub.closed
    stats = sub.stats()
    assert (stats.failed, stats.handled, stats.timed_out) == (1, 2, 0)
    await bus.close()
    assert sorted(handled) == [2, 3]  # type: ignore[type-var]


# ==================================================================== priority
async def test_priority_orders_subscriptions_and_wakeups() -> None:
    bus = EventBus()
    order: list[str] = []
    bus.subscribe(lambda e: order.append(f"low{e.seq}"), name="low")
    bus.subscribe(lambda e: order.append(f"high{e.seq}"), name="high", priority=10)
    bus.subscribe(lambda e: order.append(f"mid{e.seq}"), name="mid", priority=5)
    bus.subscribe(lambda e: order.append(f"low2-{e.seq}"), name="low2")
    assert [s.name for s in bus.subscriptions] == ["high", "mid", "low", "low2"]
    await spin()  # every worker is idle, waiting for work
    await bus.publish(ev())
    await bus.publish(ev())
    await bus.close()
    # Queues are filled, and idle workers woken, highest priority first.
    assert order == ["high1", "high2", "mid1", "mid2", "low1", "low2", "low2-1", "low2-2"]


async def test_priority_decides_who_gets_a_must_deliver_event_first() -> None:
    bus = EventBus()
    order: list[str] = []

    async def record(event: Event, name: str) -> None:
        order.append(name)

    low = bus.stream(priority=-1)
    high = bus.stream(priority=1)

    async def read(stream: Any, name: str) -> None:
        async for event in stream:
            await record(event, name)

    readers = [asyncio.create_task(read(low, "low")), asyncio.create_task(read(high, "high"))]
    await spin()
    await bus.publish(ev(MUST))
    await bus.close()
    await asyncio.gather(*readers)
    assert order == ["high", "low"]


# ===================================================================== history
async def test_history_queries() -> None:
    bus = EventBus()
    specs = [
        ("custom.a", Scope(run_id="r1", stream_id="s1", node_id="n1"), 100),
        ("custom.b", Scope(run_id="r1", stream_id="s2", node_id="n2"), 200),
        ("custom.a", Scope(run_id="r2", stream_id="s1", node_id="n1"), 300),
        ("agent.run.started", Scope(run_id="r2"), 400),
        ("custom.a", Scope(), 500),
    ]
    for kind, scope, time_ns in specs:
        await bus.publish(ev(kind, scope=scope, time_ns=time_ns))

    def seqs(**query: Any) -> list[int | None]:
        return [e.seq for e in bus.history(**query)]

    assert seqs() == [5, 4, 3, 2, 1]
    assert seqs(kinds="custom.a") == [5, 3, 1]
    assert seqs(kinds=["custom.b", "agent.run.started"]) == [4, 2]
    assert seqs(run_id="r1") == [2, 1]
    assert seqs(stream_id="s1") == [3, 1]
    assert seqs(node_id="n2") == [2]
    assert seqs(since_ns=200) == [5, 4, 3, 2]
    assert seqs(until_ns=300) == [3, 2, 1]
    assert seqs(since_ns=200, until_ns=400) == [4, 3, 2]
    assert seqs(kinds="custom.a", run_id="r2", stream_id="s1", node_id="n1") == [3]
    assert seqs(limit=2) == [5, 4]
    assert seqs(kinds="custom.a", limit=2) == [5, 3]
    assert seqs(limit=None) == [5, 4, 3, 2, 1]
    assert seqs(limit=0) == []
    assert seqs(run_id="nobody") == []
    with pytest.raises(InvalidFilterError, match=r"'custom\.'"):
        bus.history(kinds="custom.")
    await bus.close()
    assert seqs(limit=1) == [5]  # still readable after close


async def test_history_default_limit_and_ring_bound() -> None:
    bus = EventBus(history_size=150)
    for _ in range(200):
        bus.publish_nowait(ev())
    assert bus.stats().history_size == 150
    assert len(bus.history()) == 100
    everything = bus.history(limit=None)
    assert [e.seq for e in everything] == list(range(200, 50, -1))
    await bus.close()


async def test_history_can_be_off() -> None:
    bus = EventBus(history_size=0)
    await bus.publish(ev())
    assert bus.history() == []
    assert bus.stats().history_size == 0
    with pytest.raises(ValueError, match="history_size"):
        EventBus(history_size=-1)
    await bus.close()


# ======================================================================= stats
async def test_stats_are_exact() -> None:
    bus = EventBus()
    gate = asyncio.Event()

    async def gated(event: Event) -> None:
        await gate.wait()
        if event.payload.get("fail"):
            raise ValueError("x")
        if event.payload.get("slow"):
            await asyncio.sleep(10)

    ok = Recorder()
    sub_ok = bus.subscribe(ok, kinds="custom.a", name="ok")
    sub_gated = bus.subscribe(gated, name="gated", buffer=2, backpressure="drop_newest",
                              timeout=0.05)
    await spin()
    await bus.publish(ev("custom.a"))                       # both; gated holds it
    await until(lambda: sub_gated.stats().queued == 0)
    await bus.publish(ev("custom.b", {"fail": True}))      # gated queue 1
    await bus.publish(ev("custom.b", {"slow": True}))      # gated queue 2
    await bus.publish(ev("custom.b"))                      # gated full: dropped
    await bus.publish(ev("custom.a"))                      # ok; gated dropped
    stats = bus.stats()
    assert (stats.published, stats.matched, stats.delivered, stats.dropped) == (5, 7, 5, 2)
    assert (stats.subscribers, stats.history_size, stats.closed) == (2, 5, False)
    gate.set()
    await until(lambda: sub_gated.stats().queued == 0 and sub_gated.stats().timed_out == 1)
    await until(lambda: sub_ok.stats().handled == 2)
    by_name = {s.name: s for s in bus.stats().subscriber_stats}
    g = by_name["gated"]
    assert (g.received, g.handled, g.failed, g.timed_out, g.dropped, g.overflowed) == (
        5, 1, 1, 1, 2, 0)
    assert g.received == g.handled + g.failed + g.timed_out + g.dropped + g.queued
    assert g.max_queued == 2
    o = by_name["ok"]
    assert (o.received, o.handled, o.failed, o.timed_out, o.dropped) == (2, 2, 0, 0, 0)
    final = bus.stats()
    assert (final.failed, final.timed_out, final.hook_errors, final.blocked) == (1, 1, 0, 0)
    await bus.close()
    closed = bus.stats()
    assert closed.closed and closed.subscribers == 0 and closed.subscriber_stats == ()


# ==================================================================== sequence
async def test_seq_is_strictly_increasing_and_gaps_equal_drops() -> None:
    bus = EventBus()
    sub, gate, got = await _gated_subscriber(bus, buffer=4, backpressure="drop_newest")
    published: list[int] = []
    for round_no in range(5):
        for _ in range(7):
            result = await bus.publish(ev(DROPPABLE))
            assert result.seq is not None
            published.append(result.seq)
        if round_no % 2:
            gate.set()
            await spin(20)
            gate.clear()
    gate.set()
    await bus.close()
    assert published == list(range(1, 36))
    seqs = [e.seq for e in got if e.seq is not None]
    assert len(seqs) == len(got)
    assert all(a < b for a, b in itertools.pairwise(seqs))
    gaps = (seqs[0] - 1) + sum(b - a - 1 for a, b in itertools.pairwise(seqs))
    gaps += published[-1] - seqs[-1]
    assert sub.stats().dropped > 0
    assert gaps == sub.stats().dropped


async def test_republishing_the_same_event_object() -> None:
    bus = EventBus()
    got = Recorder()
    bus.subscribe(got)
    event = ev(payload={"x": 1})
    first = await bus.publish(event)
    assert first.seq == 1 and event.seq == 1
    second = await bus.publish(event)
    third = bus.publish_nowait(event)
    assert (second.seq, third.seq) == (2, 3)
    assert event.seq == 1  # the original is untouched
    await bus.close()
    assert got.seqs == [1, 2, 3]
    assert got.events[0] is event
    assert got.events[1] is not event and got.events[2] is not event
    assert all(e.id == event.id and e.payload == {"x": 1} for e in got.events)
    assert [e.seq for e in bus.history()] == [3, 2, 1]


async def test_republishing_into_a_full_block_queue_delivers_the_new_copy() -> None:
    """The publisher waits for room, then queues the copy it stamped, not the original."""
    bus = EventBus()
    sub, gate, got = await _gated_subscriber(bus, buffer=1, backpressure="block")
    event = ev(MUST)
    await bus.publish(event)  # seq 1: the handler holds it
    await until(lambda: len(got) == 1)
    await bus.publish(ev(MUST))  # seq 2 fills the queue
    publisher = asyncio.create_task(bus.publish(event))  # seq 3 waits for room
    await spin()
    assert not publisher.done()
    gate.set()
    result = await asyncio.wait_for(publisher, 1)
    assert (result.seq, result.delivered, result.blocked) == (3, 1, 1)
    await bus.close()
    assert [e.seq for e in got] == [1, 2, 3]
    assert got[2] is not event and got[2].id == event.id
    assert sub.stats().handled == 3


# ======================================================================= close
async def test_close_drain_delivers_queued_events_then_ends_every_subscription() -> None:
    bus = EventBus()
    handled: list[int | None] = []

    async def slow(event: Event) -> None:
        await spin(2)
        handled.append(event.seq)

    subs = [
        bus.subscribe(slow, buffer=100),
        bus.subscribe(Recorder(), concurrency="concurrent", max_concurrency=2),
        bus.subscribe(Recorder(), concurrency="keyed"),
    ]
    stream = bus.stream()
    streamed: list[int | None] = []

    async def read() -> None:
        async for event in stream:
            streamed.append(event.seq)

    reader = asyncio.create_task(read())
    for _ in range(30):
        await bus.publish(ev())
    assert subs[0].stats().queued > 0
    await asyncio.wait_for(bus.close(), 2)
    await asyncio.wait_for(reader, 1)
    assert handled == list(range(1, 31))
    assert streamed == list(range(1, 31))
    assert all(s.done and s.closed for s in [*subs, stream])
    assert [s.stats().handled for s in subs] == [30, 30, 30]
    assert bus.closed and bus.stats().closed
    await bus.close()  # idempotent


async def test_close_without_drain_cancels_handlers() -> None:
    bus = EventBus()
    observed: list[str] = []
    gate = asyncio.Event()

    async def handler(event: Event) -> None:
        observed.append(f"start {event.seq}")
        try:
            await gate.wait()
        except asyncio.CancelledError:
            observed.append(f"cancelled {event.seq}")
            raise

    sub = bus.subscribe(handler)
    for _ in range(5):
        await bus.publish(ev())
    await until(lambda: observed == ["start 1"])
    await asyncio.wait_for(bus.close(drain=False), 1)
    assert observed == ["start 1", "cancelled 1"]
    assert sub.done
    assert sub.stats().handled == 0
    assert sub.stats().dropped == 4


async def test_close_timeout_cancels_stuck_handlers() -> None:
    bus = EventBus()
    observed: list[str] = []

    async def stuck(event: Event) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            observed.append("finally")

    sub = bus.subscribe(stuck)
    await bus.publish(ev())
    await spin()
    started = time.monotonic()
    await bus.close(timeout=0.05)
    assert time.monotonic() - started < 1
    assert observed == ["finally"]
    assert sub.done


async def test_closed_bus_refuses_publish_and_subscribe() -> None:
    bus = EventBus()
    bus.subscribe(Recorder())
    await bus.close()
    with pytest.raises(BusClosedError):
        await bus.publish(ev())
    with pytest.raises(BusClosedError):
        bus.publish_nowait(ev())
    with pytest.raises(BusClosedError):
        bus.subscribe(Recorder())
    with pytest.raises(BusClosedError):
        bus.stream()
    with pytest.raises(BusClosedError):
        await bus.wait_for("custom.x", timeout=0.01)
    assert bus.stats().published == 0


# ======================================================================= hooks
async def test_failing_hook_is_counted_and_does_not_break_publishing() -> None:
    bus = EventBus()
    got = Recorder()
    bus.subscribe(got)
    calls: list[int | None] = []

    def bad_hook(event: Event) -> None:
        raise RuntimeError("hook broke")

    bus.add_hook(bad_hook)
    bus.add_hook(lambda e: calls.append(e.seq))
    results = [await bus.publish(ev()) for _ in range(3)]
    assert [r.delivered for r in results] == [1, 1, 1]
    assert calls == [1, 2, 3]
    assert bus.stats().hook_errors == 3
    await bus.close()
    assert got.seqs == [1, 2, 3]


async def test_hook_sees_the_event_before_subscribers() -> None:
    bus = EventBus()
    seen_by_hook: list[tuple[int | None, int]] = []
    got = Recorder()
    bus.subscribe(got)

    def stamp(event: Event) -> None:
        seen_by_hook.append((event.seq, len(got.events)))
        event._stamp_correlation(Correlation(trace_id=TRACE, span_id=f"{event.seq:016x}"))

    remove = bus.add_hook(stamp)
    await bus.publish(ev())
    bus.publish_nowait(ev())
    await until(lambda: len(got.events) == 2)
    assert seen_by_hook == [(1, 0), (2, 0)]
    assert [(e.trace_id, e.span_id) for e in got.events] == [
        (TRACE, "0000000000000001"), (TRACE, "0000000000000002")]
    assert bus.history()[0].trace_id == TRACE
    remove()
    await bus.publish(ev())
    await bus.close()
    assert len(seen_by_hook) == 2
    assert got.events[2].trace_id is None
    with pytest.raises(TypeError):
        bus.add_hook("not callable")  # type: ignore[arg-type]


async def test_subscribe_outside_a_loop_is_a_clear_error() -> None:
    bus = EventBus()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            bus.subscribe(Recorder())
        except RuntimeError as error:
            errors.append(error)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "running asyncio event loop" in str(errors[0])


async def test_once_requires_sequential_delivery() -> None:
    from otel_agentbus import EventBus, InvalidSubscriptionError

    bus = EventBus()
    for concurrency in ("concurrent", "keyed"):
        with pytest.raises(InvalidSubscriptionError, match="once=True needs sequential"):
            bus.subscribe(lambda e: None, once=True, concurrency=concurrency)
    assert bus.stats().subscribers == 0
    await bus.close()
