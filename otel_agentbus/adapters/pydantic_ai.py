"""pydantic-ai adapter: a capability that turns every agent run into bus events.

``install()`` adds :class:`AgentBusCapability` to every run of every ``Agent`` (it wraps
``Agent.iter``, through which ``run``, ``run_sync`` and ``run_stream`` go), so no agent code
changes. Through pydantic-ai's capabilities API it wraps

* the run: ``agent.run.started`` … ``completed`` / ``failed`` / ``cancelled``
  (``invoke_agent {agent name}``, pydantic-ai's conversation id as ``gen_ai.conversation.id``);
* each model request: ``agent.llm.request`` / ``response`` (``chat {model}``) with provider,
  token usage, finish reason and response model;
* each tool execution: ``agent.tool.call.started`` / ``completed`` (``execute_tool {tool}``).

The run's, the call's and the tool's spans are the current OpenTelemetry span inside them,
so a span a tool or an HTTP client opens joins the run's trace, and code inside a tool sees
the run as ``otel_agentbus.runs.current_run()``; an agent run inside a tool is a child run.

**pydantic-ai's own OpenTelemetry instrumentation** (``Agent.instrument_all()``,
``agent.instrument = ...``, an ``Instrumentation`` capability) exports these same operations
as GenAI spans. The adapter detects it per run (the run's tracer is a real one) and then
de-duplicates rather than warns: it still publishes every event, so subscribers, the decision
tracker and the metrics see the run, but marks the events bridged, so the mirror builds no
spans of its own; the events carry pydantic-ai's span ids. De-duplicating keeps both the
in-process events and a single copy of each span, where a warning would leave the user to
choose between them.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any, Final

from opentelemetry.trace import NoOpTracer

from ..bus import EventBus
from ..events import Scope, new_event_id
from ..instrument import LLMCall, ToolCall
from ..runs import _CURRENT_RUN, RunHandle, RunScope
from ._common import FaultCounter, require
from ._instrumentor import BaseInstrumentor, bus_for_instrumentor, resolve_bus
from ._publish import CANCELLATIONS, COVERED_SCOPES, EventWriter

EXTRA: Final = "pydantic-ai"
DISTRIBUTION: Final = "pydantic-ai-slim"
SUPPORTED: Final = (">=2.68.0", "<2.69")
NATIVE_SCOPE: Final = "pydantic-ai"
"""The instrumentation scope of pydantic-ai's own spans (the GenAI bridge leaves them to us)."""

_BRIDGED_RUN: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "otel_agentbus_pydantic_ai_bridged_run", default=None)
"""The scope of the current run when pydantic-ai instruments it itself (events bridged)."""


def _require_framework() -> Any:
    return require("pydantic_ai", distribution=DISTRIBUTION, extra=EXTRA,
                   minimum=SUPPORTED[0][2:], below=SUPPORTED[1][1:])


def _natively_instrumented(ctx: Any) -> bool:
    """pydantic-ai gives a run a real tracer only when its own instrumentation is on."""
    tracer = getattr(ctx, "tracer", None)
    return tracer is not None and not isinstance(tracer, NoOpTracer)


def _usage_of(response: Any) -> dict[str, Any]:
    usage = getattr(response, "usage", None)
    found: dict[str, Any] = {}
    for key, attribute in (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens"),
                           ("cache_read_input_tokens", "cache_read_tokens"),
                           ("reasoning_output_tokens", "output_reasoning_tokens")):
        value = getattr(usage, attribute, None)
        if type(value) is int and (value or key in ("input_tokens", "output_tokens")):
            found[key] = value
    if getattr(response, "finish_reason", None):
        found["finish_reasons"] = [str(response.finish_reason)]
    if getattr(response, "model_name", None):
        found["response_model"] = str(response.model_name)
    return found


def _enter(faults: FaultCounter, scope: Any) -> Any:
    """Enter one of our scopes; on a fault, count it and go on without it."""
    try:
        scope.__enter__()
    except Exception as error:
        faults.record(error)
        return None
    return scope


