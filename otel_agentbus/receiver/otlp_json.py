"""OTLP/JSON decoding and encoding.

OTLP/JSON is the protobuf JSON mapping with one twist: trace and span ids are
hex strings, not base64. We rewrite those fields to base64 and let
``json_format`` do the rest (it already accepts int64 as strings, enums as
ints or names, and both camelCase and snake_case field names).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import Message  # type: ignore[import-untyped]

from .convert import MalformedRequest
from .ingest import Signal
from .limits import DEFAULT_LIMITS, LimitExceeded

_ID_FIELDS: Final = frozenset(
    {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}
)


def _hex_to_base64(value: str, field: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise MalformedRequest(f"{field} must be a hex string, got {value[:40]!r}") from None
    return base64.b64encode(raw).decode("ascii")


def _rewrite_ids(node: Any) -> None:
    """Convert hex id fields in place, anywhere in the document.

    Only message field names appear as JSON object keys in OTLP (user data
    lives in ``{"key": ..., "value": ...}`` pairs), so matching by key is safe.
    """
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in _ID_FIELDS and isinstance(value, str):
                    item[key] = _hex_to_base64(value, key)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))


def structural_bound(data: bytes) -> int:
    """An upper bound, counted at C speed, on the objects, arrays and items a JSON document
    holds: every one needs a ``{``, a ``[`` or a ``,``."""
    return data.count(b"{") + data.count(b"[") + data.count(b",")


def parse_json(signal: Signal, data: bytes, max_nodes: int = DEFAULT_LIMITS.max_json_nodes
               ) -> Message:
    """Decode an OTLP/JSON export request body.

    ``json.loads`` builds every object before we see any: a document that could hold more
    than ``max_nodes`` of them is refused with :class:`LimitExceeded` before it is parsed
    (batches that large go as binary protobuf, which is decoded under the same limits).
    """
    if structural_bound(data) > max_nodes:
        raise LimitExceeded(
            f"OTLP/JSON body has more than {max_nodes} objects, arrays and items; "
            "send large batches as application/x-protobuf"
        )
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedRequest("OTLP/JSON body must be a JSON object")
    _rewrite_ids(document)
    message = signal.request_type()
    try:
        # OTLP/JSON receivers must ignore unknown fields (forward compatibility).
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise MalformedRequest(f"invalid OTLP/JSON {signal.name.lower()} request: {exc}") from None
    return message


def to_json(message: Message) -> bytes:
    """Encode a response (no id fields there, so the plain mapping is OTLP/JSON)."""
    text: str = json_format.MessageToJson(message, indent=None)
    return text.encode("utf-8")
