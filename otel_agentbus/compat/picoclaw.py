"""PicoClaw's ``events`` package (seed 004, Go) as Python code written against it calls it,
running on the project's bus.

Go translates the obvious way: methods and fields are snake_case (``Channel()`` is
``channel()``, ``SubscribeChan`` is ``subscribe_chan``, ``Scope.ChatID`` is
``scope.chat_id``: the seed's JSON names); exported constants keep their names
(``KindAgentTurnStart``, ``DropNewest``, ``RecoverAndLog``); a returned ``error`` is a
raised exception (``ErrBusClosed``, ``ErrNilHandler``); ``context.Context`` is
:class:`Context` (``None`` means ``context.Background()``); a channel is an async iterator;
``time.Duration`` is a ``timedelta`` or seconds.

Every event is an :class:`otel_agentbus.Event` on the wrapped bus (``bus.core``): PicoClaw's
kind names that the project spells differently are its aliases (``agent.tool.exec_start``
is ``agent.tool.call.started``, see ``otel_agentbus.kinds.KIND_ALIASES``), so a PicoClaw
tool execution becomes an ``execute_tool`` span like any other, and subscribers here get
PicoClaw's names back. Scope and correlation fields map one to one (``agent_id`` is the
core scope's ``agent``, ``session_key`` its ``session_id``); an event published inside a
run (``RunScope``, ``Invocation.emit``) belongs to that run, so it lands on the run's trace.

A handler is ``handler(ctx, evt)`` returning ``None`` or an exception (Go's ``error``:
counted ``failed``); an exception *raised* by a handler is Go's panic: counted
``panicked``, and under ``RecoverAndLog`` logged while delivery goes on; under ``Crash`` it
ends the subscription and is passed to the event loop's exception handler. It does not
kill the process as a Go panic does: a crashing subscriber never breaks the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, TypeAlias

from .. import events as core_events
from ..bus import BusClosedError
from ..bus import EventBus as CoreBus
from ..events import Severity, thaw_json
from ..filters import MATCH_ALL, EventFilter
from ..kinds import (
    BUS_CLOSE_COMPLETED,
    BUS_CLOSE_DRAINED,
    BUS_CLOSE_STARTED,
    BUS_PUBLISH_FAILED,
    CHANNEL_LIFECYCLE_INITIALIZED,
    CHANNEL_LIFECYCLE_START_FAILED,
    CHANNEL_LIFECYCLE_STARTED,
    CHANNEL_LIFECYCLE_STOPPED,
    CHANNEL_MESSAGE_OUTBOUND_FAILED,
    CHANNEL_MESSAGE_OUTBOUND_QUEUED,
    CHANNEL_MESSAGE_OUTBOUND_SENT,
    CHANNEL_RATE_LIMITED,
    CHANNEL_WEBHOOK_REGISTERED,
    CHANNEL_WEBHOOK_UNREGISTERED,
    ERROR,
    FOLLOW_UP_QUEUED,
    GATEWAY_READY,
    GATEWAY_RELOAD_COMPLETED,
    GATEWAY_RELOAD_FAILED,
    GATEWAY_RELOAD_STARTED,
    GATEWAY_SHUTDOWN,
    GATEWAY_START,
    INTERRUPT_RECEIVED,
    KIND_ALIASES,
    LLM_DELTA,
    LLM_REQUEST,
    LLM_RESPONSE,
    LLM_RETRY,
    MCP_SERVER_CONNECTED,
    MCP_SERVER_CONNECTING,
    MCP_SERVER_FAILED,
    MCP_TOOL_DISCOVERED,
    STEERING_INJECTED,
    SUBTURN_RESULT_DELIVERED,
    validate_kind,
)
from ..runs import current_run
from ..subscription import (
    Backpressure,
    Concurrency,
    ErrorPolicy,
    InvalidSubscriptionError,
    describe_handler,
)
from ..subscription import (
    SubscriberStats as CoreSubscriberStats,
)
from ..subscription import Subscription as CoreSubscription

logger = logging.getLogger("otel_agentbus.compat.picoclaw")

__all__ = [
    "BackpressurePolicy", "Block", "Bus", "Canceled", "ConcurrencyKind", "Concurrent",
    "Context", "Correlation", "Crash", "DeadlineExceeded", "DropNewest", "DropOldest",
    "ErrBusClosed", "ErrNilHandler", "Event", "EventBus", "EventChannel", "EventStream",
    "Filter", "Handler", "Keyed", "Kind", "Locked", "PanicPolicy", "PublishResult",
    "RecoverAndLog", "Scope", "ScopeFilter", "Severity", "SeverityDebug", "SeverityError",
    "SeverityInfo", "SeverityWarn", "Source", "Stats", "SubscribeOptions", "SubscriberStats",
    "Subscription", "background", "known_kinds", "match_kind_prefix", "match_scope",
    "match_source", "with_cancel", "with_timeout",
]


# --------------------------------------------------------------------------- errors
class ErrBusClosed(BusClosedError):
    """Subscribing to (or publishing on) a closed event bus."""

    def __init__(self, message: str = "events: bus is closed") -> None:
        super().__init__(message)


class ErrNilHandler(InvalidSubscriptionError):
    """Subscribing without a handler (``None``)."""

    def __init__(self, message: str = "events: handler is nil") -> None:
        super().__init__(message)


# ---------------------------------------------------------------------------- kinds
Kind: TypeAlias = str

KindAgentTurnStart: Final[Kind] = "agent.turn.start"
KindAgentTurnEnd: Final[Kind] = "agent.turn.end"
KindAgentLLMRequest: Final[Kind] = LLM_REQUEST
KindAgentLLMDelta: Final[Kind] = LLM_DELTA
KindAgentLLMResponse: Final[Kind] = LLM_RESPONSE
KindAgentLLMRetry: Final[Kind] = LLM_RETRY
KindAgentContextCompress: Final[Kind] = "agent.context.compress"
KindAgentSessionSummarize: Final[Kind] = "agent.session.summarize"
KindAgentToolExecStart: Final[Kind] = "agent.tool.exec_start"
KindAgentToolExecEnd: Final[Kind] = "agent.tool.exec_end"
KindAgentToolExecSkipped: Final[Kind] = "agent.tool.exec_skipped"
KindAgentSteeringInjected: Final[Kind] = STEERING_INJECTED
KindAgentFollowUpQueued: Final[Kind] = FOLLOW_UP_QUEUED
KindAgentInterruptReceived: Final[Kind] = INTERRUPT_RECEIVED
KindAgentSubTurnSpawn: Final[Kind] = "agent.subturn.spawn"
KindAgentSubTurnEnd: Final[Kind] = "agent.subturn.end"
KindAgentSubTurnResultDelivered: Final[Kind] = SUBTURN_RESULT_DELIVERED
KindAgentSubTurnOrphan: Final[Kind] = "agent.subturn.orphan"
KindAgentError: Final[Kind] = ERROR
KindChannelLifecycleStarted: Final[Kind] = CHANNEL_LIFECYCLE_STARTED
KindChannelLifecycleInitialized: Final[Kind] = CHANNEL_LIFECYCLE_INITIALIZED
KindChannelLifecycleStartFailed: Final[Kind] = CHANNEL_LIFECYCLE_START_FAILED
KindChannelLifecycleStopped: Final[Kind] = CHANNEL_LIFECYCLE_STOPPED
KindChannelWebhookRegistered: Final[Kind] = CHANNEL_WEBHOOK_REGISTERED
KindChannelWebhookUnregistered: Final[Kind] = CHANNEL_WEBHOOK_UNREGISTERED
KindChannelMessageOutboundQueued: Final[Kind] = CHANNEL_MESSAGE_OUTBOUND_QUEUED
KindChannelMessageOutboundSent: Final[Kind] = CHANNEL_MESSAGE_OUTBOUND_SENT
KindChannelMessageOutboundFailed: Final[Kind] = CHANNEL_MESSAGE_OUTBOUND_FAILED
KindChannelRateLimited: Final[Kind] = CHANNEL_RATE_LIMITED
KindBusPublishFailed: Final[Kind] = BUS_PUBLISH_FAILED
KindBusCloseStarted: Final[Kind] = BUS_CLOSE_STARTED
KindBusCloseCompleted: Final[Kind] = BUS_CLOSE_COMPLETED
KindBusCloseDrained: Final[Kind] = BUS_CLOSE_DRAINED
KindGatewayStart: Final[Kind] = GATEWAY_START
KindGatewayReady: Final[Kind] = GATEWAY_READY
KindGatewayShutdown: Final[Kind] = GATEWAY_SHUTDOWN
KindGatewayReloadStarted: Final[Kind] = GATEWAY_RELOAD_STARTED
KindGatewayReloadCompleted: Final[Kind] = GATEWAY_RELOAD_COMPLETED
KindGatewayReloadFailed: Final[Kind] = GATEWAY_RELOAD_FAILED
KindMCPServerConnected: Final[Kind] = MCP_SERVER_CONNECTED
KindMCPServerConnecting: Final[Kind] = MCP_SERVER_CONNECTING
KindMCPServerFailed: Final[Kind] = MCP_SERVER_FAILED
KindMCPToolDiscovered: Final[Kind] = MCP_TOOL_DISCOVERED
KindMCPToolCallStart: Final[Kind] = "mcp.tool.call.start"
KindMCPToolCallEnd: Final[Kind] = "mcp.tool.call.end"

_KNOWN: Final[tuple[Kind, ...]] = tuple(
    value for name, value in list(globals().items())
    if name.startswith("Kind") and isinstance(value, str) and name != "Kind"
)
_PICOCLAW_NAME: Final[dict[str, Kind]] = {table: pico for pico, table in KIND_ALIASES.items()}
"""The project's kind -> PicoClaw's name for it, where they differ."""


def known_kinds() -> list[Kind]:
    """The runtime event kinds this package declares (Go's ``KnownKinds``)."""
    return list(_KNOWN)


KnownKinds = known_kinds

# ------------------------------------------------------------------- enumerations
SeverityDebug: Final = Severity.DEBUG
SeverityInfo: Final = Severity.INFO
SeverityWarn: Final = Severity.WARN
SeverityError: Final = Severity.ERROR


class BackpressurePolicy(enum.StrEnum):
    """Delivery when a subscription's queue is full (must-deliver kinds are never dropped)."""

    DropNewest = "drop_newest"
    DropOldest = "drop_oldest"
    Block = "block"


class ConcurrencyKind(enum.StrEnum):
    """How a handler subscription processes queued events."""

    Concurrent = "concurrent"
    Locked = "locked"
    Keyed = "keyed"
    """In order per run (the project's keyed delivery); the seed reserves it."""


class PanicPolicy(enum.StrEnum):
    """What a raised handler exception (Go's panic) does."""

    RecoverAndLog = "recover_and_log"
    Crash = "crash"


DropNewest: Final = BackpressurePolicy.DropNewest
DropOldest: Final = BackpressurePolicy.DropOldest
Block: Final = BackpressurePolicy.Block
Concurrent: Final = ConcurrencyKind.Concurrent
Locked: Final = ConcurrencyKind.Locked
Keyed: Final = ConcurrencyKind.Keyed
RecoverAndLog: Final = PanicPolicy.RecoverAndLog
Crash: Final = PanicPolicy.Crash

_CONCURRENCY: Final = {Concurrent: Concurrency.CONCURRENT, Locked: Concurrency.SEQUENTIAL,
                       Keyed: Concurrency.KEYED}
_CONCURRENT_LIMIT: Final = 1024
"""Go runs each event in its own goroutine; a bound keeps a burst from starting a million
tasks."""


# ------------------------------------------------------------------------- context
class Canceled(Exception):
    """``context.Canceled``."""

    def __init__(self) -> None:
        super().__init__("context canceled")


class DeadlineExceeded(TimeoutError):
    """``context.DeadlineExceeded``."""

    def __init__(self) -> None:
        super().__init__("context deadline exceeded")


class Context:
    """A cancellable context (the part of Go's ``context.Context`` the package uses):
    cancelling it cancels its children, ends subscriptions made with it, and stops a
    ``publish`` waiting on a full ``Block`` queue."""

    def __init__(self, parent: Context | None = None) -> None:
        self._err: Exception | None = None
        self._callbacks: list[Callable[[], None]] = []
        if parent is not None and parent is not _BACKGROUND:
            parent._on_done(lambda: self._cancel(parent._err or Canceled()))

    def err(self) -> Exception | None:
        """``None`` while live; ``Canceled`` or ``DeadlineExceeded`` once done."""
        return self._err

    def done(self) -> bool:
        return self._err is not None

    async def wait(self) -> None:
        """Until the context is done (``<-ctx.Done()``)."""
        if self._err is not None:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        self._on_done(wake)
        await waiter

    def _on_done(self, callback: Callable[[], None]) -> None:
        if self._err is not None:
            callback()
        elif self is not _BACKGROUND:  # never done: keeping callbacks would only leak
            self._callbacks.append(callback)

    def _cancel(self, error: Exception) -> None:
        if self._err is not None:
            return
        self._err = error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


_BACKGROUND: Final = Context()


def background() -> Context:
    """``context.Background()``: never cancelled."""
    return _BACKGROUND


def with_cancel(parent: Context | None) -> tuple[Context, Callable[[], None]]:
    """``context.WithCancel``: a child context and the function that cancels it."""
    ctx = Context(parent or _BACKGROUND)
    return ctx, lambda: ctx._cancel(Canceled())


def with_timeout(parent: Context | None,
                 timeout: timedelta | float) -> tuple[Context, Callable[[], None]]:
    """``context.WithTimeout`` (needs a running event loop for the timer)."""
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    ctx, cancel = with_cancel(parent)
    timer = asyncio.get_running_loop().call_later(
        seconds, lambda: ctx._cancel(DeadlineExceeded()))
    ctx._on_done(timer.cancel)
    return ctx, cancel


# ------------------------------------------------------------------------ envelope
@dataclass(frozen=True, slots=True)
class Source:
    """Which component emitted the event (and optionally its name)."""

    component: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Scope:
    """The runtime ownership of an event: agent, session, turn, channel, chat, message and
    sender identity. Empty strings are unset, as in Go."""

    runtime_id: str = ""
    agent_id: str = ""
    session_key: str = ""
    turn_id: str = ""
    channel: str = ""
    account: str = ""
    chat_id: str = ""
    topic_id: str = ""
    space_id: str = ""
    space_type: str = ""
    chat_type: str = ""
    sender_id: str = ""
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class Correlation:
    """Cross-event tracing fields."""

    trace_id: str = ""
    parent_turn_id: str = ""
    request_id: str = ""
    reply_to_id: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """The runtime event envelope. ``id`` and ``time`` are filled in at publish when
    empty; ``payload`` is any JSON data; ``attrs`` a mapping of JSON data."""

    kind: Kind
    id: str = ""
    time: datetime | None = None
    source: Source = field(default_factory=Source)
    scope: Scope = field(default_factory=Scope)
    correlation: Correlation = field(default_factory=Correlation)
    severity: Severity | str = ""
    payload: Any = None
    attrs: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ScopeFilter:
    """Selected scope fields; the non-empty ones must all equal the event's."""

    agent_id: str = ""
    session_key: str = ""
    turn_id: str = ""
    channel: str = ""
    chat_id: str = ""
    message_id: str = ""


# Scope field here -> the core Scope's field of the same meaning.
_SCOPE_TO_CORE: Final = {"agent_id": "agent", "session_key": "session_id"}
_SCOPE_FROM_CORE: Final = {core: pico for pico, core in _SCOPE_TO_CORE.items()}
_SCOPE_FIELDS: Final = tuple(f.name for f in fields(Scope))
_WRAPPED: Final = "picoclaw.payload"
"""A core attr marking a payload that was not a mapping (kept under ``value``)."""


def _core_scope(scope: Scope) -> core_events.Scope:
    if scope == _EMPTY_SCOPE:
        return core_events.EMPTY_SCOPE
    return core_events.Scope(**{_SCOPE_TO_CORE.get(name, name): getattr(scope, name) or None
                                for name in _SCOPE_FIELDS})


def _to_core(evt: Event) -> core_events.Event:
    """The bus event for ``evt``; raises the core's clear errors for bad fields."""
    if not isinstance(evt, Event):
        raise core_events.EventValidationError(
            f"publish takes a picoclaw Event, got {type(evt).__name__}")
    payload = evt.payload
    attrs = dict(evt.attrs) if evt.attrs else None
    if payload is not None and not isinstance(payload, Mapping):
        payload = {"value": payload}
        attrs = {**(attrs or {}), _WRAPPED: "value"}
    correlation = evt.correlation
    time_ns = None
    if evt.time is not None:
        time_ns = int(evt.time.timestamp() * 1_000_000) * 1000
    scope = _core_scope(evt.scope)
    run = current_run()
    if run is not None and scope.run_id is None:  # published inside a run: part of it
        scope = scope._replace(run_id=run.run_id)
    return core_events.Event(
        evt.kind, payload,
        source=core_events.Source(evt.source.component, evt.source.name),
        scope=scope,
        correlation=core_events.Correlation(
            trace_id=correlation.trace_id or None, request_id=correlation.request_id or None,
            parent_turn_id=correlation.parent_turn_id or None,
            reply_to_id=correlation.reply_to_id or None,
        ) if correlation != _EMPTY_CORRELATION else core_events.EMPTY_CORRELATION,
        severity=evt.severity or Severity.INFO,
        attrs=attrs, id=evt.id or None, time_ns=time_ns,
    )


def picoclaw_kind(kind: str) -> Kind:
    """PicoClaw's name for a bus kind (the same string unless the project spells it
    differently)."""
    return _PICOCLAW_NAME.get(kind, kind)


def from_core(event: core_events.Event) -> Event:
    """The PicoClaw view of a bus event."""
    scope = event.scope
    attrs = dict(thaw_json(event.attrs))
    payload: Any = thaw_json(event.payload) if event.payload else None
    if attrs.pop(_WRAPPED, None) is not None and payload is not None:
        payload = payload.get("value")
    correlation = event.correlation
    return Event(
        kind=_PICOCLAW_NAME.get(event.kind, event.kind),
        id=event.id,
        time=event.timestamp,
        source=Source(event.source.component, event.source.name),
        scope=_EMPTY_SCOPE if scope is core_events.EMPTY_SCOPE else Scope(**{
            _SCOPE_FROM_CORE.get(name, name): getattr(scope, name) or ""
            for name in (_SCOPE_TO_CORE.get(n, n) for n in _SCOPE_FIELDS)}),
        correlation=Correlation(correlation.trace_id or "", correlation.parent_turn_id or "",
                                correlation.request_id or "", correlation.reply_to_id or ""),
        severity=event.severity,
        payload=payload,
        attrs=attrs or None,
    )


_EMPTY_SCOPE: Final = Scope()
_EMPTY_CORRELATION: Final = Correlation()

# ---------------------------------------------------------------------------- filters
Filter: TypeAlias = Callable[[Event], bool]
"""Whether an event passes through an :class:`EventChannel`."""


def match_kind_prefix(prefix: str) -> Filter:
    """Events whose (PicoClaw) kind starts with ``prefix``."""
    return lambda evt: evt.kind.startswith(prefix)


def match_scope(scope: ScopeFilter) -> Filter:
    """Events whose scope has every non-empty field of ``scope``."""
    wanted = [(f.name, getattr(scope, f.name)) for f in fields(ScopeFilter)
              if getattr(scope, f.name)]
    return lambda evt: all(getattr(evt.scope, name) == value for name, value in wanted)


def match_source(component: str, *names: str) -> Filter:
    """Events emitted by ``component`` and, when names are given, one of them."""
    allowed = frozenset(names)
    return lambda evt: (evt.source.component == component
                        and (not allowed or evt.source.name in allowed))


MatchKindPrefix = match_kind_prefix
MatchScope = match_scope
MatchSource = match_source


# --------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class PublishResult:
    """Per-publish delivery outcomes; ``err`` is set when nothing was published (a closed
    bus, a done context)."""

    matched: int = 0
    delivered: int = 0
    dropped: int = 0
    blocked: int = 0
    err: Exception | None = None


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """Counters of one subscription."""

    id: int
    name: str
    received: int
    handled: int
    failed: int
    dropped: int
    panicked: int
    timed_out: int


@dataclass(frozen=True, slots=True)
class Stats:
    """Aggregate bus counters."""

    published: int
    matched: int
    delivered: int
    dropped: int
    blocked: int
    closed: bool
    subscribers: int
    subscriber_stats: list[SubscriberStats]


@dataclass(frozen=True, slots=True)
class SubscribeOptions:
    """How a subscription receives events; zero values mean the defaults (a buffer of
    1024, ``Locked``, ``DropOldest``, no timeout, ``RecoverAndLog``)."""

    name: str = ""
    buffer: int = 0
    priority: int = 0
    concurrency: ConcurrencyKind | str = ""
    backpressure: BackpressurePolicy | str = ""
    timeout: timedelta | float | None = None
    """Bounds one handler call; the call is cancelled at the deadline (counted timed_out)."""
    panic_policy: PanicPolicy | str = ""


Handler: TypeAlias = Callable[[Context, Event],
                              Awaitable[Exception | None] | Exception | None]


def _choice(enum_type: type[enum.StrEnum], value: str, what: str) -> Any:
    try:
        return enum_type(value)
    except ValueError:
        raise InvalidSubscriptionError(
            f"{what} {value!r} is not one of {[m.value for m in enum_type]}") from None


# ----------------------------------------------------------------------- subscriptions
class Subscription:
    """An active subscription."""

    def __init__(self, sub: CoreSubscription, panic_policy: PanicPolicy) -> None:
        self.core = sub
        self.panic_policy = panic_policy
        self._handled = 0
        self._failed = 0
        self._panicked = 0
        self._crashes = 0
        self._crash: BaseException | None = None

    def id(self) -> int:
        return self.core.id

    def name(self) -> str:
        return self.core.name

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self.core.close()

    async def done(self) -> None:
        """Until the subscription has ended (``<-sub.Done()``); never raises."""
        with contextlib.suppress(Exception):
            await self.core.wait()

    def is_done(self) -> bool:
        return self.core.done

    def err(self) -> BaseException | None:
        """The handler panic that ended the subscription under ``Crash``, else ``None``."""
        return self._crash

    def stats(self) -> SubscriberStats:
        return _subscriber_stats(self.core.stats(), self)

    async def _deliver(self, handler: Handler, ctx: Context, event: core_events.Event) -> None:
        evt = from_core(event)
        try:
            result = handler(ctx, evt)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception as panic:
            self._panicked += 1
            if self.panic_policy is PanicPolicy.Crash:
                self._crash = panic
                self._crashes += 1
                loop = asyncio.get_running_loop()
                loop.call_exception_handler({
                    "message": f"picoclaw subscriber {self.core.name!r} panicked on "
                               f"{evt.kind}; its subscription is closed (PanicPolicy Crash)",
                    "exception": panic,
                })
                raise
            logger.error("subscriber %r panicked on %s (recovered): %r",
                         self.core.name, evt.kind, panic)
            return
        if isinstance(result, BaseException):
            self._failed += 1
            logger.warning("subscriber %r failed on %s: %r", self.core.name, evt.kind, result)
            return
        self._handled += 1


def _subscriber_stats(stats: CoreSubscriberStats, sub: Subscription | None) -> SubscriberStats:
    if sub is None:  # a subscription made on the core bus directly
        return SubscriberStats(stats.id, stats.name, stats.received, stats.handled,
                               stats.failed, stats.dropped, 0, stats.timed_out)
    return SubscriberStats(
        id=stats.id, name=stats.name, received=stats.received, handled=sub._handled,
        # a failing Filter is counted by the core; a crash is a panic, not a failure
        failed=sub._failed + stats.failed - sub._crashes,
        dropped=stats.dropped, panicked=sub._panicked, timed_out=stats.timed_out,
    )


class EventStream:
    """The receive side of ``subscribe_chan``: ``async for evt in stream`` until the
    subscription closes, or ``await stream.recv()``."""

    def __init__(self, sub: CoreSubscription) -> None:
        self._sub = sub

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        return from_core(await self._sub.__anext__())

    async def recv(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` after ``timeout`` seconds, and
        ``SubscriptionClosedError`` once closed and empty."""
        return from_core(await self._sub.next(timeout))


# ---------------------------------------------------------------------------- channels
class EventChannel:
    """A filtered view of an :class:`EventBus`; each method returns a narrower channel."""

    def __init__(self, bus: EventBus, core_filter: EventFilter = MATCH_ALL,
                 filters: tuple[Filter, ...] = ()) -> None:
        self._bus = bus
        self._core_filter = core_filter
        self._filters = filters

    def _narrow(self, core_filter: EventFilter | None = None,
                extra: Filter | None = None) -> EventChannel:
        combined = self._core_filter
        if core_filter is not None:
            combined = core_filter if combined == MATCH_ALL else combined & core_filter
        return EventChannel(self._bus, combined,
                            self._filters + ((extra,) if extra is not None else ()))

    def filter(self, filter: Filter) -> EventChannel:
        if not callable(filter):
            raise InvalidSubscriptionError(f"filter must be callable, got {filter!r}")
        return self._narrow(extra=filter)

    def of_kind(self, *kinds: Kind) -> EventChannel:
        if not kinds:
            raise InvalidSubscriptionError("of_kind needs at least one kind")
        return self._narrow(EventFilter(kinds=frozenset(validate_kind(k) for k in kinds)))

    def kind_prefix(self, prefix: str) -> EventChannel:
        if not isinstance(prefix, str) or not prefix:
            raise InvalidSubscriptionError(f"kind prefix must be a non-empty str, got {prefix!r}")
        # On PicoClaw's names: "agent.tool.exec" must find agent.tool.exec_start.
        return self._narrow(EventFilter(
            predicate=lambda event: picoclaw_kind(event.kind).startswith(prefix)))

    def source(self, component: str, *names: str) -> EventChannel:
        return self._narrow(EventFilter(source_component=component,
                                        source_names=frozenset(names) if names else None))

    def scope(self, scope: ScopeFilter) -> EventChannel:
        wanted = tuple((_SCOPE_TO_CORE.get(f.name, f.name), getattr(scope, f.name))
                       for f in fields(ScopeFilter) if getattr(scope, f.name))
        return self._narrow(EventFilter(scope=wanted)) if wanted else self

    def _options(self, opts: SubscribeOptions | None) -> dict[str, Any]:
        opts = opts or SubscribeOptions()
        if not isinstance(opts.buffer, int) or opts.buffer < 0:
            raise InvalidSubscriptionError(f"buffer must be an int >= 0, got {opts.buffer!r}")
        timeout = opts.timeout
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        combined = self._core_filter
        if self._filters:
            pico_filters = self._filters
            combined = combined & EventFilter(predicate=lambda event: all(
                f(from_core(event)) for f in pico_filters))
        options: dict[str, Any] = {
            "filter": combined,
            "priority": opts.priority,
            "timeout": timeout or None,
            "backpressure": Backpressure(_choice(
                BackpressurePolicy, opts.backpressure or DropOldest, "backpressure")),
            "concurrency": _CONCURRENCY[_choice(
                ConcurrencyKind, opts.concurrency or Locked, "concurrency")],
            "name": opts.name or None,  # else the handler's name
        }
        if opts.buffer:
            options["buffer"] = opts.buffer
        return options

    def _check(self, ctx: Context | None) -> Context:
        ctx = ctx or _BACKGROUND
        if ctx.err() is not None:
            raise ctx.err()  # type: ignore[misc]
        if self._bus.core.closed:
            raise ErrBusClosed()
        return ctx

    def _subscribe(self, ctx: Context | None, opts: SubscribeOptions | None,
                   handler: Handler | None, once: bool) -> Subscription:
        if handler is None:
            raise ErrNilHandler()
        if not callable(handler):
            raise InvalidSubscriptionError(f"handler must be callable, got {handler!r}")
        ctx = self._check(ctx)
        options = self._options(opts)
        policy = _choice(PanicPolicy, (opts or SubscribeOptions()).panic_policy
                         or RecoverAndLog, "panic policy")
        if once:
            options["concurrency"] = Concurrency.SEQUENTIAL
        options["name"] = options["name"] or describe_handler(handler)
        holder: list[Subscription] = []

        async def deliver(event: core_events.Event) -> None:
            await holder[0]._deliver(handler, ctx, event)

        try:
            core_sub = self._bus.core.subscribe(
                deliver, once=once, error_policy=ErrorPolicy.RAISE
                if policy is PanicPolicy.Crash else ErrorPolicy.ISOLATE, **options)
        except BusClosedError:
            raise ErrBusClosed() from None
        sub = Subscription(core_sub, policy)
        holder.append(sub)
        self._bus._track(sub)
        ctx._on_done(core_sub.close)
        return sub

    def subscribe(self, ctx: Context | None, opts: SubscribeOptions | None,
                  handler: Handler | None) -> Subscription:
        """Call ``handler(ctx, evt)`` for each event passing this channel."""
        return self._subscribe(ctx, opts, handler, once=False)

    def subscribe_once(self, ctx: Context | None, opts: SubscribeOptions | None,
                       handler: Handler | None) -> Subscription:
        """Handle the first event passing this channel, then close (always ``Locked``)."""
        return self._subscribe(ctx, opts, handler, once=True)

    def subscribe_chan(self, ctx: Context | None,
                       opts: SubscribeOptions | None) -> tuple[Subscription, EventStream]:
        """Receive events from a stream instead of a handler (concurrency and panic policy
        do not apply)."""
        ctx = self._check(ctx)
        options = self._options(opts)
        options["concurrency"] = Concurrency.SEQUENTIAL
        try:
            core_sub = self._bus.core.subscribe(None, **options)
        except BusClosedError:
            raise ErrBusClosed() from None
        sub = Subscription(core_sub, PanicPolicy.RecoverAndLog)
        self._bus._track(sub)
        ctx._on_done(core_sub.close)
        return sub, EventStream(core_sub)


# --------------------------------------------------------------------------------- bus
class Bus(Protocol):
    """What publishes runtime events and creates filtered channels."""

    async def publish(self, ctx: Context | None, evt: Event) -> PublishResult: ...

    def publish_non_blocking(self, evt: Event) -> PublishResult: ...

    def channel(self) -> EventChannel: ...

    async def close(self) -> None: ...

    def stats(self) -> Stats: ...


class EventBus:
    """An in-process runtime event broadcaster on the project's bus (``core``, made here
    unless given: attach it to telemetry to get the events as spans)."""

    def __init__(self, core: CoreBus | None = None) -> None:
        self.core = core if core is not None else CoreBus()
        self._subs: dict[int, Subscription] = {}

    def _track(self, sub: Subscription) -> None:
        # Forget ended subscriptions now and then; stats only list live ones anyway.
        if len(self._subs) > 64:
            self._subs = {k: s for k, s in self._subs.items() if not s.core.closed}
        self._subs[sub.id()] = sub

    def channel(self) -> EventChannel:
        """The root channel: every event of this bus."""
        return EventChannel(self)

    async def publish(self, ctx: Context | None, evt: Event) -> PublishResult:
        """Broadcast ``evt`` to the matching subscriptions; a full ``Block`` queue makes it
        wait until there is room or ``ctx`` is done."""
        ctx = ctx or _BACKGROUND
        if self.core.closed:
            return PublishResult(err=ErrBusClosed())
        if ctx.err() is not None:
            return PublishResult(err=ctx.err())
        event = _to_core(evt)
        if ctx is _BACKGROUND:
            return _result(await self.core.publish(event))
        task = asyncio.ensure_future(self.core.publish(event))
        stop = asyncio.ensure_future(ctx.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return _result(task.result())
        task.cancel()
        return PublishResult(err=ctx.err())

    def publish_non_blocking(self, evt: Event) -> PublishResult:
        """Broadcast without waiting for queue room (a full ``Block`` queue drops a
        droppable event). Safe from other threads."""
        if self.core.closed:
            return PublishResult(err=ErrBusClosed())
        return _result(self.core.publish_nowait(_to_core(evt)))

    async def close(self) -> None:
        """Refuse new events and end every subscription after its queue drains."""
        await self.core.close()

    def stats(self) -> Stats:
        stats = self.core.stats()
        return Stats(
            published=stats.published, matched=stats.matched, delivered=stats.delivered,
            dropped=stats.dropped, blocked=stats.blocked, closed=stats.closed,
            subscribers=stats.subscribers,
            subscriber_stats=[_subscriber_stats(s, self._subs.get(s.id))
                              for s in stats.subscriber_stats],
        )


def _result(result: Any) -> PublishResult:
    return PublishResult(result.matched, result.delivered, result.dropped, result.blocked)