def _leave(faults: FaultCounter, scope: Any, error: BaseException | None) -> None:
    if scope is None:
        return
    try:
        scope.__exit__(type(error) if error is not None else None, error, None)
    except Exception as fault:
        faults.record(fault)


def _make_capability_class() -> type[Any]:
    """The capability class, built once the framework is known to be importable."""
    from pydantic_ai.capabilities import AbstractCapability

    class AgentBusCapability(AbstractCapability[Any]):
        """Runs, model requests and tool executions as bus events (see the module)."""

        def __init__(self, bus: EventBus, faults: FaultCounter) -> None:
            self.bus = bus
            self.faults = faults
            self._writer = EventWriter(bus, faults, bridged=True)

        async def wrap_run(self, ctx: Any, *, handler: Any) -> Any:
            agent = getattr(getattr(ctx, "agent", None), "name", None) or "agent"
            session = getattr(ctx, "conversation_id", None)
            if _natively_instrumented(ctx):
                return await self._bridged_run(ctx, handler, agent, session)
            run = _enter(self.faults, RunScope(self.bus, agent, session_id=session,
                                               input=_prompt(ctx)))
            try:
                result = await handler()
            except BaseException as error:
                _leave(self.faults, run, error)
                raise
            if run is not None:
                run.handle.output = getattr(result, "output", None)
            _leave(self.faults, run, None)
            return result

        async def _bridged_run(self, ctx: Any, handler: Any, agent: str,
                               session: str | None) -> Any:
            scope = Scope(run_id=f"run-{new_event_id()}", agent=agent, session_id=session)
            self._writer.run_started(scope, input=_prompt(ctx))
            token = _BRIDGED_RUN.set(scope)
            run_token = _CURRENT_RUN.set(RunHandle(self.bus, scope))  # current_run() inside
            try:
                result = await handler()
            except BaseException as error:
                kind = type(error).__name__
                if kind in CANCELLATIONS:
                    self._writer.run_ended(scope, cancelled=kind)
                else:
                    self._writer.run_ended(scope, error=str(error) or kind, error_type=kind)
                raise
            finally:
                _CURRENT_RUN.reset(run_token)
                _BRIDGED_RUN.reset(token)
            self._writer.run_ended(scope, output=getattr(result, "output", None))
            return result

        async def wrap_model_request(self, ctx: Any, *, request_context: Any,
                                     handler: Any) -> Any:
            model = getattr(request_context, "model", None) or getattr(ctx, "model", None)
            name = str(getattr(model, "model_name", "") or "") or None
            provider = str(getattr(model, "system", "") or "") or None
            bridged = _BRIDGED_RUN.get()
            if bridged is not None:
                return await self._bridged_call(bridged, name, provider, request_context,
                                                handler)
            call = _enter(self.faults, LLMCall(name, provider, bus=self.bus))
            try:
                response = await handler(request_context)
            except BaseException as error:
                _leave(self.faults, call, error)
                raise
            if call is not None:
                try:
                    call.record_usage(**_usage_of(response))
                except Exception as fault:
                    self.faults.record(fault)
            _leave(self.faults, call, None)
            return response

        async def _bridged_call(self, scope: Scope, name: str | None, provider: str | None,
                                request_context: Any, handler: Any) -> Any:
            call_id = f"llm-{new_event_id()}"
            self._writer.llm_request(scope, call_id, model=name, provider=provider)
            try:
                response = await handler(request_context)
            except BaseException as error:
                self._writer.llm_ended(scope, call_id, model=name, provider=provider,
                                       error=str(error) or type(error).__name__,
                                       error_type=type(error).__name__)
                raise
            self._writer.llm_ended(scope, call_id, model=name, provider=provider,
                                   usage=_usage_of(response))
            return response

        async def wrap_tool_execute(self, ctx: Any, *, call: Any, tool_def: Any, args: Any,
                                    handler: Any) -> Any:
            name = str(getattr(tool_def, "name", None) or getattr(call, "tool_name", "tool"))
            call_id = getattr(call, "tool_call_id", None) or f"call-{new_event_id()}"
            description = getattr(tool_def, "description", None) or None
            bridged = _BRIDGED_RUN.get()
            if bridged is not None:
                return await self._bridged_tool(bridged, name, str(call_id), description, args,
                                                handler)
            tool = _enter(self.faults, ToolCall(name, arguments=_jsonable(args),
                                                tool_call_id=str(call_id),
                                                description=description, bus=self.bus))
            try:
                result = await handler(args)
            except BaseException as error:
                _leave(self.faults, tool, error)
                raise
            if tool is not None:
                tool.result = _jsonable(result)
            _leave(self.faults, tool, None)
            return result

        async def _bridged_tool(self, scope: Scope, name: str, call_id: str,
                                description: str | None, args: Any, handler: Any) -> Any:
            self._writer.tool_started(scope, call_id, name, arguments=_jsonable(args),
                                      description=description)
            try:
                result = await handler(args)
            except BaseException as error:
                self._writer.tool_ended(scope, call_id, name,
                                        error=str(error) or type(error).__name__,
                                        error_type=type(error).__name__)
                raise
            self._writer.tool_ended(scope, call_id, name, result=_jsonable(result))
            return result

    return AgentBusCapability


