"""The EventBus: publish events, deliver them to subscribers, keep history and counters.

One asyncio API for what the seeds' buses do (Hive's typed filters, history and
``wait_for``; PicoClaw's backpressure, concurrency kinds, publish results and stats), plus
publish hooks through which the telemetry mirror stamps and records every event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol, Unpack, cast

from .default_mirror import default_mirror
from .events import Event, EventValidationError, _set_seq
from .filters import make_filter
from .mailbox import BusCounters, BusLink, Mailbox
from .subscribe_options import DEFAULT_BUFFER as DEFAULT_BUFFER
from .subscribe_options import SubscribeKeywords, SubscribeOptions
from .subscription import (
    _IN_HANDLER,
    Backpressure,
    Concurrency,
    ErrorPolicy,
    Handler,
    InvalidSubscriptionError,
    SubscriberStats,
    Subscription,
    describe_handler,
    run_key,
)

logger = logging.getLogger("otel_agentbus.bus")

DEFAULT_HISTORY: Final = 1000


class BusClosedError(RuntimeError):
    """Publishing to or subscribing on a closed bus."""


class BusLoopError(RuntimeError):
    """Using the bus from an event loop other than its own while its own still runs."""


class PublishHook(Protocol):
    """Called on the publisher's side for every event, after it gets its sequence number
    and before any subscriber sees it (the telemetry mirror is one)."""

    def __call__(self, event: Event, /) -> None: ...


class PublishResult(NamedTuple):
    """What one publish did. ``delivered`` counts queues the event entered.

    A named tuple because one is made per publish and tuples are the cheapest to build.
    """

    seq: int | None
    matched: int = 0
    delivered: int = 0
    dropped: int = 0
    blocked: int = 0
    """Subscriptions the publisher had to wait on (BLOCK policy, full queue)."""
    deferred: bool = False
    """Published from another thread: handed to the bus's loop, counted there."""


_new_result = cast(Callable[[tuple[object, ...]], PublishResult],
                   functools.partial(tuple.__new__, PublishResult))
"""``_new_result((seq, matched, delivered, dropped, blocked, deferred))``: a PublishResult
built in C, without the named tuple's Python-level ``__new__`` (one is made per publish)."""


_in_handler_get = _IN_HANDLER.get
_get_running_loop = asyncio._get_running_loop
"""The running loop or None, in C: the publish path checks it is still the bus's loop."""


@dataclass(frozen=True, slots=True)
class BusStats:
    published: int
    matched: int
    delivered: int
    dropped: int
    blocked: int
    failed: int
    timed_out: int
    hook_errors: int
    subscribers: int
    history_size: int
    closed: bool
    subscriber_stats: tuple[SubscriberStats, ...]


