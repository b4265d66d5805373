"""Subscription filters: which events a subscriber wants.

A filter has two parts. The kind part (exact kinds and prefixes) depends on the kind alone,
so the bus caches, per kind, the subscriptions it can reach; publishing a kind nobody wants
touches no subscription. The rest (source, scope fields, a predicate) is checked per event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from .events import Event
from .kinds import UnknownKindError, validate_kind

Predicate = Callable[[Event], bool]

SCOPE_FIELDS: Final = ("run_id", "stream_id", "node_id", "agent", "session_id", "turn_id",
                       "graph_id")


class InvalidFilterError(ValueError):
    """A filter argument that can never be right (a typo'd kind, a non-callable predicate)."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """All given conditions must hold; ``a & b`` combines two filters."""

    kinds: frozenset[str] | None = None
    kind_prefixes: tuple[str, ...] = ()
    source_component: str | None = None
    source_names: frozenset[str] | None = None
    scope: tuple[tuple[str, str], ...] = ()
    predicate: Predicate | None = None
    parts: tuple[EventFilter, ...] = ()

    def matches_kind(self, kind: str) -> bool:
        """The kind-only part, cached by the bus per kind."""
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.kind_prefixes and not kind.startswith(self.kind_prefixes):
            return False
        return all(part.matches_kind(kind) for part in self.parts)

    @property
    def has_residual(self) -> bool:
        """Whether anything beyond the kind must be checked per event."""
        return bool(
            self.source_component is not None
            or self.source_names is not None
            or self.scope
            or self.predicate is not None
            or any(part.has_residual for part in self.parts)
        )

    def matches_residual(self, event: Event) -> bool:
        """Everything but the kind."""
        if self.source_component is not None and event.source.component != self.source_component:
            return False
        if self.source_names is not None and event.source.name not in self.source_names:
            return False
        scope = event.scope
        for field_name, wanted in self.scope:
            if getattr(scope, field_name) != wanted:
                return False
        if self.predicate is not None and not self.predicate(event):
            return False
        return all(part.matches_residual(event) for part in self.parts)

    def matches(self, event: Event) -> bool:
        return self.matches_kind(event.kind) and self.matches_residual(event)

    def __and__(self, other: EventFilter) -> EventFilter:
        if not isinstance(other, EventFilter):
            return NotImplemented
        return EventFilter(parts=(self, other))


MATCH_ALL: Final = EventFilter()


def _names(value: object, argument: str) -> tuple[object, ...]:
    """A str or an iterable of names as a tuple; InvalidFilterError for anything else."""
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidFilterError(
            f"{argument} must be a str or an iterable of str, got {value!r}"
        ) from None


def make_filter(
    *,
    kinds: str | Iterable[str] | None = None,
    kind_prefix: str | Iterable[str] | None = None,
    source: str | None = None,
    source_names: str | Iterable[str] | None = None,
    run_id: str | None = None,
    stream_id: str | None = None,
    node_id: str | None = None,
    agent: str | None = None,
    session_id: str | None = None,
    turn_id: str | None = None,
    graph_id: str | None = None,
    predicate: Predicate | None = None,
) -> EventFilter:
    """Build and check a filter; every argument left ``None`` matches anything."""
    kind_set: frozenset[str] | None = None
    if kinds is not None:
        names = _names(kinds, "kinds")
        if not names:
            raise InvalidFilterError("kinds is empty: it would match nothing; pass None for all")
        try:
            kind_set = frozenset(validate_kind(name) for name in names)
        except UnknownKindError as error:
            raise InvalidFilterError(str(error)) from None
    prefixes: tuple[str, ...] = ()
    if kind_prefix is not None:
        prefixes = _names(kind_prefix, "kind_prefix")  # type: ignore[assignment]
        if not prefixes or any(not isinstance(p, str) or not p for p in prefixes):
            raise InvalidFilterError(f"kind_prefix must be non-empty strings, got {kind_prefix!r}")
    if source is not None and not isinstance(source, str):
        raise InvalidFilterError(f"source must be a component name (str), got {source!r}")
    name_set: frozenset[str] | None = None
    if source_names is not None:
        names = _names(source_names, "source_names")
        if not names:
            raise InvalidFilterError(
                "source_names is empty: it would match nothing; pass None for all"
            )
        if not all(isinstance(n, str) for n in names):
            raise InvalidFilterError(f"source_names must be strings, got {source_names!r}")
        name_set = frozenset(names)  # type: ignore[arg-type]
    values = {
        "run_id": run_id, "stream_id": stream_id, "node_id": node_id, "agent": agent,
        "session_id": session_id, "turn_id": turn_id, "graph_id": graph_id,
    }
    scope: list[tuple[str, str]] = []
    for field_name, value in values.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidFilterError(f"{field_name} filter must be a str, got {value!r}")
        scope.append((field_name, value))
    if predicate is not None and not callable(predicate):
        raise InvalidFilterError(f"predicate must be callable, got {predicate!r}")
    return EventFilter(
        kinds=kind_set,
        kind_prefixes=prefixes,
        source_component=source,
        source_names=name_set,
        scope=tuple(scope),
        predicate=predicate,
    )
