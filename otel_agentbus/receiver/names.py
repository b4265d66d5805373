"""Attribute names the receiver's queries interpret (shared with the converter)."""

from __future__ import annotations

from typing import Final

PENDING_ATTRIBUTE: Final = "agentbus.span.pending"
"""Marks a placeholder record sent while a span is still open."""
OPERATION_ATTRIBUTE: Final = "gen_ai.operation.name"
AGENT_ATTRIBUTE: Final = "gen_ai.agent.name"
RUN_ID_ATTRIBUTE: Final = "agentbus.run.id"
RUN_STATUS_ATTRIBUTE: Final = "agentbus.run.status"
INVOKE_AGENT: Final = "invoke_agent"


def is_truthy(value: object) -> bool:
    """Attribute truthiness that accepts bools, 1 and "true" (some SDKs send strings)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in ("true", "1", "yes")
