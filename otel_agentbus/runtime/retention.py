"""A bounded map with an optional time-to-live: finished results and idempotency keys.

A long-running runtime triggers without end; keeping every result (or every idempotency
key) would grow memory forever, so both are capped by count and, optionally, by age.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ExpiringStore(Generic[K, V]):
    """Keeps at most ``max_items`` entries, each for at most ``ttl`` seconds.

    The oldest entry goes first when full; expired entries are dropped lazily on every
    access, so no timer task is needed. ``clock`` is injectable for tests.
    """

    def __init__(self, max_items: int, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(max_items, int) or isinstance(max_items, bool) or max_items < 0:
            raise ValueError(f"max_items must be an int >= 0, got {max_items!r}")
        if ttl is not None and (not isinstance(ttl, int | float) or ttl <= 0):
            raise ValueError(f"ttl must be a number > 0 or None, got {ttl!r}")
        self.max_items = max_items
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.evicted = 0
        """Entries dropped for room or age (not counting ``pop``)."""

    def put(self, key: K, value: V) -> None:
        self.purge()
        self._items.pop(key, None)
        if self.max_items == 0:
            self.evicted += 1
            return
        self._items[key] = (self._clock(), value)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
            self.evicted += 1

    def get(self, key: K) -> V | None:
        self.purge()
        found = self._items.get(key)
        return None if found is None else found[1]

    def pop(self, key: K) -> V | None:
        found = self._items.pop(key, None)
        return None if found is None else found[1]

    def purge(self) -> None:
        """Drop expired entries (insertion order is age order, so stop at the first live)."""
        if self.ttl is None or not self._items:
            return
        deadline = self._clock() - self.ttl
        while self._items:
            key, (stored, _) = next(iter(self._items.items()))
            if stored > deadline:
                break
            del self._items[key]
            self.evicted += 1

    def __contains__(self, key: object) -> bool:
        self.purge()
        return key in self._items

    def __len__(self) -> int:
        self.purge()
        return len(self._items)

    def values(self) -> list[V]:
        self.purge()
        return [value for _, value in self._items.values()]
