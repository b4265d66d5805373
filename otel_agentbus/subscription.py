"""One subscription: its bounded queue, delivery policies, worker and counters.

Publishing only appends to a deque and wakes the worker; the worker drains the queue in a
loop, so a burst of events costs one wake-up rather than one task per event (the seed bus
creates a task per handler per event). Handlers run on the worker, never on the publisher.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from .events import Event
from .filters import EventFilter
from .mailbox import BusLink, Mailbox

logger = logging.getLogger("otel_agentbus.bus")

EVICTION_SCAN: Final = 64

Handler = Callable[[Event], Awaitable[object] | object]
KeyFunction = Callable[[Event], object]


class Backpressure(enum.StrEnum):
    """What a full queue does with a droppable event (must-deliver events are never dropped)."""

    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"
    BLOCK = "block"


class Concurrency(enum.StrEnum):
    """How a handler subscription runs its handler."""

    SEQUENTIAL = "sequential"
    """One event at a time, in publish order."""
    CONCURRENT = "concurrent"
    """Up to ``max_concurrency`` events at once; no order."""
    KEYED = "keyed"
    """In order per key (by default the run), up to ``max_concurrency`` keys in parallel."""


class ErrorPolicy(enum.StrEnum):
    """What a handler exception does."""

    ISOLATE = "isolate"
    """Count it, log it, go on with the next event."""
    RAISE = "raise"
    """Close the subscription; ``await sub.wait()`` raises the exception."""


class InvalidSubscriptionError(ValueError):
    """A subscription option that cannot work; the message names it."""


class SubscriptionClosedError(RuntimeError):
    """Reading from a subscription that was closed with nothing left to read."""


def run_key(event: Event) -> object:
    """The default key of keyed delivery: the run, else the stream, else one shared key."""
    scope = event.scope
    return scope.run_id or scope.stream_id


@dataclass(frozen=True, slots=True)
class SubscriberStats:
    """Counters of one subscription; ``received == handled + failed + timed_out + dropped
    + queued`` once its worker is idle (``dropped`` includes events evicted from the queue).
    """

    id: int
    name: str
    received: int
    handled: int
    failed: int
    timed_out: int
    dropped: int
    overflowed: int
    """Must-deliver events queued beyond the buffer rather than dropped."""
    queued: int
    max_queued: int
    closed: bool


_IN_HANDLER: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar(
    "otel_agentbus_in_handler", default=False
)


def in_handler() -> bool:
    """True while running inside a subscriber of some bus (publishes there never block)."""
    return _IN_HANDLER.get()


class Subscription:
    """A live subscription; also an async iterator when it was made without a handler."""

    def __init__(
        self,
        link: BusLink,
        sub_id: int,
        event_filter: EventFilter,
        handler: Handler | None,
        *,
        name: str,
        buffer: int,
        backpressure: Backpressure,
        concurrency: Concurrency,
        max_concurrency: int,
        key: KeyFunction,
        timeout: float | None,
        error_policy: ErrorPolicy,
        priority: int,
        once: bool,
    ) -> None:
        self._link = link
        self._counters = link.counters
        self.id = sub_id
        self.name = name
        self.filter = event_filter
        self.priority = priority
        self._handler = handler
        self._buffer = buffer
        self._backpressure = backpressure
        self._concurrency = concurrency
        self._max_concurrency = max_concurrency
        self._key = key
        self._timeout = timeout
        self._error_policy = error_policy
        self._once = once
        self.mailbox = Mailbox(
            buffer, event_filter.matches_residual if event_filter.has_residual else None)
        """Where the bus puts this subscription's events (the bus's side of it)."""
        self._queue = self.mailbox.queue
        self._space_waiters = self.mailbox.space_waiters
        self._closing = False
        self._drain_on_close = True
        self._closed = False
        self._error: BaseException | None = None
        self._loop = link.loop()
        """The loop the worker runs on (moved by ``resume`` when the bus changes loops)."""
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._revival = _Revival(self)

        self.handled = 0
        self.failed = 0
        self.timed_out = 0
        self.dropped = 0
        self.overflowed = 0

    @property
    def received(self) -> int:
        return self.mailbox.received

    @property
    def max_queued(self) -> int:
        return self.mailbox.max_queued

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the handler's worker on the subscription's loop (the bus's side)."""
        if self._handler is None:
            return
        worker = {
            Concurrency.SEQUENTIAL: self._sequential_worker,
            Concurrency.CONCURRENT: self._concurrent_worker,
            Concurrency.KEYED: self._keyed_worker,
        }[self._concurrency]
        task = self._worker = self._loop.create_task(
            self._guarded(worker), name=f"otel-agentbus:{self.name}"
        )
        # A worker cancelled before its first step never runs _guarded's finally.
        task.add_done_callback(self._worker_ended)

    async def _guarded(self, body: Callable[[], Awaitable[None]]) -> None:
        _IN_HANDLER.set(True)
        task = asyncio.current_task()
        try:
            await body()
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None and task is self._worker:
                self._worker_ended(task)

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        """End the subscription, unless its worker was cancelled from outside while the
        subscription was open: the event loop is going away (``asyncio.run`` ending). Then
        the queue is kept and ``resume`` starts a new worker on the bus's next loop."""
        if task is not self._worker:
            return  # a worker replaced by resume, or _guarded already decided
        self._worker = None
        if self._closing:
            self._finish()
        else:
            self.mailbox.waiter = self._revival

    def _revive(self) -> None:
        """An event was queued while the worker is gone: ask the bus to move to the running
        loop (``resume`` then starts a worker). If it cannot, the event is taken back out."""
        mailbox = self.mailbox
        mailbox.waiter = self._revival  # until resume() replaces it
        try:
            self._link.revive()
        except BaseException:
            self._queue.pop()  # the event just queued: the publisher gets the error instead
            mailbox.received -= 1
            raise

    def resume(self, loop: asyncio.AbstractEventLoop) -> None:
        """Carry the subscription over to ``loop`` (the bus's side): the old loop is gone,
        with its worker and its waiters; queued events stay and are handled on ``loop``."""
        if self._closed or self._loop is loop:
            return
        self._loop = loop
        mailbox = self.mailbox
        mailbox.waiter = None
        mailbox.space_waiters.clear()  # the publishers blocked there ended with their loop
        self._tasks.clear()
        if not self._done.done():
            self._done = loop.create_future()
        self._worker = None
        self.start()

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._closing = True
        self._link.forget(self.id)
        if self.mailbox.waiter is self._revival:
            self.mailbox.waiter = None
        if self._queue:
            self.dropped += len(self._queue)
            self._counters.dropped += len(self._queue)
            self._queue.clear()
        for waiter in self._space_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._space_waiters.clear()
        self._wake()
        if not self._done.done():
            if self._error is not None:
                self._done.set_exception(self._error)
                # Mark it retrieved so an unawaited subscription does not log a warning;
                # the error was logged when it happened.
                self._done.exception()
            else:
                self._done.set_result(None)

    def close(self, *, drain: bool = False) -> None:
        """Stop receiving events. With ``drain`` the handler first gets what is queued."""
        if self._closing:
            return
        self._closing = True
        self._drain_on_close = drain
        self._link.forget(self.id)
        if self._worker is None:
            if self._handler is not None or not drain or not self._queue:
                # an iterator, or a handler whose worker ended with its event loop
                self._finish()
            else:
                self._wake()
            return
        if drain:
            self._wake()
        else:
            self._worker.cancel()

    def abort(self, timeout: float | None) -> None:
        """End a subscription that did not drain in time (the bus's side, at close)."""
        if self._done.done():
            return
        if self._worker is None:
            # An iterator nobody read to the end: end it, counting its queue as dropped.
            self._finish()
        else:
            logger.warning("subscriber %r did not drain within %ss; cancelling",
                           self.name, timeout)
            self._worker.cancel()

    @property
    def finished(self) -> asyncio.Future[None]:
        """Done when the subscription has ended (what ``wait`` awaits, without raising)."""
        return self._done

    async def wait(self) -> None:
        """Wait until the subscription has ended; re-raises a handler error under RAISE."""
        await asyncio.shield(self._done)

    @property
    def done(self) -> bool:
        return self._done.done()

    @property
    def closed(self) -> bool:
        return self._closing

    def stats(self) -> SubscriberStats:
        return SubscriberStats(
            id=self.id,
            name=self.name,
            received=self.mailbox.received,
            handled=self.handled,
            failed=self.failed,
            timed_out=self.timed_out,
            dropped=self.dropped,
            overflowed=self.overflowed,
            queued=len(self._queue),
            max_queued=self.mailbox.max_queued,
            closed=self._closing,
        )

    # ------------------------------------------------------------------ enqueue
    def _wake(self) -> None:
        self.mailbox.wake()

    def offer(self, event: Event, may_block: bool) -> int:
        """Queue ``event`` (the bus's side, when the mailbox is full or publishers wait);
        returns 0 queued, 1 dropped, 2 must wait for space (BLOCK, ``may_block``)."""
        mailbox = self.mailbox
        queue = self._queue
        mailbox.received += 1
        if len(queue) < self._buffer and not self._space_waiters:
            queue.append(event)
        elif event._must_deliver:
            if self._backpressure is Backpressure.BLOCK and may_block:
                mailbox.received -= 1
                return 2
            # Never dropped: it goes in beyond the buffer, and the overflow is counted.
            queue.append(event)
            self.overflowed += 1
        elif self._backpressure is Backpressure.BLOCK:
            if may_block:
                mailbox.received -= 1
                return 2
            if in_handler():
                # A handler publishing into a full queue must not wait for itself.
                queue.append(event)
                self.overflowed += 1
            else:
                self.dropped += 1
                return 1
        elif self._backpressure is Backpressure.DROP_OLDEST:
            if self._evict_oldest_droppable():
                queue.append(event)
            else:
                self.dropped += 1
                return 1
        else:
            self.dropped += 1
            return 1
        depth = len(queue)
        if depth > mailbox.max_queued:
            mailbox.max_queued = depth
        mailbox.wake()
        return 0

    def _evict_oldest_droppable(self) -> bool:
        """Drop the oldest droppable queued event, looking at most EVICTION_SCAN deep.

        The bound keeps a publish O(1) when the queue's head is full of must-deliver events;
        if no droppable event is near the head, the caller drops the new one instead.
        """
        queue = self._queue
        if not queue[0]._must_deliver:
            queue.popleft()
            self.dropped += 1
            self._counters.dropped += 1
            return True
        for index in range(1, min(len(queue), EVICTION_SCAN)):
            if not queue[index]._must_deliver:
                del queue[index]
                self.dropped += 1
                self._counters.dropped += 1
                return True
        return False

    async def offer_blocking(self, event: Event) -> bool:
        """Wait for room (BLOCK policy), then queue; False if the subscription closed
        (the bus's side, for a publisher that must wait)."""
        loop = self._link.loop()
        while not self._closing and (
            len(self._queue) >= self._buffer or self._space_waiters
        ):
            waiter = loop.create_future()
            self._space_waiters.append(waiter)
            woken = False
            try:
                await waiter
                woken = True
            finally:
                if self._space_waiters and self._space_waiters[0] is waiter:
                    self._space_waiters.popleft()
                elif waiter in self._space_waiters:
                    self._space_waiters.remove(waiter)
                if not woken:
                    # Cancelled: pass on a wake-up this waiter may have been given.
                    self._release_space()
            if len(self._queue) < self._buffer:
                break
        if self._closing:
            return False
        self.mailbox.received += 1
        self._queue.append(event)
        if len(self._queue) > self.mailbox.max_queued:
            self.mailbox.max_queued = len(self._queue)
        self._wake()
        self._release_space()
        return True

    def _release_space(self) -> None:
        """Wake the first publisher waiting for room, if there is room.

        Workers call it only while that publisher is not woken yet: it stays queued until
        it runs, and a publisher blocked on a full queue is the steady state of a burst.
        """
        if self._space_waiters and len(self._queue) < self._buffer:
            waiter = self._space_waiters[0]
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------- handling
    async def _idle(self) -> bool:
        """Sleep until there is work; False when the subscription should end."""
        if self._closing and (not self._drain_on_close or not self._queue):
            return False
        if self._queue:
            return True
        waiter = self._loop.create_future()
        self.mailbox.waiter = waiter
        await waiter
        return not (self._closing and not self._queue)

    async def _invoke(self, event: Event) -> None:
        handler = self._handler
        assert handler is not None
        try:
            if self._timeout is None:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            else:
                async with asyncio.timeout(self._timeout):
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
        except TimeoutError:
            if self._timeout is None:
                self._fail(event, TimeoutError("handler raised TimeoutError"))
                return
            self.timed_out += 1
            self._counters.timed_out += 1
            logger.warning(
                "subscriber %r timed out after %ss on %s (seq %s); handler cancelled",
                self.name, self._timeout, event.kind, event.seq,
            )
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                if self._drain_on_close or not self._closing:  # not close(drain=False):
                    # the handler cancelled its own task, or a stuck one was cancelled
                    self._fail(event, asyncio.CancelledError("handler cancelled its task"))
                raise
            self._fail(event, asyncio.CancelledError("handler cancelled itself"))
            return
        except Exception as error:
            self._fail(event, error)
            return
        self.handled += 1
        if self._once:
            self.close()

    def fail(self, event: Event, error: BaseException) -> None:
        """Count and log a failure on ``event``; under RAISE, close the subscription."""
        self._fail(event, error)

    def _fail(self, event: Event, error: BaseException) -> None:
        self.failed += 1
        self._counters.failed += 1
        if self._error_policy is ErrorPolicy.RAISE:
            logger.error("subscriber %r failed on %s (seq %s); closing it",
                         self.name, event.kind, event.seq, exc_info=error)
            self._error = error
            self.close()
        else:
            logger.warning("subscriber %r failed on %s (seq %s): %r",
                           self.name, event.kind, event.seq, error)

    async def _sequential_worker(self) -> None:
        queue = self._queue
        handler = self._handler
        # The common case (a coroutine function, no timeout) is inlined: no extra coroutine
        # per event, which is most of the cost of delivering one.
        inline = self._timeout is None and inspect.iscoroutinefunction(handler)
        space_waiters = self._space_waiters
        once = self._once
        # close(drain=False) cancels this task, but the cancellation only lands when a
        # handler suspends: a close from inside the loop (once, RAISE) must return itself.
        while await self._idle():
            while queue:
                event = queue.popleft()
                if space_waiters and not space_waiters[0].done():  # see _release_space
                    self._release_space()
                if inline:
                    try:
                        await handler(event)  # type: ignore[misc]
                    except asyncio.CancelledError:
                        task = asyncio.current_task()
                        if task is not None and task.cancelling():
                            if self._drain_on_close or not self._closing:  # see _invoke
                                self._fail(event, asyncio.CancelledError(
                                    "handler cancelled its task"))
                            raise
                        self._fail(event, asyncio.CancelledError("handler cancelled itself"))
                        if self._closing and not self._drain_on_close:
                            return
                        continue
                    except Exception as error:
                        self._fail(event, error)
                        if self._closing and not self._drain_on_close:
                            return
                        continue
                    self.handled += 1
                    if once:
                        self.close()
                        return
                else:
                    await self._invoke(event)
                    if self._closing and not self._drain_on_close:
                        return

    async def _concurrent_worker(self) -> None:
        queue = self._queue
        limit = self._max_concurrency
        slot_free: asyncio.Event = asyncio.Event()
        tasks = self._tasks
        loop = self._loop

        def release(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            slot_free.set()

        try:
            while await self._idle():
                while queue:
                    while len(tasks) >= limit:
                        slot_free.clear()
                        await slot_free.wait()
                    event = queue.popleft()
                    if self._space_waiters and not self._space_waiters[0].done():
                        self._release_space()
                    task = loop.create_task(self._invoke(event))
                    tasks.add(task)
                    task.add_done_callback(release)
            while tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()

    async def _keyed_worker(self) -> None:
        """Move queued events to their key's queue; the runners handle them (_KeyedRunners).

        An event waits in the subscription's queue (where backpressure sees it) while
        ``max_concurrency`` keys already have events pending.
        """
        queue = self._queue
        key_of = self._key
        runners = _KeyedRunners(self)
        try:
            while await self._idle():
                while queue:
                    event = queue[0]
                    try:
                        key = key_of(event)
                    except Exception as error:  # a broken key function is that sub's failure
                        queue.popleft()
                        self._fail(event, error)
                        if self._closing and not self._drain_on_close:
                            return
                        continue
                    if not runners.offer(key, event):
                        await runners.key_done()
                        continue
                    queue.popleft()
                    if self._space_waiters and not self._space_waiters[0].done():
                        self._release_space()
            await runners.join()
        finally:
            runners.stop()

    def _count_dropped(self, count: int) -> None:
        """Count events that left the queue but will never be handled (closed, cancelled)."""
        self.dropped += count
        self._counters.dropped += count

    # ------------------------------------------------------------ async iteration
    def __aiter__(self) -> AsyncIterator[Event]:
        if self._handler is not None:
            raise TypeError("a subscription with a handler cannot also be iterated")
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._queue:
                event = self._queue.popleft()
                if self._space_waiters and not self._space_waiters[0].done():
                    self._release_space()
                self.handled += 1
                if self._once:
                    self.close(drain=False)
                return event
            if self._closing:
                self._finish()
                raise StopAsyncIteration
            # The bus's loop, moved to the running one if the old loop is gone (resume).
            waiter = self._link.loop().create_future()
            self.mailbox.waiter = waiter
            await waiter

    async def next(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            try:
                return await self.__anext__()
            except StopAsyncIteration:
                raise SubscriptionClosedError(f"subscription {self.name!r} is closed") from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Subscription(id={self.id}, name={self.name!r}, "
                f"queued={len(self._queue)}, closed={self._closing})")


class _Revival:
    """Stands in for the waiter of a worker that ended with its event loop: the next event
    put in the mailbox wakes it, as it would a waiter, and so revives the subscription on
    the running loop. The publish path pays nothing for this check."""

    __slots__ = ("_sub",)

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub

    def done(self) -> bool:
        return False

    def set_result(self, result: None, /) -> None:
        self._sub._revive()


_FAN_OUT: Final = 2
"""Runners a freshly woken keyed runner wakes when more keys are ready: the number of
runners free to take ready keys doubles per loop turn while handlers suspend."""


class _KeyedRunners:
    """Keyed delivery's runners: at most ``max_concurrency`` tasks, each taking ready keys in
    turn and handling one key's events in order.

    A runner outlives the key it ran and parks when no key is ready, so interleaved runs cost
    a deque per key rather than a task per key (a task per key, ended when the key's queue
    emptied, made nearly every event pay for a task once a thousand runs interleaved).
    Runners are woken on demand: a runner about to run a handler while keys are still ready
    first makes sure another runner is free to take them, should the handler suspend.
    """

    def __init__(self, sub: Subscription) -> None:
        self._sub = sub
        self._loop = sub._loop
        self._limit = sub._max_concurrency
        self._pending: dict[object, deque[Event]] = {}
        """Every key with events not yet handled: being run, or ready."""
        self._ready: deque[tuple[object, deque[Event]]] = deque()
        """Keys with events that no runner has taken yet, oldest first."""
        self._parked: list[asyncio.Future[None]] = []
        self._free = 0
        """Runners started or woken that have not yet taken a key or parked: each will look
        at ``_ready`` before it parks, so a key made ready while one is free needs no wake."""
        self._runners = 0
        self._key_done: asyncio.Future[None] | None = None
        self._stopped = False

    # ------------------------------------------------------------------ dispatcher side
    def offer(self, key: object, event: Event) -> bool:
        """Queue ``event`` behind its key; False when ``max_concurrency`` keys are pending."""
        items = self._pending.get(key)
        if items is not None:
            items.append(event)
            return True
        if len(self._pending) >= self._limit:
            return False
        items = deque((event,))
        self._pending[key] = items
        self._ready.append((key, items))
        if not self._free:
            self._kick()
        return True

    async def key_done(self) -> None:
        """Wait until some key has no events left."""
        waiter = self._loop.create_future()
        self._key_done = waiter
        await waiter

    async def join(self) -> None:
        """Wait until every pending key's events are handled."""
        while self._pending:
            await self.key_done()

    def stop(self) -> None:
        """End the runners; count what none of them will handle as dropped.

        After a drain no key is pending, so every runner is parked or about to park: it is
        woken to return, which costs less than cancelling it. Otherwise (close without
        draining, the worker cancelled) the runners are cancelled, handlers with them.
        """
        self._stopped = True
        self._limit = 0  # no runner is woken or started from now on
        parked, self._parked = self._parked, []
        if not self._pending:
            for waiter in parked:
                if not waiter.done():
                    waiter.set_result(None)
            return
        left = 0
        for items in self._pending.values():
            left += len(items)
            items.clear()
        self._pending.clear()
        self._ready.clear()
        if left:
            self._sub._count_dropped(left)
        for task in self._sub._tasks:
            task.cancel()

    # ---------------------------------------------------------------------- runners
    def _kick(self) -> bool:
        """Make one more runner free: wake a parked one, else start one under the limit."""
        if self._parked:
            self._parked.pop().set_result(None)  # the most recently parked: warm
        elif self._runners < self._limit:
            self._runners += 1
            tasks = self._sub._tasks
            task = self._loop.create_task(self._run())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            return False
        self._free += 1
        return True

    async def _run(self) -> None:
        """Take ready keys until none is left, then park until kicked.

        A key's events are handled inline (no coroutine per key): a thousand interleaved
        runs make nearly every event a key of its own.
        """
        sub = self._sub
        ready = self._ready
        fresh = True  # just started or woken: it starts the fan-out
        try:
            while True:
                while ready:
                    key, items = ready.popleft()
                    if ready:
                        self._spare(fresh)
                    fresh = False
                    self._free -= 1
                    try:
                        while items and not (sub._closing and not sub._drain_on_close):
                            event = items.popleft()
                            try:
                                await sub._invoke(event)
                            except asyncio.CancelledError:
                                if sub._closing and not sub._drain_on_close:
                                    sub._count_dropped(1)  # _invoke did not count it
                                raise
                    finally:
                        self._key_finished(key, items)
                    self._free += 1
                if self._stopped:
                    return
                parked = self._loop.create_future()
                self._parked.append(parked)
                self._free -= 1
                await parked
                if self._stopped:
                    return
                fresh = True
        finally:
            self._runners -= 1

    def _spare(self, fresh: bool) -> None:
        """Before running a handler while keys are ready, free another runner to take them.

        A freshly woken runner frees up to ``_FAN_OUT`` more, so while handlers suspend the
        free runners double per loop turn; one that handles without suspending takes the
        ready keys itself, and those it woke find nothing and park again.
        """
        others = self._free - 1
        wanted = min(len(self._ready), others + _FAN_OUT) if fresh else 1
        while others < wanted and self._kick():
            others += 1

    def _key_finished(self, key: object, items: deque[Event]) -> None:
        """Forget ``key`` (counting events left unhandled) and wake a dispatcher waiting."""
        if items:  # closed without draining, or the runner was cancelled
            self._sub._count_dropped(len(items))
            items.clear()
        self._pending.pop(key, None)
        waiter = self._key_done
        if waiter is not None:
            self._key_done = None
            if not waiter.done():
                waiter.set_result(None)


def describe_handler(handler: Any) -> str:
    """A readable default subscription name."""
    return getattr(handler, "__qualname__", None) or type(handler).__name__
