"""The decorators: ``@agent``, ``@node``, ``@llm_call`` and ``@tool`` make each call of a
function a run, a node iteration, an LLM call or a tool call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, overload

from ..bus import EventBus
from ..events import Source
from ..kinds import (
    LLM_DELTA,
)
from ..runs import RunHandle, RunScope
from .arguments import _Arguments
from .checks import _check_node, _check_tool
from .managers import agent_run
from .scopes import LLMCall, ToolCall, _NodeCall
from .values import _is_plain_json, json_data
from .wrapping import F, _wrap


def _name_of(function: Callable[..., Any]) -> str:
    return getattr(function, "__name__", None) or type(function).__name__


def _first_line(text: str | None) -> str | None:
    if not text:
        return None
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return None


@overload
def agent(name: F, /) -> F: ...
@overload
def agent(name: str | None = None, *, bus: EventBus | None = None,
          session_id: str | None = None) -> Callable[[F], F]: ...
def agent(name: str | Callable[..., Any] | None = None, *, bus: EventBus | None = None,
          session_id: str | None = None) -> Any:
    """Each call of the decorated function is one run of agent ``name`` (default: the
    function's name): its arguments are the run's input, its return value the output."""
    if callable(name):
        return agent()(name)

    def decorate(function: F) -> F:
        agent_name = name or _name_of(function)
        arguments = _Arguments(function)

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunScope:
            return agent_run(agent_name, bus=bus, session_id=session_id,
                             input=arguments(args, kwargs))

        def done(handle: RunHandle, result: Any) -> None:
            if result is not None:
                handle.output = json_data(result)

        return _wrap(function, make, done)

    return decorate


@overload
def node(node_id: F, /) -> F: ...
@overload
def node(node_id: str | None = None, max_iterations: int | None = None, *,
         bus: EventBus | None = None) -> Callable[[F], F]: ...
def node(node_id: str | Callable[..., Any] | None = None, max_iterations: int | None = None,
         *, bus: EventBus | None = None) -> Any:
    """Each call of the decorated function is one iteration of node ``node_id`` (default:
    the function's name): of the enclosing ``node_loop`` of that node, else of a loop of
    its own."""
    if callable(node_id):
        return node()(node_id)
    _check_node(node_id or "node", max_iterations)  # now, not at the first call

    def decorate(function: F) -> F:
        the_id = node_id or _name_of(function)

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _NodeCall:
            return _NodeCall(the_id, max_iterations, bus)

        return _wrap(function, make, _ignore)

    return decorate


def _ignore(handle: Any, result: Any) -> None:
    return None


@overload
def llm_call(model: F, /) -> F: ...
@overload
def llm_call(model: str | None = None, provider: str | None = None, *,
             bus: EventBus | None = None) -> Callable[[F], F]: ...
def llm_call(model: str | Callable[..., Any] | None = None, provider: str | None = None, *,
             bus: EventBus | None = None) -> Any:
    """Each call of the decorated function is one LLM call.

    Without ``model=``, a ``model`` argument of the call names it; a ``messages`` argument
    becomes the request's messages. A str (or JSON) return value is the completion. In
    the function, ``current_llm_call().record_usage(...)`` reports tokens; a generator's
    or async generator's every yielded chunk is one ``agent.llm.delta``.
    """
    if callable(model):
        return llm_call()(model)

    def decorate(function: F) -> F:
        arguments = _Arguments(function)

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> LLMCall:
            called_model = model or arguments.value("model", args, kwargs)
            return LLMCall(called_model if isinstance(called_model, str) else None, provider,
                           messages=arguments.value("messages", args, kwargs), bus=bus)

        def done(call: LLMCall, result: Any) -> None:
            if result is not None and call.output is None and _is_plain_json(result):
                call.output = result

        def chunk(call: LLMCall, value: Any) -> None:
            call._chunk(LLM_DELTA, value if isinstance(value, str) else None)

        return _wrap(function, make, done, chunk)

    return decorate


@overload
def tool(name: F, /) -> F: ...
@overload
def tool(name: str | None = None, tool_type: str = "function", *,
         description: str | None = None, bus: EventBus | None = None) -> Callable[[F], F]: ...
def tool(name: str | Callable[..., Any] | None = None, tool_type: str = "function", *,
         description: str | None = None, bus: EventBus | None = None) -> Any:
    """Each call of the decorated function is one tool call (``name`` defaults to the
    function's name, the description to its docstring's first line); its arguments and
    return value are the call's arguments and result."""
    if callable(name):
        return tool()(name)

    def decorate(function: F) -> F:
        tool_name = name or _name_of(function)
        arguments = _Arguments(function)
        summary = description or _first_line(function.__doc__)
        _check_tool(tool_name, tool_type, summary)  # now, not at the first call

        checked = ToolCall._checked
        source = Source("tool", tool_name)

        def make(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolCall:
            return checked(tool_name, arguments(args, kwargs), tool_type, summary, bus, source)

        def done(call: ToolCall, result: Any) -> None:
            if result is not None and call.result is None:
                call.result = result

        return _wrap(function, make, done)

    return decorate
