"""The scopes instrumented code runs in: a tool call, an LLM call, a node loop and its
iterations. Each publishes its start event on entry and its end event on exit, and makes
its span the current OpenTelemetry span in between (``current_tool_call()`` and friends
give the code inside its handle)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Final, Self

from opentelemetry import context as otel_context
from opentelemetry.trace import NonRecordingSpan as _NonRecordingSpan
from opentelemetry.trace import set_span_in_context as _set_span_in_context

from ..bus import EventBus
from ..events import (
    EMPTY_SCOPE,
    Event,
    Scope,
    Severity,
    Source,
    _library_event,
    new_event_id,
)
from ..kinds import (
    LLM_DELTA,
    LLM_FAILED,
    LLM_REASONING_DELTA,
    LLM_REQUEST,
    LLM_RESPONSE,
    LLM_USAGE,
    NODE_LOOP_COMPLETED,
    NODE_LOOP_FAILED,
    NODE_LOOP_ITERATION,
    NODE_LOOP_STARTED,
    TOOL_CALL_COMPLETED,
    TOOL_CALL_STARTED,
)
from ..runs import _CURRENT_RUN, RunHandle, current_run, error_payload
from ..tracecontext import context_of
from .checks import _check_node, _check_str, _check_tool
from .defaults import _resolve_bus
from .values import _frozen_json, json_data

logger = logging.getLogger("otel_agentbus.instrument")

_CANCELLED: Final = (asyncio.CancelledError, GeneratorExit)
_new_object = object.__new__
_attach = otel_context.attach
_detach = otel_context.detach


def _error_payload(error: BaseException) -> dict[str, Any]:
    if isinstance(error, _CANCELLED):
        return {"error": "cancelled", "error_type": "cancelled"}
    return error_payload(error)


class _Scope:
    """Base of the context managers: publish the start on entry, attach its span, publish
    the end on exit. Usable with ``with`` and ``async with``; never suppresses errors."""

    _active: contextvars.ContextVar[Any]

    def __init__(self, bus: EventBus | None) -> None:
        self._explicit_bus = bus
        self.started: Event | None = None
        """The start event, stamped with the span's ids once published."""
        self.run: RunHandle | None = None
        self._bus: EventBus | None = None
        self._scope = EMPTY_SCOPE
        self._otel_token: object = None
        self._var_token: contextvars.Token[Any] | None = None

    # subclasses
    @property
    def _what(self) -> str:
        """Names the scope in errors and warnings (built only when one is raised)."""
        raise NotImplementedError

    def _node_id(self) -> str | None:
        loop = _CURRENT_NODE.get()
        return loop.node_id if loop is not None and loop.run is self.run else None

    def _start(self) -> Event:
        raise NotImplementedError

    def _finish(self, error: BaseException | None) -> None:
        raise NotImplementedError

    # shared
    def _emit(self, kind: str, payload: Mapping[str, Any], source: Source,
              severity: Severity = Severity.INFO, *, frozen: bool = False) -> Event:
        """Publish one of the scope's events. The kind, scope and source are the library's
        own, checked once (see ``_library_event``); ``frozen`` as there."""
        assert self._bus is not None
        event = _library_event(kind, payload, self._scope, source, severity, frozen=frozen)
        self._bus.publish_nowait(event)
        return event

    def _emit_guarded(self, kind: str, payload: Mapping[str, Any], source: Source,
                      severity: Severity = Severity.INFO, *, frozen: bool = False) -> None:
        """An end event must not replace the error the instrumented code raised."""
        try:
            self._emit(kind, payload, source, severity, frozen=frozen)
        except Exception:
            logger.warning("could not publish %s for %s", kind, self._what, exc_info=True)

    def _enter(self) -> None:
        if self.started is not None:
            raise RuntimeError(f"{self._what} was already entered; make a new one per use")
        run = self.run = _CURRENT_RUN.get()
        bus = self._explicit_bus
        if bus is None:
            bus = run.bus if run is not None else _resolve_bus(None, self._what)
        self._bus = bus
        node_id = self._node_id()
        if run is not None:
            self._scope = run.scope if node_id is None else run.child_scope(node_id)
        elif node_id is not None:
            self._scope = Scope(node_id=node_id)
        started = self.started = self._start()
        span_context = started._span_context  # stamped by the mirror, if one is attached
        self._otel_token = _attach(
            _set_span_in_context(_NonRecordingSpan(span_context))  # type: ignore[arg-type]
            if span_context is not None else context_of(started))
        self._var_token = self._active.set(self)

    def __enter__(self) -> Self:
        self._enter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._exit(error)

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._exit(error)

    def _exit(self, error: BaseException | None) -> None:
        try:
            self._finish(error)
        finally:
            if self._var_token is not None:
                self._active.reset(self._var_token)
                self._var_token = None
            if self._otel_token is not None:
                _detach(self._otel_token)  # type: ignore[arg-type]
                self._otel_token = None




