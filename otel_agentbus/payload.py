"""The one walker over JSON-like data, and the secret-key rule, for the whole package.

Events freeze their payloads, the decorators turn arguments and results into JSON data,
the runtime redacts secrets from what it stores and the telemetry mirror scrubs what it
exports: all of them walk nested dicts and lists the same way, so they share this walker
and differ only in its parameters (see :func:`walker`):

- what happens to a leaf that is not JSON data (:class:`Leaves`): rejected with an error
  naming where it is, converted to its ``repr``, or kept as it is;
- whether containers come out frozen (read-only mappings and tuples) or as dicts and lists;
- whether the values of secret-looking keys (:func:`is_secret_key`) become ``"[redacted]"``;
- what a container nested deeper than :data:`MAX_DEPTH` becomes (an error, its ``repr``
  or a marker): the limit is the same everywhere. A cycle ends at the limit (strict
  walkers) or where it recurs (the others).

This module depends on nothing of OpenTelemetry: core modules use it, and
``telemetry/`` imports the secret-key rule from here.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final, NoReturn, Protocol

MAX_DEPTH: Final = 64
"""How deep containers may nest. A dict or list at this depth (the top-level value is at
depth 0) is not walked: each walker says what it becomes instead. A cycle always ends
here, so no walker recurses without bound."""

SECRET_KEYS: Final = frozenset({
    "api_key", "apikey", "authorization", "cookie", "password", "passwd", "secret",
    "set-cookie", "token", "access_token", "refresh_token", "client_secret",
    "x-hub-signature", "x-hub-signature-256", "private_key",
})
"""Keys whose values never leave the caller's objects (compared lower-cased), besides any
key ending in ``_token``, ``_secret`` or ``_password``."""
SECRET_SUFFIXES: Final = ("_token", "_secret", "_password")
REDACTED: Final = "[redacted]"
"""What the value of a secret-looking key becomes."""
TOO_DEEP: Final = "[too deep]"
"""The marker a redacting walker puts where a container nests deeper than MAX_DEPTH."""


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether the value under ``key`` is a secret (asked for every key of every payload
    converted or exported: the same few keys again and again, hence the cache)."""
    lowered = key.lower()
    return lowered in SECRET_KEYS or lowered.endswith(SECRET_SUFFIXES)


class Leaves(enum.Enum):
    """What a walker does with a value that is not JSON data (a non-str key, a NaN or an
    infinity, an object of another type)."""

    REJECT = "reject"
    """Raise the walker's error, naming where the value is (event payloads)."""
    CONVERT = "convert"
    """Values become their ``repr`` (arguments and results); keys become ``str(key)``."""
    KEEP = "keep"
    """Values stay as they are: only the containers and secrets are the walker's concern;
    keys become ``str(key)``."""


class Walk(Protocol):
    """A walker: ``walk(value)``; ``where`` names the value in errors, ``depth`` is where
    it sits (0 for a whole payload)."""

    def __call__(self, value: Any, where: str = "payload", depth: int = 0, /) -> Any: ...


EntryRule = Callable[[str, Any], "tuple[Any, bool] | None"]
"""``rule(key, item)`` for each entry of a mapping (after the secret-key rule): None drops
the entry, else ``(item, keep)``: the item to walk and whether the rule still applies
below it (the exporter's content keys: below one, only secrets are its concern)."""


def _too_deep_default(leaves: Leaves, error: type[Exception]) -> Callable[[Any, str], Any]:
    if leaves is Leaves.REJECT:
        def reject(value: Any, where: str) -> NoReturn:
            raise error(f"{where}: nested deeper than {MAX_DEPTH} levels (is there a cycle?)")
        return reject
    if leaves is Leaves.CONVERT:
        return lambda value, where: repr(value)
    return lambda value, where: TOO_DEEP


