"""Instrument existing agents without rewriting them: decorators and context managers.

``@agent`` makes a function one run (through :class:`~otel_agentbus.runs.RunScope`),
``@node`` a graph-node loop or one iteration of it, ``@llm_call`` an LLM call and ``@tool``
a tool call. Each has a context-manager twin (``agent_run``, ``node_loop``,
``llm_call_scope``, ``tool_call``) for code that is not shaped as one function. They work
on sync and async functions, generators and async generators, publish the lifecycle
events the telemetry mirror turns into spans, and make that span the current
OpenTelemetry span while the code runs, so spans other instrumentation starts inside
become its children.

The package's modules, one job each:

- ``defaults``: the default bus and :class:`NoBusError`;
- ``checks``: checks of names and limits, when a decorator or scope is built;
- ``values``: arguments, results and messages as frozen JSON payload values;
- ``arguments``: a call's arguments bound to the function's signature;
- ``scopes``: :class:`ToolCall`, :class:`LLMCall`, :class:`NodeLoop`,
  :class:`NodeIteration` and the ``current_*`` accessors;
- ``managers``: the context managers;
- ``wrapping``: running each call of a sync/async function or generator in a scope;
- ``decorators``: ``@agent``, ``@node``, ``@llm_call``, ``@tool``.
"""

from __future__ import annotations

from ..recording import NoScopeError, decision, outcome, problem
from .arguments import _Arguments as _Arguments  # tests use it
from .decorators import agent, llm_call, node, tool
from .defaults import NoBusError, get_default_bus, set_default_bus
from .managers import agent_run, llm_call_scope, node_loop, tool_call
from .scopes import (
    LLMCall,
    NodeIteration,
    NodeLoop,
    ToolCall,
    current_llm_call,
    current_node_loop,
    current_tool_call,
    iteration,
)
from .values import json_data

__all__ = [
    "LLMCall",
    "NoBusError",
    "NoScopeError",
    "NodeIteration",
    "NodeLoop",
    "ToolCall",
    "agent",
    "agent_run",
    "current_llm_call",
    "current_node_loop",
    "current_tool_call",
    "decision",
    "get_default_bus",
    "iteration",
    "json_data",
    "llm_call",
    "llm_call_scope",
    "node",
    "node_loop",
    "outcome",
    "problem",
    "set_default_bus",
    "tool",
    "tool_call",
]