class ToolCall(_Scope):
    """One tool call: ``agent.tool.call.started``, then ``completed`` with ``is_error``.

    Set ``result`` inside the block to record it (exported only with content capture on).
    """

    _active: contextvars.ContextVar[ToolCall | None]

    def __init__(self, name: str, *, arguments: Any = None, tool_type: str = "function",
                 tool_call_id: str | None = None, description: str | None = None,
                 bus: EventBus | None = None) -> None:
        _check_tool(name, tool_type, description)
        _check_str("tool_call_id", tool_call_id)
        self._setup(name, arguments, tool_type, tool_call_id, description, bus,
                    Source("tool", name), False)

    @property
    def _what(self) -> str:
        return f"tool {self.name!r}"

    @classmethod
    def _checked(cls, name: str, arguments: dict[str, Any], tool_type: str,
                 description: str | None, bus: EventBus | None, source: Source) -> ToolCall:
        """A call of an ``@tool`` function: its name, type and description were checked
        when it was decorated, and its arguments went through ``json_data`` already."""
        call = _new_object(cls)
        call._setup(name, arguments, tool_type, None, description, bus, source, True)
        return call

    def _setup(self, name: str, arguments: Any, tool_type: str, tool_call_id: str | None,
               description: str | None, bus: EventBus | None, source: Source,
               arguments_are_json: bool) -> None:
        _Scope.__init__(self, bus)
        self.name = name
        self.arguments = arguments
        self.tool_type = tool_type
        self.tool_call_id = tool_call_id or f"call-{new_event_id()}"
        self.description = description
        self.result: Any = None
        self.error: BaseException | None = None
        self._source = source
        self._arguments_are_json = arguments_are_json

    def _start(self) -> Event:
        # Every value is a str or frozen already: the event skips the payload check.
        payload: dict[str, Any] = {"tool_call_id": self.tool_call_id, "tool_name": self.name,
                                   "tool_type": self.tool_type}
        if self.arguments is not None:
            payload["arguments"] = _frozen_json(self.arguments, self._arguments_are_json)
        if self.description:
            payload["description"] = self.description
        return self._emit(TOOL_CALL_STARTED, payload, self._source, frozen=True)

    def _finish(self, error: BaseException | None) -> None:
        payload: dict[str, Any] = {"tool_call_id": self.tool_call_id, "tool_name": self.name}
        if error is None:
            payload["is_error"] = False
            if self.result is not None:
                payload["result"] = _frozen_json(self.result)
            self._emit_guarded(TOOL_CALL_COMPLETED, payload, self._source,
                               frozen=True)
        else:
            self.error = error
            payload["is_error"] = True
            payload.update(_error_payload(error))
            self._emit_guarded(TOOL_CALL_COMPLETED, payload, self._source,
                               Severity.ERROR, frozen=True)


