"""Seed 004 (PicoClaw's Go ``events`` package), name by name and call pattern by call
pattern, as the seed text declares them, translated to Python the obvious way (methods and
fields snake_case, constants by their Go names, returned errors raised, ``context.Context``
-> ``Context``, channels -> async iterators). Table: docs/conformance-behest-picoclaw.md.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from async_helpers import wait_until, yields
from telemetry_helpers import HarnessFactory

from otel_agentbus import Event as CoreEvent
from otel_agentbus import EventBus as CoreBus
from otel_agentbus import Scope as CoreScope
from otel_agentbus.compat import picoclaw as pc
from otel_agentbus.compat.picoclaw import (
    Block,
    Bus,
    Concurrent,
    Context,
    Correlation,
    Crash,
    DropNewest,
    DropOldest,
    ErrBusClosed,
    ErrNilHandler,
    Event,
    EventBus,
    Keyed,
    Locked,
    PublishResult,
    RecoverAndLog,
    Scope,
    ScopeFilter,
    SeverityDebug,
    SeverityError,
    SeverityInfo,
    SeverityWarn,
    Source,
    Stats,
    SubscribeOptions,
    SubscriberStats,
    Subscription,
    background,
    known_kinds,
    match_kind_prefix,
    match_scope,
    match_source,
    with_cancel,
)
from otel_agentbus.runs import RunScope

pytestmark = pytest.mark.timeout(60)

SEED_KINDS: list[tuple[str, str]] = [  # seed 004's `const (...)` block, in its order
    ("KindAgentTurnStart", "agent.turn.start"),
    ("KindAgentTurnEnd", "agent.turn.end"),
    ("KindAgentLLMRequest", "agent.llm.request"),
    ("KindAgentLLMDelta", "agent.llm.delta"),
    ("KindAgentLLMResponse", "agent.llm.response"),
    ("KindAgentLLMRetry", "agent.llm.retry"),
    ("KindAgentContextCompress", "agent.context.compress"),
    ("KindAgentSessionSummarize", "agent.session.summarize"),
    ("KindAgentToolExecStart", "agent.tool.exec_start"),
    ("KindAgentToolExecEnd", "agent.tool.exec_end"),
    ("KindAgentToolExecSkipped", "agent.tool.exec_skipped"),
    ("KindAgentSteeringInjected", "agent.steering.injected"),
    ("KindAgentFollowUpQueued", "agent.follow_up.queued"),
    ("KindAgentInterruptReceived", "agent.interrupt.received"),
    ("KindAgentSubTurnSpawn", "agent.subturn.spawn"),
    ("KindAgentSubTurnEnd", "agent.subturn.end"),
    ("KindAgentSubTurnResultDelivered", "agent.subturn.result_delivered"),
    ("KindAgentSubTurnOrphan", "agent.subturn.orphan"),
    ("KindAgentError", "agent.error"),
    ("KindChannelLifecycleStarted", "channel.lifecycle.started"),
    ("KindChannelLifecycleInitialized", "channel.lifecycle.initialized"),
    ("KindChannelLifecycleStartFailed", "channel.lifecycle.start_failed"),
    ("KindChannelLifecycleStopped", "channel.lifecycle.stopped"),
    ("KindChannelWebhookRegistered", "channel.webhook.registered"),
    ("KindChannelWebhookUnregistered", "channel.webhook.unregistered"),
    ("KindChannelMessageOutboundQueued", "channel.message.outbound_queued"),
    ("KindChannelMessageOutboundSent", "channel.message.outbound_sent"),
    ("KindChannelMessageOutboundFailed", "channel.message.outbound_failed"),
    ("KindChannelRateLimited", "channel.rate_limited"),
    ("KindBusPublishFailed", "bus.publish.failed"),
    ("KindBusCloseStarted", "bus.close.started"),
    ("KindBusCloseCompleted", "bus.close.completed"),
    ("KindBusCloseDrained", "bus.close.drained"),
    ("KindGatewayStart", "gateway.start"),
    ("KindGatewayReady", "gateway.ready"),
    ("KindGatewayShutdown", "gateway.shutdown"),
    ("KindGatewayReloadStarted", "gateway.reload.started"),
    ("KindGatewayReloadCompleted", "gateway.reload.completed"),
    ("KindGatewayReloadFailed", "gateway.reload.failed"),
    ("KindMCPServerConnected", "mcp.server.connected"),
    ("KindMCPServerConnecting", "mcp.server.connecting"),
    ("KindMCPServerFailed", "mcp.server.failed"),
    ("KindMCPToolDiscovered", "mcp.tool.discovered"),
    ("KindMCPToolCallStart", "mcp.tool.call.start"),
    ("KindMCPToolCallEnd", "mcp.tool.call.end"),
]
ALL_SCOPE = Scope(runtime_id="rt", agent_id="ag", session_key="sk", turn_id="tu",
                  channel="telegram", account="acc", chat_id="c1", topic_id="to",
                  space_id="sp", space_type="group", chat_type="private", sender_id="u1",
                  message_id="m1")


def evt(kind: str = "agent.turn.start", **changes: Any) -> Event:
    return Event(kind=kind, **changes)


async def collect(bus: EventBus, channel: pc.EventChannel | None = None,
                  opts: SubscribeOptions | None = None) -> tuple[Subscription, list[Event]]:
    got: list[Event] = []
    sub = (channel or bus.channel()).subscribe(None, opts, lambda ctx, e: got.append(e))
    return sub, got


async def flush(bus: EventBus) -> list[Event]:
    """Publish a marker and wait until a fresh subscriber has it: every queue had it offered,
    and handlers of Locked subscriptions made before it ran in order."""
    marker: list[Event] = []
    sub = bus.channel().of_kind("gateway.ready").subscribe(None, None,
                                                          lambda ctx, e: marker.append(e))
    await bus.publish(None, evt("gateway.ready"))
    await wait_until(lambda: bool(marker))
    sub.close()
    return marker


# ------------------------------------------------------------------------------ kinds
@pytest.mark.parametrize(("name", "value"), SEED_KINDS, ids=[n for n, _ in SEED_KINDS])
async def test_every_seed_kind_is_accepted_under_its_own_name(name: str, value: str) -> None:
    assert getattr(pc, name) == value
    bus = EventBus()
    received: list[Event] = []
    sub = bus.channel().of_kind(value).subscribe(None, None, lambda ctx, e: received.append(e))
    result = await bus.publish(None, evt(value))
    assert result.err is None and result.matched == 1
    await wait_until(lambda: len(received) == 1)
    assert received[0].kind == value
    sub.close()
    await bus.close()


def test_known_kinds_returns_the_45_declared_kinds() -> None:
    assert known_kinds() == [value for _, value in SEED_KINDS]
    assert pc.KnownKinds() == known_kinds()


async def test_a_picoclaw_tool_exec_is_the_projects_tool_call() -> None:
    core = CoreBus()
    bus = EventBus(core)
    await bus.publish(None, evt(pc.KindAgentToolExecStart, payload={"tool_call_id": "t1"}))
    [stored] = core.history(kinds="agent.tool.call.started")
    assert stored.payload["tool_call_id"] == "t1"
    await bus.close()


def test_an_unknown_kind_is_refused_with_a_clear_error() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match=r"unknown event kind 'agent\.turn\.strat'"):
        bus.publish_non_blocking(evt("agent.turn.strat"))


# ------------------------------------------------------------------------ variables
async def test_err_bus_closed_when_subscribing_to_a_closed_bus() -> None:
    bus = EventBus()
    await bus.close()
    with pytest.raises(ErrBusClosed, match="events: bus is closed"):
        bus.channel().subscribe(None, None, lambda ctx, e: None)
    with pytest.raises(ErrBusClosed):
        bus.channel().subscribe_chan(None, None)


async def test_err_nil_handler_when_subscribing_without_a_handler() -> None:
    bus = EventBus()
    with pytest.raises(ErrNilHandler, match="events: handler is nil"):
        bus.channel().subscribe(None, None, None)
    with pytest.raises(ErrNilHandler):
        bus.channel().subscribe_once(None, None, None)
    assert bus.stats().subscribers == 0
    await bus.close()


# ------------------------------------------------------------------ envelope types
def test_severity_constants() -> None:
    assert [SeverityDebug, SeverityInfo, SeverityWarn, SeverityError] == [
        "debug", "info", "warn", "error"]


def test_the_envelope_types_have_the_seed_fields() -> None:
    assert [f.name for f in fields(Event)] == [
        "kind", "id", "time", "source", "scope", "correlation", "severity", "payload", "attrs"]
    assert [f.name for f in fields(Scope)] == [
        "runtime_id", "agent_id", "session_key", "turn_id", "channel", "account", "chat_id",
        "topic_id", "space_id", "space_type", "chat_type", "sender_id", "message_id"]
    assert [f.name for f in fields(Correlation)] == [
        "trace_id", "parent_turn_id", "request_id", "reply_to_id"]
    assert [f.name for f in fields(ScopeFilter)] == [
        "agent_id", "session_key", "turn_id", "channel", "chat_id", "message_id"]
    assert [f.name for f in fields(SubscribeOptions)] == [
        "name", "buffer", "priority", "concurrency", "backpressure", "timeout", "panic_policy"]
    assert [f.name for f in fields(SubscriberStats)] == [
        "id", "name", "received", "handled", "failed", "dropped", "panicked", "timed_out"]
    assert [f.name for f in fields(Stats)] == [
        "published", "matched", "delivered", "dropped", "blocked", "closed", "subscribers",
        "subscriber_stats"]


async def test_an_event_round_trips_every_field() -> None:
    bus = EventBus()
    sub, got = await collect(bus)
    sent = Event(kind=pc.KindAgentSubTurnSpawn, id="e-1",
                 time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                 source=Source("agent", "planner"), scope=ALL_SCOPE,
                 correlation=Correlation(trace_id="tr", parent_turn_id="turn-0",
                                         request_id="req", reply_to_id="msg-0"),
                 severity=SeverityWarn, payload={"depth": 2}, attrs={"k": "v"})
    await bus.publish(background(), sent)
    await wait_until(lambda: len(got) == 1)
    assert got[0] == sent
    sub.close()
    await bus.close()


async def test_publish_fills_in_id_time_and_severity() -> None:
    bus = EventBus()
    sub, got = await collect(bus)
    await bus.publish(None, evt(payload="plain text"))
    await wait_until(lambda: len(got) == 1)
    assert got[0].id and got[0].time is not None
    assert got[0].severity == SeverityInfo
    assert got[0].payload == "plain text"  # any payload, not only objects
    sub.close()
    await bus.close()


async def test_scope_and_correlation_reach_the_core_event() -> None:
    core = CoreBus()
    bus = EventBus(core)
    await bus.publish(None, evt(scope=ALL_SCOPE, correlation=Correlation(
        parent_turn_id="turn-0", reply_to_id="msg-0")))
    [stored] = core.history()
    assert stored.scope == CoreScope(
        agent="ag", session_id="sk", turn_id="tu", runtime_id="rt", channel="telegram",
        account="acc", chat_id="c1", topic_id="to", space_id="sp", space_type="group",
        chat_type="private", sender_id="u1", message_id="m1")
    assert stored.correlation.parent_turn_id == "turn-0"
    assert stored.correlation.reply_to_id == "msg-0"
    await bus.close()


# -------------------------------------------------------------------------------- bus
async def test_event_bus_satisfies_the_bus_interface() -> None:
    bus: Bus = EventBus()
    assert isinstance(bus.channel(), pc.EventChannel)
    assert isinstance(bus.stats(), Stats)
    assert isinstance(await bus.publish(None, evt()), PublishResult)
    assert isinstance(bus.publish_non_blocking(evt()), PublishResult)
    await bus.close()


async def test_publish_result_reports_matched_and_delivered() -> None:
    bus = EventBus()
    subs = [bus.channel().of_kind(pc.KindGatewayStart).subscribe(None, None,
                                                                 lambda ctx, e: None)
            for _ in range(2)]
    result = await bus.publish(None, evt(pc.KindGatewayStart))
    assert (result.matched, result.delivered, result.dropped, result.blocked) == (2, 2, 0, 0)
    assert result.err is None
    assert (await bus.publish(None, evt(pc.KindGatewayShutdown))).matched == 0
    for sub in subs:
        sub.close()
    await bus.close()


async def test_publish_non_blocking() -> None:
    bus = EventBus()
    sub, got = await collect(bus)
    result = bus.publish_non_blocking(evt())
    assert result.matched == 1 and result.delivered == 1
    await wait_until(lambda: len(got) == 1)
    sub.close()
    await bus.close()


async def test_close_then_publish_reports_err_bus_closed() -> None:
    bus = EventBus()
    await bus.close()
    assert isinstance((await bus.publish(None, evt())).err, ErrBusClosed)
    assert isinstance(bus.publish_non_blocking(evt()).err, ErrBusClosed)
    assert bus.stats().closed


async def test_stats_aggregate_counters() -> None:
    bus = EventBus()
    sub, got = await collect(bus, bus.channel().of_kind(pc.KindGatewayStart),
                             SubscribeOptions(name="gw"))
    await bus.publish(None, evt(pc.KindGatewayStart))
    await bus.publish(None, evt(pc.KindGatewayShutdown))
    await wait_until(lambda: len(got) == 1)
    stats = bus.stats()
    assert (stats.published, stats.matched, stats.delivered, stats.dropped,
            stats.blocked) == (2, 1, 1, 0, 0)
    assert not stats.closed
    assert stats.subscribers == 1
    [one] = stats.subscriber_stats
    assert (one.id, one.name, one.received, one.handled) == (sub.id(), "gw", 1, 1)
    sub.close()
    await bus.close()


# ---------------------------------------------------------------------------- channel
async def test_channel_of_kind() -> None:
    bus = EventBus()
    sub, got = await collect(bus, bus.channel().of_kind(pc.KindAgentTurnStart,
                                                        pc.KindAgentTurnEnd))
    for kind in (pc.KindAgentTurnStart, pc.KindAgentError, pc.KindAgentTurnEnd):
        await bus.publish(None, evt(kind))
    await flush(bus)
    assert [e.kind for e in got] == [pc.KindAgentTurnStart, pc.KindAgentTurnEnd]
    sub.close()
    await bus.close()


async def test_channel_kind_prefix_uses_picoclaw_names() -> None:
    bus = EventBus()
    sub, got = await collect(bus, bus.channel().kind_prefix("agent.tool.exec"))
    for kind in (pc.KindAgentToolExecStart, pc.KindAgentTurnStart, pc.KindAgentToolExecEnd,
                 pc.KindAgentToolExecSkipped):
        await bus.publish(None, evt(kind))
    await flush(bus)
    assert [e.kind for e in got] == [pc.KindAgentToolExecStart, pc.KindAgentToolExecEnd,
                                     pc.KindAgentToolExecSkipped]
    sub.close()
    await bus.close()


async def test_channel_source() -> None:
    bus = EventBus()
    sub, got = await collect(bus, bus.channel().source("channel", "telegram", "slack"))
    for source in (Source("channel", "telegram"), Source("channel", "discord"),
                   Source("gateway", "telegram"), Source("channel", "slack")):
        await bus.publish(None, evt(source=source))
    await flush(bus)
    assert [e.source.name for e in got] == ["telegram", "slack"]
    sub.close()
    await bus.close()


async def test_channel_scope() -> None:
    bus = EventBus()
    sub, got = await collect(bus, bus.channel().scope(ScopeFilter(channel="telegram",
                                                                  chat_id="c1")))
    await bus.publish(None, evt(scope=Scope(channel="telegram", chat_id="c1", sender_id="a")))
    await bus.publish(None, evt(scope=Scope(channel="telegram", chat_id="c2")))
    await bus.publish(None, evt(scope=Scope(channel="slack", chat_id="c1")))
    await flush(bus)
    assert [e.scope.sender_id for e in got] == ["a"]
    sub.close()
    await bus.close()


@pytest.mark.parametrize("field_name", [f.name for f in fields(ScopeFilter)])
async def test_every_scope_filter_field_filters(field_name: str) -> None:
    bus = EventBus()
    sub, got = await collect(bus, bus.channel().scope(ScopeFilter(**{field_name: "yes"})))
    await bus.publish(None, evt(scope=Scope(**{field_name: "no"}), id="wrong"))
    await bus.publish(None, evt(scope=Scope(**{field_name: "yes"}), id="right"))
    await flush(bus)
    assert [e.id for e in got] == ["right"]
    sub.close()
    await bus.close()


async def test_channel_filter_and_chaining() -> None:
    bus = EventBus()
    channel = (bus.channel().kind_prefix("agent.").filter(lambda e: e.payload == {"n": 2})
               .of_kind(pc.KindAgentError))
    sub, got = await collect(bus, channel)
    for n in (1, 2):
        await bus.publish(None, evt(pc.KindAgentError, payload={"n": n}))
        await bus.publish(None, evt(pc.KindAgentTurnStart, payload={"n": n}))
    await flush(bus)
    assert [(e.kind, e.payload) for e in got] == [(pc.KindAgentError, {"n": 2})]
    sub.close()
    await bus.close()


def test_match_kind_prefix() -> None:
    f = match_kind_prefix("mcp.tool.")
    assert f(evt(pc.KindMCPToolCallStart)) and not f(evt(pc.KindMCPServerFailed))
    assert pc.MatchKindPrefix is match_kind_prefix


def test_match_scope() -> None:
    f = match_scope(ScopeFilter(agent_id="a", turn_id="t"))
    assert f(evt(scope=Scope(agent_id="a", turn_id="t", chat_id="x")))
    assert not f(evt(scope=Scope(agent_id="a")))
    assert match_scope(ScopeFilter())(evt())  # no field set: everything


def test_match_source() -> None:
    assert match_source("tool")(evt(source=Source("tool", "x")))
    assert match_source("tool", "a", "b")(evt(source=Source("tool", "b")))
    assert not match_source("tool", "a")(evt(source=Source("tool", "b")))


async def test_filters_plug_into_channel_filter() -> None:
    bus = EventBus()
    sub, got = await collect(bus, bus.channel().filter(match_source("mcp", "fs")))
    await bus.publish(None, evt(pc.KindMCPServerConnected, source=Source("mcp", "fs")))
    await bus.publish(None, evt(pc.KindMCPServerConnected, source=Source("mcp", "web")))
    await flush(bus)
    assert [e.source.name for e in got] == ["fs"]
    sub.close()
    await bus.close()


# ---------------------------------------------------------------------- subscriptions
async def test_subscribe_calls_the_handler_with_ctx_and_event() -> None:
    bus = EventBus()
    ctx, cancel = with_cancel(background())
    seen: list[tuple[Context, Event]] = []

    async def handler(c: Context, e: Event) -> None:
        seen.append((c, e))

    sub = bus.channel().subscribe(ctx, SubscribeOptions(name="h"), handler)
    assert isinstance(sub, Subscription)
    assert sub.name() == "h" and sub.id() > 0
    await bus.publish(None, evt())
    await wait_until(lambda: len(seen) == 1)
    assert seen[0][0] is ctx and seen[0][1].kind == pc.KindAgentTurnStart
    cancel()  # a done context ends its subscriptions
    await asyncio.wait_for(sub.done(), 10)
    assert sub.is_done()
    cancel()
    await bus.close()


async def test_subscription_close_and_done() -> None:
    bus = EventBus()
    sub, got = await collect(bus)
    sub.close()
    await asyncio.wait_for(sub.done(), 10)
    await bus.publish(None, evt())
    assert got == [] and bus.stats().subscribers == 0
    sub.close()  # idempotent
    await bus.close()


async def test_subscribe_chan() -> None:
    bus = EventBus()
    sub, stream = bus.channel().of_kind(pc.KindChannelMessageOutboundSent).subscribe_chan(
        None, SubscribeOptions(buffer=8))
    for n in range(3):
        await bus.publish(None, evt(pc.KindChannelMessageOutboundSent, payload={"n": n}))
    await bus.publish(None, evt(pc.KindChannelRateLimited))
    assert (await stream.recv(10)).payload == {"n": 0}
    sub.close()
    rest = [e.payload["n"] async for e in stream]
    assert rest == []  # closing drops what was queued, and the range loop ends
    assert sub.stats().dropped == 2


async def test_subscribe_chan_range_until_close() -> None:
    bus = EventBus()
    sub, stream = bus.channel().subscribe_chan(None, None)
    await bus.publish(None, evt(payload={"n": 1}))
    await bus.publish(None, evt(payload={"n": 2}))
    got: list[int] = []
    async for e in stream:
        got.append(e.payload["n"])
        if len(got) == 2:
            sub.close()
    assert got == [1, 2]
    await bus.close()


async def test_subscribe_once() -> None:
    bus = EventBus()
    got: list[Event] = []
    sub = bus.channel().subscribe_once(None, None, lambda ctx, e: got.append(e))
    await bus.publish(None, evt(payload={"n": 1}))
    await asyncio.wait_for(sub.done(), 10)
    await bus.publish(None, evt(payload={"n": 2}))
    assert [e.payload for e in got] == [{"n": 1}]
    await bus.close()


async def test_a_returned_error_counts_failed() -> None:
    bus = EventBus()
    sub = bus.channel().subscribe(None, None, lambda ctx, e: ValueError("bad event"))
    await bus.publish(None, evt())
    await wait_until(lambda: sub.stats().failed == 1)
    stats = sub.stats()
    assert (stats.received, stats.handled, stats.panicked) == (1, 0, 0)
    sub.close()
    await bus.close()


# ------------------------------------------------------------------------- policies
async def test_recover_and_log_counts_panicked_and_keeps_delivering() -> None:
    bus = EventBus()
    calls: list[int] = []

    def handler(ctx: Context, e: Event) -> None:
        calls.append(e.payload["n"])
        if e.payload["n"] == 1:
            raise RuntimeError("panic: nil map")

    sub = bus.channel().subscribe(None, SubscribeOptions(panic_policy=RecoverAndLog), handler)
    for n in (1, 2):
        await bus.publish(None, evt(payload={"n": n}))
    await wait_until(lambda: calls == [1, 2] and sub.stats().handled == 1)
    stats = sub.stats()
    assert (stats.panicked, stats.failed, stats.handled) == (1, 0, 1)
    assert bus.stats().subscriber_stats[0].panicked == 1
    sub.close()
    await bus.close()


async def test_the_default_panic_policy_recovers() -> None:
    bus = EventBus()
    sub = bus.channel().subscribe(None, None, lambda ctx, e: 1 / 0)
    await bus.publish(None, evt())
    await bus.publish(None, evt())
    await wait_until(lambda: sub.stats().panicked == 2)
    assert not sub.is_done()
    sub.close()
    await bus.close()


async def test_crash_ends_the_subscription_and_reaches_the_loop() -> None:
    bus = EventBus()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        calls: list[int] = []

        def handler(ctx: Context, e: Event) -> None:
            calls.append(1)
            raise RuntimeError("panic: index out of range")

        sub = bus.channel().subscribe(None, SubscribeOptions(panic_policy=Crash), handler)
        result = await bus.publish(None, evt())
        assert result.err is None  # the publisher is never broken
        await asyncio.wait_for(sub.done(), 10)
        assert isinstance(sub.err(), RuntimeError)
        assert sub.stats().panicked == 1 and sub.stats().failed == 0
        assert [str(c["exception"]) for c in reported] == ["panic: index out of range"]
        await bus.publish(None, evt())
        assert calls == [1]
    finally:
        loop.set_exception_handler(None)
    await bus.close()


async def test_backpressure_drop_newest() -> None:
    bus = EventBus()
    gate = asyncio.Event()
    got: list[int] = []

    async def slow(ctx: Context, e: Event) -> None:
        await gate.wait()
        got.append(e.payload["n"])

    sub = bus.channel().of_kind(pc.KindAgentLLMDelta).subscribe(
        None, SubscribeOptions(buffer=2, backpressure=DropNewest), slow)
    results = [await bus.publish(None, evt(pc.KindAgentLLMDelta, payload={"n": n}))
               for n in range(5)]
    await wait_until(lambda: sub.stats().received >= 3)
    gate.set()
    await wait_until(lambda: sub.stats().handled + sub.stats().dropped == 5)
    assert sum(r.dropped for r in results) == sub.stats().dropped > 0
    assert got[:1] == [0] and got == sorted(got) and got[-1] < 4  # the newest went
    sub.close()
    await bus.close()


async def test_backpressure_drop_oldest() -> None:
    bus = EventBus()
    gate = asyncio.Event()
    got: list[int] = []

    async def slow(ctx: Context, e: Event) -> None:
        await gate.wait()
        got.append(e.payload["n"])

    sub = bus.channel().of_kind(pc.KindAgentLLMDelta).subscribe(
        None, SubscribeOptions(buffer=2, backpressure=DropOldest), slow)
    for n in range(5):
        await bus.publish(None, evt(pc.KindAgentLLMDelta, payload={"n": n}))
    gate.set()
    await wait_until(lambda: sub.stats().handled + sub.stats().dropped == 5)
    assert got[-1] == 4 and sub.stats().dropped > 0  # the newest stayed
    sub.close()
    await bus.close()


async def test_backpressure_block_waits_until_the_context_is_canceled() -> None:
    bus = EventBus()
    gate = asyncio.Event()

    async def stuck(ctx: Context, e: Event) -> None:
        await gate.wait()

    sub = bus.channel().of_kind(pc.KindAgentLLMDelta).subscribe(
        None, SubscribeOptions(buffer=1, backpressure=Block), stuck)
    await bus.publish(None, evt(pc.KindAgentLLMDelta))  # taken by the handler
    await wait_until(lambda: sub.stats().received == 1)
    await bus.publish(None, evt(pc.KindAgentLLMDelta))  # fills the queue
    ctx, cancel = with_cancel(None)
    publishing = asyncio.ensure_future(bus.publish(ctx, evt(pc.KindAgentLLMDelta)))
    await wait_until(lambda: bus.stats().blocked == 1)
    assert not publishing.done()
    cancel()
    result = await asyncio.wait_for(publishing, 10)
    assert isinstance(result.err, pc.Canceled)
    assert str(result.err) == "context canceled"
    gate.set()
    sub.close()
    await bus.close()


async def test_concurrency_concurrent_overlaps_handler_calls() -> None:
    bus = EventBus()
    running: list[int] = []
    peak: list[int] = [0]
    release = asyncio.Event()

    async def handler(ctx: Context, e: Event) -> None:
        running.append(1)
        peak[0] = max(peak[0], len(running))
        await release.wait()
        running.pop()

    sub = bus.channel().subscribe(None, SubscribeOptions(concurrency=Concurrent), handler)
    for _ in range(3):
        await bus.publish(None, evt())
    await wait_until(lambda: peak[0] == 3)
    release.set()
    await wait_until(lambda: sub.stats().handled == 3)
    sub.close()
    await bus.close()


@pytest.mark.parametrize("concurrency", [Locked, Keyed, ""])
async def test_concurrency_locked_and_keyed_handle_in_order(concurrency: str) -> None:
    bus = EventBus()
    order: list[int] = []
    running: list[int] = []

    async def handler(ctx: Context, e: Event) -> None:
        running.append(1)
        assert len(running) == 1
        await asyncio.sleep(0)
        order.append(e.payload["n"])
        running.pop()

    sub = bus.channel().subscribe(None, SubscribeOptions(concurrency=concurrency), handler)
    for n in range(5):
        await bus.publish(None, evt(payload={"n": n}))
    await wait_until(lambda: len(order) == 5)
    assert order == [0, 1, 2, 3, 4]
    sub.close()
    await bus.close()


async def test_subscribe_options_priority_orders_delivery() -> None:
    bus = EventBus()
    order: list[str] = []
    low = bus.channel().subscribe(None, SubscribeOptions(name="low", priority=0),
                                  lambda ctx, e: order.append("low"))
    high = bus.channel().subscribe(None, SubscribeOptions(name="high", priority=10),
                                   lambda ctx, e: order.append("high"))
    await yields(3)  # both workers idle, waiting: the queue order is the delivery order
    await bus.publish(None, evt())
    await wait_until(lambda: len(order) == 2)
    assert order == ["high", "low"]
    assert [s.name for s in bus.stats().subscriber_stats] == ["low", "high"]
    low.close()
    high.close()
    await bus.close()


async def test_subscribe_options_timeout_counts_timed_out() -> None:
    bus = EventBus()

    async def hangs(ctx: Context, e: Event) -> None:
        await asyncio.sleep(30)

    sub = bus.channel().subscribe(None, SubscribeOptions(timeout=timedelta(milliseconds=20)),
                                  hangs)
    await bus.publish(None, evt())
    await wait_until(lambda: sub.stats().timed_out == 1)
    assert sub.stats().handled == 0
    sub.close()
    await bus.close()


def test_bad_subscribe_options_are_refused() -> None:
    async def main() -> None:
        bus = EventBus()
        channel = bus.channel()
        with pytest.raises(ValueError, match="concurrency 'parallel' is not one of"):
            channel.subscribe(None, SubscribeOptions(concurrency="parallel"), lambda c, e: None)
        with pytest.raises(ValueError, match="panic policy 'ignore'"):
            channel.subscribe(None, SubscribeOptions(panic_policy="ignore"), lambda c, e: None)
        with pytest.raises(ValueError, match="backpressure"):
            channel.subscribe(None, SubscribeOptions(backpressure="spill"), lambda c, e: None)
        with pytest.raises(ValueError, match="buffer"):
            channel.subscribe(None, SubscribeOptions(buffer=-1), lambda c, e: None)
        await bus.close()

    asyncio.run(main())


# ----------------------------------------------------------------------- telemetry
async def test_routing_fields_reach_span_events_of_the_current_run(
        make: HarnessFactory) -> None:
    harness = make()
    bus = EventBus(harness.bus)
    async with RunScope(harness.bus, "claw"):
        await bus.publish(None, Event(
            kind=pc.KindAgentSteeringInjected,
            scope=Scope(channel="telegram", chat_id="c1", sender_id="u1"),
            correlation=Correlation(parent_turn_id="turn-0", reply_to_id="msg-0")))
    span = harness.one("invoke_agent claw")
    [event] = [e for e in span.events if e.name == "agent.steering.injected"]
    attributes = dict(event.attributes or {})
    assert attributes["agentbus.channel.name"] == "telegram"
    assert attributes["agentbus.chat.id"] == "c1"
    assert attributes["agentbus.sender.id"] == "u1"
    assert attributes["agentbus.turn.parent_id"] == "turn-0"
    assert attributes["agentbus.message.reply_to_id"] == "msg-0"


async def test_a_picoclaw_tool_exec_in_a_run_is_an_execute_tool_span(
        make: HarnessFactory) -> None:
    harness = make()
    bus = EventBus(harness.bus)
    async with RunScope(harness.bus, "claw"):
        await bus.publish(None, evt(pc.KindAgentToolExecStart,
                                    payload={"tool_call_id": "t1", "tool_name": "search"}))
        await bus.publish(None, evt(pc.KindAgentToolExecEnd,
                                    payload={"tool_call_id": "t1", "tool_name": "search"}))
    tool = harness.one("execute_tool search")
    assert tool.parent is not None
    assert tool.parent.span_id == harness.one("invoke_agent claw").context.span_id


async def test_routing_fields_of_a_run_start_are_run_span_attributes(
        make: HarnessFactory) -> None:
    harness = make()
    scope = CoreScope(run_id="r1", agent="claw", runtime_id="rt-1", channel="slack",
                      account="acme", chat_id="c9", topic_id="t", space_id="s",
                      space_type="workspace", chat_type="group", sender_id="u9",
                      message_id="m9", turn_id="turn-9")
    await harness.bus.publish(CoreEvent("agent.run.started", scope=scope))
    await harness.bus.publish(CoreEvent("agent.run.completed", scope=scope))
    attributes = dict(harness.one("invoke_agent claw").attributes or {})
    assert {k: v for k, v in attributes.items() if k.startswith("agentbus.")
            and k not in ("agentbus.run.id", "agentbus.run.status")} == {
        "agentbus.runtime.id": "rt-1", "agentbus.channel.name": "slack",
        "agentbus.channel.account": "acme", "agentbus.chat.id": "c9",
        "agentbus.chat.topic_id": "t", "agentbus.space.id": "s",
        "agentbus.space.type": "workspace", "agentbus.chat.type": "group",
        "agentbus.sender.id": "u9", "agentbus.message.id": "m9", "agentbus.turn.id": "turn-9",
    }
