"""Arguments, results and messages as event payload values.

All of them go through the package's one walker (:mod:`otel_agentbus.payload`): anything
that is not JSON data becomes its ``repr``, secret-looking keys ``"[redacted]"``, and
what is published is frozen in the same pass.
"""

from __future__ import annotations

from typing import Any, Final

from ..events import JSONValue, _freeze
from ..payload import Leaves, walker

_to_json: Final = walker(Leaves.CONVERT, redact=True)
_to_frozen_json: Final = walker(Leaves.CONVERT, redact=True, freeze=True)
_check_json: Final = walker(Leaves.REJECT)

_NO_ARGUMENTS: Final = _freeze({}, "payload", 0)
"""The frozen ``{}`` every call without arguments shares."""


def json_data(value: Any) -> Any:
    """``value`` as plain JSON data (str keys, lists, finite numbers); anything else as its
    ``repr``, so arbitrary arguments and results can go into an event payload. The values
    of secret-looking keys (``api_key``, ``*_token``, ...) become ``"[redacted]"``; a
    container nested deeper than :data:`otel_agentbus.payload.MAX_DEPTH` (a cycle, say)
    its ``repr``."""
    return _to_json(value)


def _frozen_json(value: Any, converted: bool = False) -> JSONValue:
    """:func:`json_data` of ``value`` (unless ``converted`` says it is that already), frozen
    as an event payload value, in one pass. It cannot fail: anything nested deeper than the
    limit becomes text. An empty dict is the shared frozen one."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is dict and not value:
        return _NO_ARGUMENTS
    if converted:
        return _freeze(value, "payload", 0)
    return _to_frozen_json(value)


def _is_plain_json(value: Any) -> bool:
    """True when ``value`` is JSON data already (no ``repr`` needed to publish it)."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return True
    try:
        _check_json(value)
    except ValueError:
        return False
    return True