class EventBus:
    """An in-process event bus for one asyncio event loop.

    ``publish`` never runs a handler: it queues the event for each matching subscription and
    returns, waiting only for BLOCK subscriptions whose queue is full. ``publish_nowait`` is
    the synchronous form, safe from other threads.
    """

    def __init__(self, *, history_size: int = DEFAULT_HISTORY, telemetry: bool = True) -> None:
        """``telemetry=False``: do not mirror to the telemetry ``configure()`` set up (by
        default a bus created after ``configure()`` mirrors to it; see ``default_mirror``)."""
        if not isinstance(history_size, int) or history_size < 0:
            raise ValueError(f"history_size must be an int >= 0, got {history_size!r}")
        self._history: deque[Event] = deque(maxlen=history_size)
        self._history_on = history_size > 0
        self._loop_or_none: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._subs: dict[int, Subscription] = {}
        self._ordered: tuple[Subscription, ...] = ()
        self._by_kind: dict[str, tuple[tuple[Subscription, Mailbox], ...]] = {}
        self._hooks: tuple[PublishHook, ...] = ()
        self._must_wait: list[Subscription] = []
        self._must_wait_event: Event | None = None
        """The BLOCK subscriptions whose full queue the last ``_fanout`` left to ``publish``
        to wait on, and the event as stamped (a copy when re-published). ``publish`` takes
        them at once, before it awaits; so ``_fanout`` returns no pair per publish."""
        self._sub_ids = itertools.count(1)
        self._closed = False
        self._lock = threading.Lock()
        self._counters = BusCounters()
        self._link = BusLink(self._counters, lambda: self._loop, self._forget, self._revive)
        if telemetry:
            mirror = default_mirror()
            if mirror is not None:
                self.add_hook(mirror)

    # --------------------------------------------------------------------- loop
    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        """The bus's loop: the running one, which the bus adopts if it is not its own."""
        running = _get_running_loop()
        loop = self._loop_or_none
        if running is not None and running is not loop:
            self._adopt(running)
            return running
        if loop is None:
            raise RuntimeError(
                "EventBus needs a running asyncio event loop: subscribe from async code")
        return loop

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop`` (running in this thread) the bus's loop.

        A bus outlives ``asyncio.run``: when its old loop has stopped, the subscriptions move
        to the new one with their queued events, and new workers handle them. While the old
        loop still runs (in another thread) the bus refuses, since its subscriptions'
        handlers run there.
        """
        old = self._loop_or_none
        if old is not None and old is not loop and not old.is_closed() and old.is_running():
            raise BusLoopError(
                "this EventBus belongs to an event loop running in another thread; publish "
                "there, or call publish_nowait() from this thread to hand events to it")
        self._loop_or_none = loop
        self._loop_thread = threading.get_ident()
        if old is not None and old is not loop:
            for sub in tuple(self._subs.values()):
                sub.resume(loop)

    def _revive(self) -> None:
        """A subscription whose worker ended with its loop got an event (``BusLink.revive``).

        Checked only then, so the publish path pays nothing to notice a new loop.
        """
        running = _get_running_loop()
        if running is None:
            loop = self._loop_or_none
            if loop is None or loop.is_closed():
                raise BusClosedError(
                    "cannot publish: the bus's event loop is closed; publish from a running "
                    "loop (the bus moves to it) so that subscribers can handle the event")
        elif running is not self._loop_or_none:
            self._adopt(running)
        # Else the worker was cancelled on the running loop, which is ending (asyncio.run
        # cancels every task): the events wait in the queue for the bus's next loop.

    # ------------------------------------------------------------------- hooks
    def add_hook(self, hook: PublishHook) -> Callable[[], None]:
        """Run ``hook(event)`` on every publish; returns a function that removes it.

        Adding a hook the bus has already is a no-op (a bus mirrored by default and then
        attached explicitly records each event once)."""
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {hook!r}")
        if hook not in self._hooks:
            self._hooks = (*self._hooks, hook)

        def remove() -> None:
            self._hooks = tuple(h for h in self._hooks if h is not hook)

        return remove

    # --------------------------------------------------------------- subscribe
    def subscribe(
        self,
        handler: Handler | None = None,
        options: SubscribeOptions | None = None,
        **keywords: Unpack[SubscribeKeywords],
    ) -> Subscription:
        """Subscribe ``handler`` (sync or async) to the events matching every given filter.

        Options come as a :class:`SubscribeOptions` or as its fields by keyword (keywords
        given with ``options`` replace those fields). Without a handler the subscription is
        an async iterator. See docs/concepts.md for what each option does.
        """
        if self._closed:
            raise BusClosedError("cannot subscribe: the event bus is closed")
        if handler is not None and not callable(handler):
            raise InvalidSubscriptionError(f"handler must be callable, got {handler!r}")
        if options is None:
            options = SubscribeOptions(**keywords)
        elif not isinstance(options, SubscribeOptions):
            raise InvalidSubscriptionError(
                f"options must be a SubscribeOptions, got {type(options).__name__}")
        elif keywords:
            options = dataclasses.replace(options, **keywords)
        concurrency = Concurrency(options.concurrency)
        if handler is None and concurrency is not Concurrency.SEQUENTIAL:
            raise InvalidSubscriptionError("an iterator subscription is always sequential")
        sub_id = next(self._sub_ids)
        sub = Subscription(
            self._link,
            sub_id,
            options.event_filter,
            handler,
            name=options.name or (describe_handler(handler) if handler else f"stream-{sub_id}"),
            buffer=options.buffer,
            backpressure=Backpressure(options.backpressure),
            concurrency=concurrency,
            max_concurrency=options.max_concurrency,
            key=options.key or run_key,
            timeout=options.timeout,
            error_policy=ErrorPolicy(options.error_policy),
            priority=options.priority,
            once=options.once,
        )
        sub.start()
        with self._lock:
            self._subs[sub_id] = sub
            self._reindex()
        return sub

    def stream(
        self, options: SubscribeOptions | None = None, **keywords: Unpack[SubscribeKeywords]
    ) -> Subscription:
        """An async-iterator subscription: ``async for event in bus.stream(kinds=...)``."""
        if "handler" in keywords:
            raise InvalidSubscriptionError("stream() takes no handler; use subscribe()")
        return self.subscribe(None, options, **keywords)

    def subscribe_once(
        self,
        handler: Handler,
        options: SubscribeOptions | None = None,
        **keywords: Unpack[SubscribeKeywords],
    ) -> Subscription:
        """Handle the first matching event, then close."""
        keywords["once"] = True
        return self.subscribe(handler, options, **keywords)

    def unsubscribe(self, subscription: Subscription | int) -> bool:
        """Close a subscription (by handle or id); False if it was not active."""
        sub_id = subscription if isinstance(subscription, int) else subscription.id
        sub = self._subs.get(sub_id)
        if sub is None:
            return False
        sub.close()
        return True

    async def wait_for(
        self,
        kinds: str | Iterable[str] | None = None,
        *,
        timeout: float | None = None,
        **filters: object,
    ) -> Event | None:
        """The next matching event, or None after ``timeout`` seconds (Hive semantics)."""
        sub = self.subscribe(
            None, kinds=kinds, buffer=1, backpressure=Backpressure.DROP_NEWEST, once=True,
            name="wait_for", **filters,  # type: ignore[arg-type]
        )
        try:
            return await sub.next(timeout)
        except TimeoutError:
            return None
        finally:
            sub.close()

    def _forget(self, sub_id: int) -> None:
        with self._lock:
            if self._subs.pop(sub_id, None) is not None:
                self._reindex()

    def _reindex(self) -> None:
        # Higher priority first; equal priorities in subscription order.
        self._ordered = tuple(sorted(self._subs.values(), key=lambda s: (-s.priority, s.id)))
        self._by_kind = {}

    def _for_kind(self, kind: str) -> tuple[tuple[Subscription, Mailbox], ...]:
        subs = tuple((s, s.mailbox) for s in self._ordered if s.filter.matches_kind(kind))
        self._by_kind[kind] = subs
        return subs

    # ----------------------------------------------------------------- publish
    async def publish(self, event: Event) -> PublishResult:
        """Queue ``event`` for every matching subscriber; waits only on full BLOCK queues."""
        if self._loop_or_none is None:
            self._adopt(asyncio.get_running_loop())
        result = self._fanout(event, True)
        if not result[4]:  # result.blocked (by index, cheaper): nobody to wait on
            return result
        blocked, self._must_wait = self._must_wait, []
        stamped, self._must_wait_event = self._must_wait_event, None
        assert stamped is not None
        return await self._publish_blocked(stamped, blocked, result)

    async def _publish_blocked(
        self, event: Event, blocked: list[Subscription], result: PublishResult
    ) -> PublishResult:
        """The rest of ``publish`` when full BLOCK queues make the publisher wait."""
        delivered = result.delivered
        dropped = result.dropped
        counters = self._counters
        counters.blocked += len(blocked)
        for sub in blocked:
            if await sub.offer_blocking(event):
                delivered += 1
            else:
                dropped += 1
        counters.delivered += delivered - result.delivered
        counters.dropped += dropped - result.dropped
        return PublishResult(
            seq=result.seq, matched=result.matched, delivered=delivered, dropped=dropped,
            blocked=len(blocked),
        )

    def publish_nowait(self, event: Event) -> PublishResult:
        """Publish without waiting, from async code, sync code or another thread.

        A full BLOCK queue drops a droppable event here (counted); must-deliver events are
        never dropped. From another thread the event is handed to the bus's loop.
        """
        loop = self._loop_or_none
        if loop is not None and self._loop_thread != threading.get_ident():
            if self._closed:
                raise BusClosedError("cannot publish: the event bus is closed")
            if not isinstance(event, Event):
                raise EventValidationError(f"publish() takes an Event, got {type(event).__name__}")
            import contextvars

            try:
                loop.call_soon_threadsafe(
                    self._fanout_from_thread, event, context=contextvars.copy_context()
                )
            except RuntimeError:
                raise BusClosedError("cannot publish: the bus's event loop is closed") from None
            return PublishResult(seq=None, deferred=True)
        return self._fanout(event, False)

    def _fanout_from_thread(self, event: Event) -> None:
        try:
            self._fanout(event, False)
        except BusClosedError:
            logger.warning("event %s published from a thread after the bus closed", event.kind)

    def _fanout(self, event: Event, may_block: bool) -> PublishResult:
        """Stamp, record and queue ``event``; the publisher's whole cost in the common case.

        Subscriptions whose full BLOCK queue the publisher must wait on (``may_block``) are
        left in ``_must_wait`` and counted in the result's ``blocked``.
        """
        if type(event) is not Event:
            raise EventValidationError(f"publish() takes an Event, got {type(event).__name__}")
        if self._closed:
            raise BusClosedError("cannot publish: the event bus is closed")
        if event.seq is not None:
            event = event._copy_unpublished()
        counters = self._counters
        seq = counters.published = counters.published + 1
        _set_seq(event, seq)
        hooks = self._hooks
        if hooks:  # no iterator per publish when there are none
            self._run_hooks(hooks, event)
        if self._history_on:
            self._history.append(event)
        subs = self._by_kind.get(event.kind)
        if subs is None:
            subs = self._for_kind(event.kind)
        if not subs:
            return _new_result((seq, 0, 0, 0, 0, False))
        matched = delivered = dropped = blocked = 0
        for sub, box in subs:
            residual = box.residual
            if residual is not None:
                try:
                    if not residual(event):
                        continue
                except Exception as error:
                    sub.fail(event, error)
                    continue
            matched += 1
            # Fast path of Subscription.offer, inlined: room in the mailbox, nobody waiting.
            queue = box.queue
            depth = len(queue)
            if depth < box.buffer and not box.space_waiters:
                queue.append(event)
                box.received += 1
                if depth >= box.max_queued:
                    box.max_queued = depth + 1
                waiter = box.waiter
                if waiter is not None:
                    box.waiter = None
                    if not waiter.done():
                        waiter.set_result(None)
                delivered += 1
                continue
            # A publish made inside a handler never waits: in_handler(), one call less.
            outcome = sub.offer(event, may_block and not _in_handler_get())
            if outcome == 0:
                delivered += 1
            elif outcome == 1:
                dropped += 1
            elif blocked:
                self._must_wait.append(sub)
                blocked += 1
            else:
                self._must_wait = [sub]
                self._must_wait_event = event
                blocked = 1
        counters.matched += matched
        counters.delivered += delivered
        if dropped:
            counters.dropped += dropped
        return _new_result((seq, matched, delivered, dropped, blocked, False))

    def _run_hooks(self, hooks: tuple[PublishHook, ...], event: Event) -> None:
        """Run the publish hooks; one that fails is counted and logged, never raised."""
        for hook in hooks:
            try:
                hook(event)
            except Exception:
                self._counters.hook_errors += 1
                logger.exception("publish hook %r failed on %s", hook, event.kind)

    # ----------------------------------------------------------------- history
    def history(
        self,
        *,
        kinds: str | Iterable[str] | None = None,
        run_id: str | None = None,
        stream_id: str | None = None,
        node_id: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = 100,
    ) -> list[Event]:
        """Recent events, newest first, filtered; the ring keeps ``history_size`` events."""
        kind_set = None
        if kinds is not None:
            kind_set = make_filter(kinds=kinds).kinds
        found: list[Event] = []
        if limit is not None and limit <= 0:
            return found
        for event in reversed(self._history):
            if kind_set is not None and event.kind not in kind_set:
                continue
            scope = event.scope
            if run_id is not None and scope.run_id != run_id:
                continue
            if stream_id is not None and scope.stream_id != stream_id:
                continue
            if node_id is not None and scope.node_id != node_id:
                continue
            if since_ns is not None and event.time_ns < since_ns:
                continue
            if until_ns is not None and event.time_ns > until_ns:
                continue
            found.append(event)
            if limit is not None and len(found) >= limit:
                break
        return found

    # ------------------------------------------------------------------- stats
    def stats(self) -> BusStats:
        subs = tuple(self._subs.values())
        counters = self._counters
        return BusStats(
            published=counters.published,
            matched=counters.matched,
            delivered=counters.delivered,
            dropped=counters.dropped,
            blocked=counters.blocked,
            failed=counters.failed,
            timed_out=counters.timed_out,
            hook_errors=counters.hook_errors,
            subscribers=len(subs),
            history_size=len(self._history),
            closed=self._closed,
            subscriber_stats=tuple(s.stats() for s in subs),
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return self._ordered

    # ------------------------------------------------------------------- close
    async def close(self, *, drain: bool = True, timeout: float | None = 10.0) -> None:
        """Refuse new events, let every subscriber finish its queue (``drain``), end them.

        Handlers still running after ``timeout`` seconds are cancelled.
        """
        if self._closed:
            return
        running = asyncio.get_running_loop()
        if running is not self._loop_or_none and self._loop_or_none is not None:
            self._adopt(running)  # subscriptions left on a finished loop end on this one
        self._closed = True
        subs = list(self._subs.values())
        for sub in subs:
            sub.close(drain=drain)
        waits = [sub.finished for sub in subs]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=timeout)
        for sub in subs:
            sub.abort(timeout)
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    async def __aenter__(self) -> EventBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
