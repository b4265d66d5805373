"""An execution's session, as the runtime writes it under ``storage_path/sessions/``:
what it was given, where it is, what it left behind; and the state a resumed one starts
from. A failed or cancelled execution's session is *paused* at the node it was in, so
``trigger(..., session_state=session["session_state"])`` continues there."""

from __future__ import annotations

import time
from typing import Any, Final

from ...runtime.execution import ExecutionResult

RESUME_AT: Final = "__hive_paused_at__"
"""Where a resumed execution starts (from ``session_state["paused_at"]``); taken out of
the state before any node sees it."""


def initial_state(input_data: Any, session_state: dict[str, Any] | None) -> dict[str, Any]:
    """The session's ``memory`` plus the input (Hive writes the input into memory)."""
    state: dict[str, Any] = {}
    if session_state:
        memory = session_state.get("memory")
        state.update(memory if isinstance(memory, dict) else {})
        paused_at = session_state.get("paused_at")
        if isinstance(paused_at, str) and paused_at:
            state[RESUME_AT] = paused_at
    if isinstance(input_data, dict):
        state.update(input_data)
    return state


def session_record(execution_id: str, entry_point_id: str, goal_id: str, status: str,
                   input_data: Any, memory: dict[str, Any], correlation_id: str | None,
                   result: ExecutionResult | None = None) -> dict[str, Any]:
    """The JSON-ready session of one execution (its id is the session id)."""
    session: dict[str, Any] = {
        "session_id": execution_id, "execution_id": execution_id,
        "entry_point": entry_point_id, "goal_id": goal_id, "status": status,
        "input_data": input_data, "correlation_id": correlation_id,
        "updated_at": time.time(),
        "session_state": {"memory": {k: v for k, v in memory.items() if k != RESUME_AT},
                          "paused_at": None},
    }
    if result is not None:
        last = result.path[-1] if result.path else None
        session["session_state"]["paused_at"] = None if result.success else last
        session["result"] = {
            "success": result.success, "status": result.status, "output": result.output,
            "error": result.error, "error_type": result.error_type,
            "path": list(result.path), "started_at": result.started_at,
            "ended_at": result.ended_at}
    return session