def _prompt(ctx: Any) -> Any:
    prompt = getattr(ctx, "prompt", None)
    return prompt if isinstance(prompt, str) else None


def _jsonable(value: Any) -> Any:
    """Tool arguments and results as JSON data (``json_safe`` reprs what is not)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:
            return repr(value)
    return value


_capability_class: type[Any] | None = None
_installed: Any = None
_original_iter: Callable[..., Any] | None = None
_install_lock = threading.Lock()


def capability_class() -> type[Any]:
    """``AgentBusCapability``: pass an instance in ``Agent(capabilities=[...])`` to instrument
    one agent only, instead of ``install()``."""
    global _capability_class
    _require_framework()
    if _capability_class is None:
        _capability_class = _make_capability_class()
    return _capability_class


def install(bus: EventBus | None = None) -> Any:
    """Add our capability to every pydantic-ai agent run, publishing on ``bus`` (default: the
    process's default bus). Returns the capability; a second call changes nothing."""
    global _installed, _original_iter
    cls = capability_class()
    from pydantic_ai import Agent

    with _install_lock:
        if _installed is not None:
            return _installed
        capability = cls(resolve_bus(bus, "pydantic-ai"), FaultCounter("pydantic-ai"))
        original = Agent.iter

        @functools.wraps(original)
        def iter_with_bus(self: Any, *args: Any, **kwargs: Any) -> Any:
            current = _installed
            if current is not None:
                extra = list(kwargs.get("capabilities") or ())
                if not any(isinstance(c, cls) for c in extra):
                    kwargs["capabilities"] = [*extra, current]
            return original(self, *args, **kwargs)

        Agent.iter = iter_with_bus  # type: ignore[method-assign]
        _original_iter = original
        _installed = capability
        COVERED_SCOPES.add(NATIVE_SCOPE)
        return capability


def uninstall() -> None:
    """Stop instrumenting new runs and restore ``Agent.iter``; idempotent."""
    global _installed, _original_iter
    with _install_lock:
        original, _original_iter = _original_iter, None
        _installed = None
        COVERED_SCOPES.discard(NATIVE_SCOPE)
    if original is not None:
        from pydantic_ai import Agent

        Agent.iter = original  # type: ignore[method-assign]


def installed() -> Any:
    """The installed capability, if any (its ``faults`` counts swallowed errors)."""
    return _installed


class PydanticAIInstrumentor(BaseInstrumentor):
    """``opentelemetry-instrument`` entry point: ``install()`` with the instrumentor's bus."""

    def instrumentation_dependencies(self) -> tuple[str, ...]:
        return (f"{DISTRIBUTION} {SUPPORTED[0]}, {SUPPORTED[1]}",)

    def _instrument(self, **kwargs: Any) -> None:
        install(bus_for_instrumentor(kwargs.get("bus")))

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstall()