class LLMCall(_Scope):
    """One LLM call: ``agent.llm.request``, then ``agent.llm.response`` or ``failed``.

    ``record_usage`` adds token counts and finish reasons to the response; ``delta`` reports
    a streamed chunk (counted by the mirror, never a span); set ``output`` to record the
    completion (exported only with content capture on).
    """

    _active: contextvars.ContextVar[LLMCall | None]

    def __init__(self, model: str | None = None, provider: str | None = None, *,
                 messages: Any = None, call_id: str | None = None,
                 bus: EventBus | None = None) -> None:
        _check_str("model", model)
        _check_str("provider", provider)
        _check_str("call_id", call_id)
        super().__init__(bus)
        self.model = model
        self.provider = provider
        self.messages = messages
        self.call_id = call_id or f"llm-{new_event_id()}"
        self.output: Any = None
        self.chunks = 0
        self.usage: dict[str, Any] = {}
        self.error: BaseException | None = None

    @property
    def _what(self) -> str:
        return f"LLM call to {self.model or 'unknown model'}"

    def _source(self) -> Source:
        return Source("llm", self.provider or self.model or "")

    def _start(self) -> Event:
        payload: dict[str, Any] = {"call_id": self.call_id}
        if self.model:
            payload["model"] = self.model
        if self.provider:
            payload["provider"] = self.provider
        if self.messages is not None:
            payload["messages"] = json_data(self.messages)
        return self._emit(LLM_REQUEST, payload, self._source())

    def record_usage(self, input_tokens: int | None = None, output_tokens: int | None = None,
                     finish_reasons: str | Iterable[str] | None = None, *,
                     cache_read_input_tokens: int | None = None,
                     reasoning_output_tokens: int | None = None,
                     response_model: str | None = None) -> None:
        """Token usage and finish reasons, published with the response (later calls add)."""
        for key, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens),
                           ("cache_read_input_tokens", cache_read_input_tokens),
                           ("reasoning_output_tokens", reasoning_output_tokens)):
            if value is not None:
                if type(value) is not int:
                    raise TypeError(f"{key} must be an int, got {value!r}")
                self.usage[key] = value
        if finish_reasons is not None:
            self.usage["finish_reasons"] = (
                [finish_reasons] if isinstance(finish_reasons, str) else
                [str(reason) for reason in finish_reasons])
        if response_model is not None:
            self.usage["response_model"] = response_model

    def delta(self, text: str) -> None:
        """One streamed chunk of text (``agent.llm.delta``; droppable under backpressure)."""
        self._chunk(LLM_DELTA, text)

    def reasoning_delta(self, text: str) -> None:
        """One streamed chunk of reasoning (``agent.llm.reasoning.delta``)."""
        self._chunk(LLM_REASONING_DELTA, text)

    def _chunk(self, kind: str, content: Any) -> None:
        if self.started is None:
            raise RuntimeError("delta() outside the LLM call: use it inside the block")
        self.chunks += 1
        payload: dict[str, Any] = {"call_id": self.call_id}
        if content is not None:
            payload["content"] = content if isinstance(content, str) else json_data(content)
        self._emit(kind, payload, self._source())

    def _finish(self, error: BaseException | None) -> None:
        base: dict[str, Any] = {"call_id": self.call_id}
        if self.model:
            base["model"] = self.model
        if error is None:
            payload = {**base, **self.usage}
            if self.output is not None:
                payload["content"] = json_data(self.output)
            self._emit_guarded(LLM_RESPONSE, payload, self._source())
            return
        self.error = error
        if self.usage:
            self._emit_guarded(LLM_USAGE, {**base, **self.usage}, self._source())
        self._emit_guarded(LLM_FAILED, {**base, **_error_payload(error)},
                           self._source(), Severity.ERROR)



class NodeLoop(_Scope):
    """A graph node's loop: ``agent.node.loop.started``, ``iteration`` per
    :meth:`iteration`, then ``completed`` (with the count) or ``failed``."""

    _active: contextvars.ContextVar[NodeLoop | None]

    def __init__(self, node_id: str, max_iterations: int | None = None, *,
                 bus: EventBus | None = None) -> None:
        _check_node(node_id, max_iterations)
        super().__init__(bus)
        self.node_id = node_id
        self.max_iterations = max_iterations
        self.iterations = 0
        self.active = False

    @property
    def _what(self) -> str:
        return f"node {self.node_id!r}"

    def _node_id(self) -> str | None:
        return self.node_id

    def _start(self) -> Event:
        payload = {} if self.max_iterations is None else {"max_iterations": self.max_iterations}
        event = self._emit(NODE_LOOP_STARTED, payload, Source("node", self.node_id))
        self.active = True
        return event

    def _finish(self, error: BaseException | None) -> None:
        self.active = False
        if error is None:
            self._emit_guarded(NODE_LOOP_COMPLETED, {"iterations": self.iterations},
                               Source("node", self.node_id))
        else:
            self._emit_guarded(NODE_LOOP_FAILED,
                               {"iterations": self.iterations, **_error_payload(error)},
                               Source("node", self.node_id), Severity.ERROR)

    def iteration(self) -> NodeIteration:
        """The next iteration: ``with loop.iteration(): ...`` (its span is current inside)."""
        return NodeIteration(self)


