"""What the bus and its subscriptions share: one mailbox per subscription, the bus-wide
counters, and the link a subscription keeps to its bus.

The bus puts events into a subscription's mailbox and the subscription's worker takes them
out; both count into the bus's counters. Keeping these in plain objects of their own (rather
than in each other's private fields) lets ``subscription`` import nothing from ``bus``.
The mailbox's fields are public and read directly on the publish path: one attribute read
each, as cheap as the private fields they replace.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .events import Event


class Waker(Protocol):
    """What wakes a mailbox's consumer: an ``asyncio.Future``, or a stand-in for a worker
    that is gone with its event loop (the subscription's revival)."""

    def done(self) -> bool: ...

    def set_result(self, result: None, /) -> None: ...


class Mailbox:
    """One subscription's bounded queue and the futures that wake its two sides.

    ``waiter`` wakes the consumer (the worker or iterator) when an event arrives;
    ``space_waiters`` wake publishers blocked on a full queue (BLOCK policy), oldest first.
    """

    __slots__ = (
        "buffer",
        "max_queued",
        "queue",
        "received",
        "residual",
        "space_waiters",
        "waiter",
    )

    def __init__(self, buffer: int, residual: Callable[[Event], bool] | None) -> None:
        self.queue: deque[Event] = deque()
        self.buffer = buffer
        self.waiter: Waker | None = None
        self.space_waiters: deque[asyncio.Future[None]] = deque()
        self.received = 0
        """Events that entered the queue (the subscription's ``received`` counter)."""
        self.max_queued = 0
        self.residual = residual
        """The part of the subscription's filter a kind lookup cannot decide, if any."""

    def wake(self) -> None:
        """Wake the consumer if it is waiting for an event."""
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


class BusCounters:
    """The bus-wide counters; the bus and each of its subscriptions add to the same object."""

    __slots__ = (
        "blocked",
        "delivered",
        "dropped",
        "failed",
        "hook_errors",
        "matched",
        "published",
        "timed_out",
    )

    def __init__(self) -> None:
        self.published = 0
        """Events published so far, and so the last sequence number given."""
        self.matched = 0
        self.delivered = 0
        self.dropped = 0
        self.blocked = 0
        self.failed = 0
        self.timed_out = 0
        self.hook_errors = 0


class BusLink:
    """What a subscription needs from the bus that made it: the counters to add to, the
    event loop to run on, and a way to be forgotten when it ends."""

    __slots__ = ("_forget", "_loop", "_revive", "counters")

    def __init__(
        self,
        counters: BusCounters,
        loop: Callable[[], asyncio.AbstractEventLoop],
        forget: Callable[[int], None],
        revive: Callable[[], None],
    ) -> None:
        self.counters = counters
        self._loop = loop
        self._forget = forget
        self._revive = revive

    def revive(self) -> None:
        """An event reached a subscription whose worker ended with its event loop: move the
        bus to the running loop (restarting workers there), or raise if none can run."""
        self._revive()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The bus's event loop; moves the bus to the running loop if the old one is gone."""
        return self._loop()

    def forget(self, subscription_id: int) -> None:
        """Stop routing events to the subscription (it has closed)."""
        self._forget(subscription_id)
