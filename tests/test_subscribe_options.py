"""SubscribeOptions: subscribe()'s options as one typed object; the keywords build the same."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect

import pytest

from otel_agentbus import (
    Backpressure,
    Concurrency,
    ErrorPolicy,
    Event,
    EventBus,
    InvalidFilterError,
    InvalidSubscriptionError,
    Scope,
    SubscribeOptions,
    kinds,
    make_filter,
)
from otel_agentbus.subscribe_options import OPTION_NAMES, SubscribeKeywords

pytestmark = pytest.mark.timeout(20)


def event(kind: str, run_id: str = "r1") -> Event:
    return Event(kind, scope=Scope(run_id=run_id))


def test_the_keywords_of_subscribe_are_exactly_the_fields_of_the_options() -> None:
    assert set(SubscribeKeywords.__annotations__) == OPTION_NAMES
    assert "kinds" in OPTION_NAMES and "once" in OPTION_NAMES


def test_policy_names_become_enums_and_defaults_match_the_keyword_form() -> None:
    options = SubscribeOptions(backpressure="block", concurrency="keyed",
                               error_policy="raise")
    assert options.backpressure is Backpressure.BLOCK
    assert options.concurrency is Concurrency.KEYED
    assert options.error_policy is ErrorPolicy.RAISE
    defaults = SubscribeOptions()
    assert defaults.buffer == 1024
    assert defaults.backpressure is Backpressure.DROP_OLDEST
    assert defaults == SubscribeOptions(backpressure="drop_oldest")


@pytest.mark.parametrize(("options", "message"), [
    ({"buffer": 0}, "buffer must be an int >= 1"),
    ({"buffer": True}, "buffer must be an int >= 1"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"timeout": -1}, "timeout must be a number > 0"),
    ({"priority": "high"}, "priority must be an int"),
    ({"key": 3}, "key must be callable"),
    ({"backpressure": "sometimes"}, "sometimes"),
    ({"once": True, "concurrency": "concurrent"}, "once=True needs sequential"),
    ({"run_id": "a", "execution_id": "b"}, "run_id and execution_id disagree"),
    ({"filter": "agent.run.started"}, "filter must be an EventFilter"),
])
def test_a_bad_option_is_refused_when_the_object_is_built(
    options: dict[str, object], message: str,
) -> None:
    with pytest.raises(InvalidSubscriptionError, match=message):
        SubscribeOptions(**options)  # type: ignore[arg-type]


def test_a_bad_filter_option_is_refused_when_the_object_is_built() -> None:
    with pytest.raises(InvalidFilterError):
        SubscribeOptions(kinds="agent.no.such.kind")


def test_options_are_frozen() -> None:
    options = SubscribeOptions(buffer=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.buffer = 8  # type: ignore[misc]


async def test_subscribe_takes_an_options_object_and_filters_by_it() -> None:
    bus = EventBus()
    seen: list[str] = []
    options = SubscribeOptions(kinds=[kinds.TOOL_CALL_STARTED], run_id="r1", name="tools",
                               buffer=8)
    sub = bus.subscribe(lambda e: seen.append(e.kind), options)
    await bus.publish(event(kinds.TOOL_CALL_STARTED))
    await bus.publish(event(kinds.TOOL_CALL_STARTED, run_id="r2"))
    await bus.publish(event(kinds.RUN_STARTED))
    await bus.close()
    assert seen == [kinds.TOOL_CALL_STARTED]
    assert sub.name == "tools"
    assert sub.stats().received == 1


async def test_keywords_given_with_options_replace_those_fields() -> None:
    bus = EventBus()
    seen: list[Event] = []
    base = SubscribeOptions(kinds=kinds.RUN_STARTED, name="base")
    sub = bus.subscribe(seen.append, base, kinds=kinds.RUN_COMPLETED)
    await bus.publish(event(kinds.RUN_STARTED))
    await bus.publish(event(kinds.RUN_COMPLETED))
    await bus.close()
    assert [e.kind for e in seen] == [kinds.RUN_COMPLETED]
    assert sub.name == "base"


async def test_stream_and_subscribe_once_take_options_too() -> None:
    bus = EventBus()
    stream = bus.stream(SubscribeOptions(kinds=kinds.RUN_STARTED))
    firsts: list[Event] = []
    once = bus.subscribe_once(firsts.append, SubscribeOptions(kinds=kinds.RUN_COMPLETED))
    for kind in (kinds.RUN_STARTED, kinds.RUN_COMPLETED, kinds.RUN_COMPLETED):
        await bus.publish(event(kind))
    got = await stream.next(timeout=5)
    await asyncio.wait_for(once.wait(), 5)
    assert got.kind == kinds.RUN_STARTED
    assert [e.kind for e in firsts] == [kinds.RUN_COMPLETED]
    await bus.close()


async def test_an_iterator_with_concurrent_options_is_refused() -> None:
    bus = EventBus()
    with pytest.raises(InvalidSubscriptionError, match="always sequential"):
        bus.stream(SubscribeOptions(concurrency="concurrent"))
    with pytest.raises(InvalidSubscriptionError, match="options must be a SubscribeOptions"):
        bus.subscribe(print, {"kinds": "agent.run.started"})  # type: ignore[arg-type]
    await bus.close()


def test_the_options_filter_is_the_filter_the_keywords_build() -> None:
    options = SubscribeOptions(kind_prefix="agent.tool.", agent="a")
    assert options.event_filter == make_filter(kind_prefix="agent.tool.", agent="a")
    assert "options" in inspect.signature(EventBus.subscribe).parameters