_CURRENT_NODE: contextvars.ContextVar[NodeLoop | None] = contextvars.ContextVar(
    "otel_agentbus_current_node", default=None)
NodeLoop._active = _CURRENT_NODE


class NodeIteration:
    """One iteration of a :class:`NodeLoop` (``agent.node.loop.iteration``); the mirror
    ends its span when the next iteration starts or the loop ends."""

    def __init__(self, loop: NodeLoop) -> None:
        self.loop = loop
        self.number = 0
        self.started: Event | None = None
        self._otel_token: object = None

    def __enter__(self) -> NodeIteration:
        loop = self.loop
        if not loop.active:
            raise RuntimeError(f"node {loop.node_id!r}: iteration() outside its node_loop")
        if self.started is not None:
            raise RuntimeError("an iteration is entered once; call loop.iteration() again")
        loop.iterations += 1
        self.number = loop.iterations
        payload: dict[str, Any] = {"iteration": self.number}
        if loop.max_iterations is not None:
            payload["max_iterations"] = loop.max_iterations
        self.started = loop._emit(NODE_LOOP_ITERATION, payload,
                                  Source("node", loop.node_id))
        self._otel_token = otel_context.attach(context_of(self.started))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._otel_token is not None:
            otel_context.detach(self._otel_token)  # type: ignore[arg-type]
            self._otel_token = None

    async def __aenter__(self) -> NodeIteration:
        return self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(kind, error, tb)


_CURRENT_TOOL: contextvars.ContextVar[ToolCall | None] = contextvars.ContextVar(
    "otel_agentbus_current_tool", default=None)
_CURRENT_LLM: contextvars.ContextVar[LLMCall | None] = contextvars.ContextVar(
    "otel_agentbus_current_llm", default=None)
ToolCall._active = _CURRENT_TOOL
LLMCall._active = _CURRENT_LLM


def current_tool_call() -> ToolCall | None:
    """The tool call the calling code runs in (set its ``result``, read its id)."""
    return _CURRENT_TOOL.get()


def current_llm_call() -> LLMCall | None:
    """The LLM call the calling code runs in: ``current_llm_call().record_usage(...)``."""
    return _CURRENT_LLM.get()


def current_node_loop() -> NodeLoop | None:
    """The node loop the calling code runs in, if it belongs to the current run."""
    loop = _CURRENT_NODE.get()
    return loop if loop is not None and loop.run is current_run() else None


def iteration() -> NodeIteration:
    """The next iteration of the current node loop (``with iteration(): ...``)."""
    loop = current_node_loop()
    if loop is None or not loop.active:
        raise RuntimeError("iteration() outside any node_loop(): open one first")
    return loop.iteration()


class _NodeCall:
    """A call of an ``@node`` function: one iteration of the enclosing loop of the same
    node in the same run, else a loop of its own with one iteration."""

    def __init__(self, node_id: str, max_iterations: int | None, bus: EventBus | None) -> None:
        self._node_id = node_id
        self._max_iterations = max_iterations
        self._bus = bus
        self._stack = ExitStack()

    def __enter__(self) -> NodeLoop:
        loop = current_node_loop()
        if loop is None or loop.node_id != self._node_id or not loop.active:
            loop = self._stack.enter_context(
                NodeLoop(self._node_id, self._max_iterations, bus=self._bus))
        try:
            self._stack.enter_context(loop.iteration())
        except BaseException as error:
            self._stack.__exit__(type(error), error, error.__traceback__)
            raise
        return loop

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stack.__exit__(kind, error, tb)
