"""Secret-looking fields, replaced before anything the library builds leaves the caller.

The runtime, ``RunScope``, the decorators and the decision tracker put caller data (run
inputs and outputs, webhook bodies, tool arguments and results, decision context) into
event payloads and the tracker's SQLite file. Values under secret-looking keys
(``api_key``, ``authorization``, ``password``, ``*_token``, ``*_secret``, ...; see
:func:`otel_agentbus.telemetry.content.is_secret_key`) are replaced by ``"[redacted]"``
there, at any depth. The caller's own objects are never changed: the agent still gets its
input as sent. Events an application builds itself are delivered as built; the telemetry
mirror redacts the same keys on export.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .telemetry.content import REDACTED, is_secret_key

MAX_DEPTH: Final = 64


def redact_secrets(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced, at any depth
    (mappings become dicts, lists and tuples lists; anything else is returned as is)."""
    if _depth > MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {key: REDACTED if isinstance(key, str) and is_secret_key(key)
                else redact_secrets(item, _depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_secrets(item, _depth + 1) for item in value]
    return value
