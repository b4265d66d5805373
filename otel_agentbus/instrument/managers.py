"""The context-manager forms: ``with agent_run(...)``, ``node_loop``, ``llm_call_scope``
and ``tool_call`` (also with ``async with``), for code that is not shaped as one
function."""

from __future__ import annotations

from typing import Any

from ..bus import EventBus
from ..runs import RunScope
from .defaults import _resolve_bus
from .scopes import LLMCall, NodeLoop, ToolCall
from .values import json_data


def agent_run(name: str, *, bus: EventBus | None = None, session_id: str | None = None,
              run_id: str | None = None, input: Any = None, stream_id: str | None = None,
              graph_id: str | None = None, traceparent: str | None = None,
              correlation_id: str | None = None) -> RunScope:
    """``with agent_run("planner") as run:`` (or ``async with``): one run of an agent.

    The bus is ``bus=``, else the enclosing run's, else :func:`set_default_bus`'s. A run
    inside another run is a sub-agent: it keeps the conversation (``session_id``).
    """
    return RunScope(_resolve_bus(bus, f"agent {name!r}"), name, run_id=run_id,
                    session_id=session_id, stream_id=stream_id, graph_id=graph_id,
                    input=None if input is None else json_data(input),
                    traceparent=traceparent, correlation_id=correlation_id)


def node_loop(node_id: str, max_iterations: int | None = None, *,
              bus: EventBus | None = None) -> NodeLoop:
    """``with node_loop("plan", max_iterations=5) as loop:`` then ``with loop.iteration():``."""
    return NodeLoop(node_id, max_iterations, bus=bus)


def llm_call_scope(model: str | None = None, provider: str | None = None, *,
                   messages: Any = None, call_id: str | None = None,
                   bus: EventBus | None = None) -> LLMCall:
    """``with llm_call_scope("gpt-4o", "openai") as call:`` around one LLM request."""
    return LLMCall(model, provider, messages=messages, call_id=call_id, bus=bus)


def tool_call(name: str, *, arguments: Any = None, tool_type: str = "function",
              tool_call_id: str | None = None, description: str | None = None,
              bus: EventBus | None = None) -> ToolCall:
    """``with tool_call("search", arguments={...}) as call:`` then ``call.result = ...``."""
    return ToolCall(name, arguments=arguments, tool_type=tool_type, tool_call_id=tool_call_id,
                    description=description, bus=bus)
