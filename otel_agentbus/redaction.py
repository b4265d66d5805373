"""Secret-looking fields, replaced before anything the library builds leaves the caller.

The runtime, ``RunScope``, the decorators and the decision tracker put caller data (run
inputs and outputs, webhook bodies, tool arguments and results, decision context) into
event payloads and the tracker's SQLite file. Values under secret-looking keys
(``api_key``, ``authorization``, ``password``, ``*_token``, ``*_secret``, ...; see
:func:`otel_agentbus.payload.is_secret_key`) are replaced by ``"[redacted]"`` there, at
any depth. The caller's own objects are never changed: the agent still gets its input as
sent. Events an application builds itself are delivered as built; the telemetry mirror
redacts the same keys on export.
"""

from __future__ import annotations

from typing import Any, Final

from .payload import MAX_DEPTH as _MAX_DEPTH
from .payload import REDACTED, Leaves, is_secret_key, walker

__all__ = ["MAX_DEPTH", "REDACTED", "is_secret_key", "redact_secrets"]

MAX_DEPTH: Final = _MAX_DEPTH

_redact = walker(Leaves.KEEP, redact=True)


def redact_secrets(value: Any) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced, at any depth
    (mappings become dicts with str keys, lists and tuples lists; anything else is returned
    as is; a container nested deeper than ``MAX_DEPTH`` becomes ``"[too deep]"``)."""
    return _redact(value)
