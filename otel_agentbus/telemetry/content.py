"""What of an event may leave the process, and in what shape.

Prompts, completions, tool arguments and results stay in-process unless the user opts in
with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` (the Python GenAI
instrumentations' switch). Everything exported is converted to OpenTelemetry attribute
types and truncated: the mirror builds spans itself, so the SDK's limits are applied here.
"""

from __future__ import annotations

import enum
import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry.util.types import AttributeValue

# The secret-key rule is core's (``otel_agentbus.payload``); re-exported here for callers
# that import it from this module.
from ..payload import REDACTED as REDACTED
from ..payload import SECRET_KEYS as SECRET_KEYS
from ..payload import Leaves, Walk, walker
from ..payload import is_secret_key as is_secret_key

CAPTURE_ENV: Final = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
LENGTH_ENV: Final = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
COUNT_ENV: Final = "OTEL_ATTRIBUTE_COUNT_LIMIT"
EVENTS_ENV: Final = "OTEL_SPAN_EVENT_COUNT_LIMIT"

DEFAULT_MAX_LENGTH: Final = 8192
"""The SDK has no default length limit; huge payloads then fail export (HTTP 413) or freeze
UIs, so the project sets one. ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`` overrides it."""
DEFAULT_MAX_ATTRIBUTES: Final = 128
DEFAULT_MAX_EVENTS_PER_SPAN: Final = 128
TRUNCATION_MARK: Final = "…[truncated]"
MAX_ARRAY_ITEMS: Final = 128
"""Longer lists are exported as JSON text, cut to the length limit like any other string
(each string of a shorter list is cut to the limit)."""

CONTENT_KEYS: Final = frozenset({
    "arguments", "content", "completion", "context", "details", "input", "input_data",
    "messages",
    "output", "output_data",
    "prompt", "reasoning_content", "response", "result", "snapshot", "system_instructions",
    "text", "tool_input", "tool_output", "tool_result",
})
"""Payload keys that hold conversation content: exported only when capture is on."""



class CaptureMode(enum.StrEnum):
    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"


Redactor = Callable[[str, Any], Any]
"""``redact(key, value) -> value``: called on every content value before export."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must be >= 0")
    return value


def capture_mode_from_env() -> CaptureMode:
    raw = os.environ.get(CAPTURE_ENV, "").strip()
    if not raw:
        return CaptureMode.NO_CONTENT
    upper = raw.upper()
    if upper in ("TRUE", "1"):
        return CaptureMode.SPAN_AND_EVENT
    if upper in ("FALSE", "0"):
        return CaptureMode.NO_CONTENT
    try:
        return CaptureMode(upper)
    except ValueError:
        raise ValueError(
            f"{CAPTURE_ENV}={raw!r}: expected one of {[m.value for m in CaptureMode]}"
        ) from None


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    """Limits and content rules applied to every exported attribute."""

    capture: CaptureMode = CaptureMode.NO_CONTENT
    max_length: int = DEFAULT_MAX_LENGTH
    max_attributes: int = DEFAULT_MAX_ATTRIBUTES
    max_events_per_span: int = DEFAULT_MAX_EVENTS_PER_SPAN
    redact: Redactor | None = None
    content_keys: frozenset[str] = field(default=CONTENT_KEYS)

    @classmethod
    def from_env(cls, redact: Redactor | None = None) -> ContentPolicy:
        return cls(
            capture=capture_mode_from_env(),
            max_length=_env_int(LENGTH_ENV, DEFAULT_MAX_LENGTH) or DEFAULT_MAX_LENGTH,
            max_attributes=_env_int(COUNT_ENV, DEFAULT_MAX_ATTRIBUTES),
            max_events_per_span=max(1, _env_int(EVENTS_ENV, DEFAULT_MAX_EVENTS_PER_SPAN)),
            redact=redact,
        )

    @property
    def content_on_spans(self) -> bool:
        return self.capture in (CaptureMode.SPAN_ONLY, CaptureMode.SPAN_AND_EVENT)

    def content_value(self, key: str, value: Any) -> AttributeValue | None:
        """The exportable form of a content value, or None when capture is off."""
        if not self.content_on_spans:
            return None
        if self.redact is not None:
            value = self.redact(key, value)
            if value is None:
                return None
        return self.value(value, in_content=True)

    def value(self, value: Any, in_content: bool = False) -> AttributeValue:
        """Any JSON value as an attribute value: scalars as they are, the rest as JSON.

        Nested values are scrubbed on the way: secret-looking keys at any depth become
        ``[redacted]``, and content keys nested in ordinary data follow the capture switch.
        """
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is bool or kind is int or kind is float:
            return value  # type: ignore[no-any-return]
        if (kind is tuple or kind is list) and 0 < len(value) <= MAX_ARRAY_ITEMS:
            if all(type(item) is str for item in value):
                return [self.text(item) for item in value]
            if all(type(item) in (int, float) for item in value):
                return list(value)
        scrubbed = (_redact_secrets if in_content else _scrubber(self))(value)
        return self.text(json.dumps(scrubbed, ensure_ascii=False, default=str))

    def text(self, value: str) -> str:
        """``value`` cut to the length limit, lone surrogates replaced by ``?`` (the OTLP
        encoder cannot encode them and would fail the whole batch)."""
        limit = self.max_length
        if len(value) > limit:
            value = value[: max(0, limit - len(TRUNCATION_MARK))] + TRUNCATION_MARK
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                value = value.encode("utf-8", "replace").decode("utf-8")
        return value

    def payload_attributes(
        self, payload: Mapping[str, Any], prefix: str, skip: frozenset[str] = frozenset()
    ) -> dict[str, AttributeValue]:
        """A payload as span-event attributes: content only when captured, secrets never."""
        out: dict[str, AttributeValue] = {}
        for key, item in payload.items():
            if key in skip or item is None:
                continue
            if len(out) >= self.max_attributes:
                break
            name = self.text(prefix + key)  # keys are unbounded too
            if is_secret_key(key):
                out[name] = REDACTED
            elif key in self.content_keys:
                captured = self.content_value(key, item)
                if captured is not None:
                    out[name] = captured
            else:
                out[name] = self.value(item)
        return out


def _scrubber(policy: ContentPolicy) -> Walk:
    """The scrubbing walker for ``policy``, built once per policy (a policy whose redactor
    cannot be hashed gets a new one per call)."""
    try:
        return _cached_scrubber(policy)
    except TypeError:
        return _build_scrubber(policy)


def _build_scrubber(policy: ContentPolicy) -> Walk:
    """The walker that scrubs data for export under ``policy``: secrets at any depth
    become ``[redacted]``; content keys nested in ordinary data follow the capture switch
    and the policy's redactor (below one, only the secret-key rule applies)."""

    def entry(key: str, item: Any) -> tuple[Any, bool] | None:
        if key not in policy.content_keys:
            return item, True
        if not policy.content_on_spans:
            return None
        if policy.redact is not None:
            item = policy.redact(key, item)
            if item is None:
                return None
        return item, False

    return walker(Leaves.KEEP, redact=True, entry_rule=entry)


_cached_scrubber = functools.lru_cache(maxsize=64)(_build_scrubber)
_redact_secrets = walker(Leaves.KEEP, redact=True)
"""Inside content: only the secret-key rule applies."""
