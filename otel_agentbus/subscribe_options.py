"""``subscribe()``'s options as one typed, validated value.

A ``SubscribeOptions`` can be built once and passed to many ``subscribe`` calls (or kept in
configuration); the keyword form of ``subscribe`` builds the same object.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Final, TypedDict

from .filters import MATCH_ALL, EventFilter, Predicate, make_filter
from .subscription import (
    Backpressure,
    Concurrency,
    ErrorPolicy,
    InvalidSubscriptionError,
    KeyFunction,
)

DEFAULT_BUFFER: Final = 1024


@dataclass(frozen=True, slots=True)
class SubscribeOptions:
    """What a subscription receives and how it is delivered; see docs/concepts.md for each option.

    Invalid values raise :class:`InvalidSubscriptionError` when the object is built, naming
    the option. Policy names given as strings are turned into their enums.
    """

    kinds: str | Iterable[str] | None = None
    kind_prefix: str | Iterable[str] | None = None
    source: str | None = None
    source_names: str | Iterable[str] | None = None
    run_id: str | None = None
    execution_id: str | None = None
    """Hive's name for ``run_id``; both may be given if they agree."""
    stream_id: str | None = None
    node_id: str | None = None
    agent: str | None = None
    session_id: str | None = None
    turn_id: str | None = None
    graph_id: str | None = None
    predicate: Predicate | None = None
    filter: EventFilter | None = None
    name: str | None = None
    buffer: int = DEFAULT_BUFFER
    backpressure: Backpressure | str = Backpressure.DROP_OLDEST
    concurrency: Concurrency | str = Concurrency.SEQUENTIAL
    max_concurrency: int = 10
    key: KeyFunction | None = None
    timeout: float | None = None
    error_policy: ErrorPolicy | str = ErrorPolicy.ISOLATE
    priority: int = 0
    once: bool = False
    _filter: EventFilter = field(default=MATCH_ALL, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.execution_id is not None and self.run_id is not None
                and self.run_id != self.execution_id):
            raise InvalidSubscriptionError("run_id and execution_id disagree")
        if self.filter is not None and not isinstance(self.filter, EventFilter):
            raise InvalidSubscriptionError(f"filter must be an EventFilter, got {self.filter!r}")
        buffer = self.buffer
        if not isinstance(buffer, int) or isinstance(buffer, bool) or buffer < 1:
            raise InvalidSubscriptionError(f"buffer must be an int >= 1, got {buffer!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise InvalidSubscriptionError(
                f"max_concurrency must be an int >= 1, got {self.max_concurrency!r}"
            )
        timeout = self.timeout
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise InvalidSubscriptionError(f"timeout must be a number > 0, got {timeout!r}")
        if not isinstance(self.priority, int):
            raise InvalidSubscriptionError(f"priority must be an int, got {self.priority!r}")
        if self.key is not None and not callable(self.key):
            raise InvalidSubscriptionError(f"key must be callable, got {self.key!r}")
        try:
            object.__setattr__(self, "backpressure", Backpressure(self.backpressure))
            object.__setattr__(self, "concurrency", Concurrency(self.concurrency))
            object.__setattr__(self, "error_policy", ErrorPolicy(self.error_policy))
        except ValueError as error:
            raise InvalidSubscriptionError(str(error)) from None
        if self.once and self.concurrency is not Concurrency.SEQUENTIAL:
            raise InvalidSubscriptionError(
                "once=True needs sequential delivery: concurrent handlers could each take one"
            )
        object.__setattr__(self, "_filter", self._build_filter())

    @property
    def event_filter(self) -> EventFilter:
        """The one filter all the filtering options add up to."""
        return self._filter

    def _build_filter(self) -> EventFilter:
        """Combine the filtering options; an ``InvalidFilterError`` names a bad one."""
        built = make_filter(
            kinds=self.kinds, kind_prefix=self.kind_prefix, source=self.source,
            source_names=self.source_names,
            run_id=self.run_id if self.run_id is not None else self.execution_id,
            stream_id=self.stream_id, node_id=self.node_id, agent=self.agent,
            session_id=self.session_id, turn_id=self.turn_id, graph_id=self.graph_id,
            predicate=self.predicate,
        )
        if self.filter is not None:
            built = self.filter if built == MATCH_ALL else built & self.filter
        return built


class SubscribeKeywords(TypedDict, total=False):
    """The keyword form of :class:`SubscribeOptions` (``subscribe(handler, kinds=...)``)."""

    kinds: str | Iterable[str] | None
    kind_prefix: str | Iterable[str] | None
    source: str | None
    source_names: str | Iterable[str] | None
    run_id: str | None
    execution_id: str | None
    stream_id: str | None
    node_id: str | None
    agent: str | None
    session_id: str | None
    turn_id: str | None
    graph_id: str | None
    predicate: Predicate | None
    filter: EventFilter | None
    name: str | None
    buffer: int
    backpressure: Backpressure | str
    concurrency: Concurrency | str
    max_concurrency: int
    key: KeyFunction | None
    timeout: float | None
    error_policy: ErrorPolicy | str
    priority: int
    once: bool


OPTION_NAMES: Final = frozenset(f.name for f in fields(SubscribeOptions) if f.init)