def walker(leaves: Leaves, *, freeze: bool = False, redact: bool = False,
           error: type[Exception] = ValueError,
           too_deep: Callable[[Any, str], Any] | None = None,
           entry_rule: EntryRule | None = None) -> Walk:
    """A walker over JSON-like data with these rules (see the module docstring).

    Mappings (any :class:`~collections.abc.Mapping`) become dicts, or read-only mappings
    with ``freeze``; lists and tuples become lists, or tuples with ``freeze``. Subclasses
    of str, int, float and bool (enums) become the plain values. ``error`` is raised by a
    REJECT walker; ``too_deep(value, where)`` replaces a container nested deeper than
    :data:`MAX_DEPTH` (default: the error, the ``repr`` or :data:`TOO_DEEP`, by
    ``leaves``); ``entry_rule`` sees each mapping entry (the exporter's content keys).

    Cycles: a REJECT walker fails at the depth limit (its first path into the cycle gets
    there). The others track the containers they are inside and treat one that recurs
    like one too deep, at once: a value that refers to itself from several places would
    otherwise cost a walk of every path down to the limit, exponentially many.

    The rules are bound into one closure per walker, decided once when it is built, so the
    hot path (freezing an event's payload) tests no options per value and builds no error
    text unless it fails.
    """
    reject = leaves is Leaves.REJECT
    convert = leaves is Leaves.CONVERT
    deep = too_deep or _too_deep_default(leaves, error)
    mapping_type: Callable[[dict[str, Any]], Any] = MappingProxyType if freeze else dict
    sequence_type: Callable[[list[Any]], Any] = tuple if freeze else list
    plain = not redact and entry_rule is None

    def other(value: Any, where: str, depth: int) -> Any:
        """A value that is no str, int, bool, None, finite float, mapping or list."""
        kind = type(value)
        if kind is float:  # NaN or an infinity
            if reject:
                raise error(f"{where}: {value!r} is not a finite number (JSON has no NaN)")
            return repr(value) if convert else value
        if isinstance(value, bool):
            return bool(value)
        if isinstance(value, str):
            return str.__add__(value, "")
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else other(float(value), where, depth)
        if reject:
            raise error(
                f"{where}: a {kind.__name__} is not JSON data "
                "(use str, int, float, bool, None, list, tuple or dict with str keys)"
            )
        return repr(value) if convert else value

    def key_of(key: Any, where: str) -> str:
        """A mapping key that is not a plain str."""
        if isinstance(key, str):
            return str.__add__(key, "")
        if reject:
            raise error(f"{where}: key {key!r} is a {type(key).__name__}; JSON keys are strings")
        return str(key)

    def step(value: Any, where: str = "payload", depth: int = 0,
             inside: set[int] | None = None, rule: EntryRule | None = entry_rule) -> Any:
        """One value; ``inside``: ids of the enclosing containers (None: not tracked).
        Written as one function: it is the event hot path, every call level counts."""
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return value
        if kind is float and math.isfinite(value):
            return value
        if kind is dict or kind is MappingProxyType:
            is_mapping = True
        elif kind is list or kind is tuple:
            is_mapping = False
        elif isinstance(value, Mapping) and not isinstance(value, str):
            is_mapping = True
        elif isinstance(value, list | tuple):
            is_mapping = False
        else:
            return other(value, where, depth)
        if depth >= MAX_DEPTH:
            return deep(value, where)
        if inside is not None:  # a fresh set per level: nothing to undo on the way out
            identity = id(value)
            if identity in inside:
                return deep(value, where)
            inside = inside | {identity}
        inner = depth + 1
        if not is_mapping:
            # A loop, not a comprehension: one would make this function's locals cells,
            # a cost on every call.
            items: list[Any] = []
            for index, element in enumerate(value):
                items.append(step(element, f"{where}[{index}]" if reject else where, inner,
                                  inside, rule))
            return sequence_type(items)
        out: dict[str, Any] = {}
        if plain:  # the event hot path: the loop as lean as it gets
            for key, item in value.items():
                if type(key) is not str:
                    key = key_of(key, where)
                item_kind = type(item)
                if item_kind is str or item_kind is int or item_kind is bool or item is None:
                    # Most payload values: no recursion, no error-path string per item.
                    out[key] = item
                else:
                    out[key] = step(item, f"{where}.{key}" if reject else where, inner, inside,
                                    None)
            return mapping_type(out)
        for key, item in value.items():
            if type(key) is not str:
                key = key_of(key, where)
            if redact and is_secret_key(key):
                out[key] = REDACTED
                continue
            item_kind = type(item)
            if rule is None:
                if item_kind is str or item_kind is int or item_kind is bool or item is None:
                    out[key] = item
                else:
                    out[key] = step(item, f"{where}.{key}" if reject else where, inner,
                                    inside, None)
                continue
            ruled = rule(key, item)
            if ruled is not None:
                item, keep = ruled
                out[key] = step(item, where, inner, inside, rule if keep else None)
        return mapping_type(out)

    if reject:
        return step  # fails at the depth limit on a cycle: nothing to track

    def walk(value: Any, where: str = "payload", depth: int = 0, /) -> Any:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            return value
        return step(value, where, depth, set(), entry_rule)

    return walk
