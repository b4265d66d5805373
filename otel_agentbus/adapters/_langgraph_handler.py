"""The LangChain callback handler behind the LangGraph adapter (imports LangChain: load it
through :func:`otel_agentbus.adapters.langgraph.install`, which checks the versions first).

LangChain reports every runnable as a start and an end callback keyed by ``run_id`` with a
``parent_run_id``; LangGraph adds ``langgraph_node`` to the metadata and a ``graph:step:N``
tag to the runnable of each node visit. The handler keeps one small record per open
runnable and maps:

- a root runnable (a graph invocation) to a run ``invoke_agent {graph}``;
- a node visit to a node loop with one iteration (numbered per node within the run);
- a runnable whose children are node visits (a subgraph) to a child run of the node that
  called it, in the same trace, with the subgraph's name as its agent;
- chat model calls to ``chat {model}``, tool calls to ``execute_tool {tool}``, tool and
  model errors to failed spans plus a problem event;
- a conditional edge's routing to a decision event (see ``route_decided``).

Other runnables inside a node (sequences, lambdas, the routing function) only get a record,
so that a subgraph among them can be recognised; they publish nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from ..bus import EventBus
from ..events import Event, Scope, Severity, Source
from ..handles import SpanHandle, publish_start
from ..kinds import (
    DECISION_MADE,
    LLM_DELTA,
    LLM_REQUEST,
    NODE_LOOP_ITERATION,
    NODE_LOOP_STARTED,
    PROBLEM_REPORTED,
    RUN_STARTED,
    TOOL_CALL_STARTED,
)
from ..runs import json_safe
from ._common import FaultCounter

faults: Final = FaultCounter("langgraph")

_GRAPH: Final = 1
_NODE: Final = 2
_CHAIN: Final = 3
_LLM: Final = 4
_TOOL: Final = 5

_BUBBLE_UP: Final = frozenset({"GraphInterrupt", "NodeInterrupt", "ParentCommand",
                               "GraphBubbleUp"})
"""LangGraph's control-flow exceptions: an interrupt pauses the run, it does not fail it."""


class _Record:
    """One open runnable: what it is, and the handle of its span if it has one."""

    __slots__ = ("handle", "iteration", "kind", "name", "node", "parent", "run", "start_ns")

    def __init__(self, kind: int, name: str, parent: _Record | None,
                 handle: SpanHandle | None = None) -> None:
        self.kind = kind
        self.name = name
        self.parent = parent
        self.handle = handle
        self.iteration: SpanHandle | None = None
        """A node visit's iteration span: the one made current while the node runs."""
        self.start_ns = time.time_ns()
        self.run: _RunState | None = parent.run if parent is not None else None
        self.node: _Record | None = parent.node if parent is not None else None
        """The innermost node visit this runnable runs in (itself for a node)."""


class _RunState:
    """Per graph run: how often each node was visited, for iteration numbers."""

    __slots__ = ("handle", "visits")

    def __init__(self, handle: SpanHandle) -> None:
        self.handle = handle
        self.visits: dict[str, int] = {}


def _is_node(name: str, tags: Sequence[str] | None, metadata: Mapping[str, Any] | None) -> bool:
    if not metadata or metadata.get("langgraph_node") != name or not tags:
        return False
    return any(tag.startswith("graph:step:") for tag in tags)


def _model_of(serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None,
              invocation: Mapping[str, Any] | None, name: str | None) -> str:
    if metadata and metadata.get("ls_model_name"):
        return str(metadata["ls_model_name"])
    if invocation:
        for key in ("model", "model_name", "model_id", "deployment_name"):
            if invocation.get(key):
                return str(invocation[key])
    if name:
        return name
    if serialized and serialized.get("name"):
        return str(serialized["name"])
    return "unknown"


def _plain(value: Any) -> Any:
    """``value`` as JSON data: strings (most message contents) as they are."""
    return value if type(value) is str else json_safe(value)


def _messages(batches: Sequence[Sequence[BaseMessage]]) -> list[dict[str, Any]]:
    return [{"role": message.type, "content": _plain(message.content)}
            for batch in batches for message in batch]


def _result_fields(response: LLMResult) -> dict[str, Any]:
    """Token usage, finish reasons, response model and output from a chat model's result."""
    fields: dict[str, Any] = {}
    reasons: list[str] = []
    usage: Mapping[str, Any] | None = None
    output: list[dict[str, Any]] = []
    for generations in response.generations:
        for generation in generations:
            info = generation.generation_info or {}
            message = getattr(generation, "message", None)
            metadata: Mapping[str, Any] = getattr(message, "response_metadata", None) or {}
            reason = (info.get("finish_reason") or metadata.get("finish_reason")
                      or metadata.get("stop_reason"))
            if reason:
                reasons.append(str(reason))
            model = metadata.get("model_name") or metadata.get("model")
            if model and "response_model" not in fields:
                fields["response_model"] = str(model)
            if message is not None:
                usage = getattr(message, "usage_metadata", None) or usage
                entry: dict[str, Any] = {"role": "assistant",
                                         "content": _plain(message.content)}
                calls = getattr(message, "tool_calls", None)
                if calls:
                    entry["tool_calls"] = [{"id": c.get("id"), "name": c.get("name")}
                                           for c in calls]
                    if not reason:
                        reasons.append("tool_calls")
                output.append(entry)
    if usage:
        for key in ("input_tokens", "output_tokens"):
            if type(usage.get(key)) is int:
                fields[key] = usage[key]
        cache = (usage.get("input_token_details") or {}).get("cache_read")
        if type(cache) is int:
            fields["cache_read_input_tokens"] = cache
        reasoning = (usage.get("output_token_details") or {}).get("reasoning")
        if type(reasoning) is int:
            fields["reasoning_output_tokens"] = reasoning
    elif response.llm_output:
        token_usage = response.llm_output.get("token_usage") or {}
        for key, ours in (("prompt_tokens", "input_tokens"),
                          ("completion_tokens", "output_tokens")):
            if type(token_usage.get(key)) is int:
                fields[ours] = token_usage[key]
    if reasons:
        fields["finish_reasons"] = reasons
    if output:
        fields["output"] = output
    return fields


class AgentBusCallbackHandler(BaseCallbackHandler):
    """Publishes a LangChain / LangGraph execution as bus events (see the module doc).

    ``run_inline``: in async code LangChain calls it in the running task, not in a thread
    pool, so a span it makes current is current for the work that follows.
    """

    run_inline = True
    raise_error = False

    def __init__(self, bus: EventBus) -> None:
        super().__init__()
        self.bus = bus
        self.enabled = True
        self._records: dict[UUID, _Record] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- records
    def _parent(self, parent_run_id: UUID | None) -> _Record | None:
        return self._records.get(parent_run_id) if parent_run_id is not None else None

    def _pop(self, run_id: UUID) -> _Record | None:
        return self._records.pop(run_id, None)

    def _outer_handle(self, record: _Record | None) -> SpanHandle | None:
        """The innermost span around ``record``: itself for a tool or model call (a graph
        called as a tool runs under the tool's span), else its node's iteration, else its
        run."""
        if record is None:
            return None
        if record.kind in (_TOOL, _LLM) and record.handle is not None:
            return record.handle
        node = record.node
        if node is not None and node.iteration is not None:
            return node.iteration
        return record.run.handle if record.run is not None else None

    def _start_run(self, name: str, run_id: UUID, metadata: Mapping[str, Any] | None,
                   parent: _Record | None, start_ns: int | None = None) -> _RunState:
        session = metadata.get("thread_id") if metadata else None
        scope = Scope(run_id=str(run_id), agent=name, graph_id=name,
                      session_id=str(session) if session is not None else None)
        event = Event(RUN_STARTED, scope=scope, source=Source("langgraph", name),
                      time_ns=start_ns)
        handle = publish_start(self.bus, event, parent=self._outer_handle(parent))
        return _RunState(handle)

    # ----------------------------------------------------------------- chains
    @faults.guard
    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *,
                       run_id: UUID, parent_run_id: UUID | None = None,
                       tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
                       name: str | None = None, **kwargs: Any) -> None:
        if not self.enabled:
            return
        label = name or (serialized or {}).get("name") or "graph"
        parent = self._parent(parent_run_id)
        if parent is None:
            record = _Record(_GRAPH, label, None)
            record.run = self._start_run(label, run_id, metadata, None)
            record.handle = record.run.handle
            self._records[run_id] = record
            return
        if not _is_node(label, tags, metadata):
            self._records[run_id] = _Record(_CHAIN, label, parent)
            return
        if parent.kind == _CHAIN:  # a runnable whose children are nodes: a subgraph
            self._promote(parent, parent_run_id, metadata)
        record = _Record(_NODE, label, parent)
        record.node = record
        run = record.run
        assert run is not None
        visit = run.visits[label] = run.visits.get(label, 0) + 1
        record.handle = run.handle.start_child(NODE_LOOP_STARTED, node_id=label,
                                               source=Source("node", label))
        iteration = record.handle.publish(NODE_LOOP_ITERATION,
                                          {"iteration": visit}, node_id=label)
        record.iteration = SpanHandle(self.bus, iteration)
        record.iteration.run = run.handle.run
        self._records[run_id] = record
        record.iteration.attach()

    def _promote(self, record: _Record, run_id: UUID | None,
                 metadata: Mapping[str, Any] | None) -> None:
        """A plain runnable turned out to be a subgraph: open its child run now, dated
        from when the runnable started."""
        assert run_id is not None
        with self._lock:
            if record.kind != _CHAIN:
                return
            record.kind = _GRAPH
        run = self._start_run(record.name, run_id, metadata, record.parent, record.start_ns)
        record.run = run
        record.handle = run.handle
        record.node = None

    @faults.guard
    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        record = self._pop(run_id)
        if record is not None:
            self._end(record, None)

    @faults.guard
    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        record = self._pop(run_id)
        if record is not None:
            self._end(record, error)

    def _end(self, record: _Record, error: BaseException | None) -> None:
        if record.kind == _CHAIN or record.handle is None:
            return
        if error is not None and type(error).__name__ in _BUBBLE_UP:
            payload = {"interrupted": type(error).__name__}
            error = None
        else:
            payload = None
        if record.kind == _NODE:
            if record.iteration is not None:
                record.iteration.detach()
            if error is not None:  # on the iteration, before it ends
                self._problem(record, "critical", f"node {record.name} failed: {error}", error)
            record.handle.end({"iterations": 1}, error=error)
        else:
            record.handle.end(payload, error=error)

    def _problem(self, record: _Record, severity: str, description: str,
                 error: BaseException, tool_call_id: str | None = None) -> None:
        owner = self._outer_handle(record) if record.kind != _NODE else record.handle
        if owner is None:
            return
        payload: dict[str, Any] = {"severity": severity, "description": description,
                                   "root_cause": type(error).__name__}
        if tool_call_id:
            payload["tool_call_id"] = tool_call_id
        node = record.node.name if record.node is not None else None
        owner.publish(PROBLEM_REPORTED, payload, node_id=node,
                      severity=Severity.ERROR if severity == "critical" else Severity.WARN)

    # ------------------------------------------------------------- chat models
    @faults.guard
    def on_chat_model_start(self, serialized: dict[str, Any] | None,
                            messages: list[list[BaseMessage]], *, run_id: UUID,
                            parent_run_id: UUID | None = None,
                            tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None,
                            name: str | None = None, **kwargs: Any) -> None:
        if not self.enabled:
            return
        model = _model_of(serialized, metadata, kwargs.get("invocation_params"), name)
        payload: dict[str, Any] = {"call_id": str(run_id), "model": model,
                                   "messages": _messages(messages)}
        provider = metadata.get("ls_provider") if metadata else None
        if provider:
            payload["provider"] = str(provider)
        self._start_call(_LLM, model, run_id, parent_run_id, LLM_REQUEST, payload,
                         Source("llm", str(provider or model)))

    @faults.guard
    def on_llm_start(self, serialized: dict[str, Any] | None, prompts: list[str], *,
                     run_id: UUID, parent_run_id: UUID | None = None,
                     metadata: dict[str, Any] | None = None, name: str | None = None,
                     **kwargs: Any) -> None:
        if not self.enabled:
            return
        model = _model_of(serialized, metadata, kwargs.get("invocation_params"), name)
        payload: dict[str, Any] = {"call_id": str(run_id), "model": model,
                                   "messages": [{"role": "user", "content": p}
                                                for p in prompts]}
        provider = metadata.get("ls_provider") if metadata else None
        if provider:
            payload["provider"] = str(provider)
        self._start_call(_LLM, model, run_id, parent_run_id, LLM_REQUEST, payload,
                         Source("llm", str(provider or model)))

    def _start_call(self, kind: int, name: str, run_id: UUID, parent_run_id: UUID | None,
                    event_kind: str, payload: dict[str, Any], source: Source) -> None:
        parent = self._parent(parent_run_id)
        record = _Record(kind, name, parent)
        outer = self._outer_handle(parent)
        if outer is not None:
            node = record.node.name if record.node is not None else None
            record.handle = outer.start_child(event_kind, payload, node_id=node, source=source)
        else:  # outside any graph: a span of its own, or of the decorated run around it
            from ..runs import current_run

            run = current_run()
            scope = run.scope if run is not None else Scope()
            bus = run.bus if run is not None else self.bus
            record.handle = publish_start(bus, Event(event_kind, payload, scope=scope,
                                                     source=source))
            record.handle.run = run
        self._records[run_id] = record
        record.handle.attach()

    @faults.guard
    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        record = self._records.get(run_id)
        if record is not None and record.handle is not None:
            record.handle.publish(LLM_DELTA, {"call_id": str(run_id)},
                                  node_id=record.handle.scope.node_id)

    @faults.guard
    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        record = self._pop(run_id)
        if record is not None and record.handle is not None:
            record.handle.end(_result_fields(response))

    @faults.guard
    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        record = self._pop(run_id)
        if record is not None and record.handle is not None:
            self._problem(record, "warning", f"model {record.name} failed: {error}", error)
            record.handle.end(error=error)

    # ------------------------------------------------------------------ tools
    @faults.guard
    def on_tool_start(self, serialized: dict[str, Any] | None, input_str: str, *,
                      run_id: UUID, parent_run_id: UUID | None = None,
                      tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
                      inputs: dict[str, Any] | None = None, name: str | None = None,
                      **kwargs: Any) -> None:
        if not self.enabled:
            return
        tool = name or (serialized or {}).get("name") or "tool"
        call_id = kwargs.get("tool_call_id") or str(run_id)
        payload: dict[str, Any] = {"tool_call_id": str(call_id), "tool_name": tool,
                                   "arguments": json_safe(inputs) if inputs is not None
                                   else input_str}
        description = (serialized or {}).get("description")
        if description:
            payload["description"] = str(description)
        self._start_call(_TOOL, tool, run_id, parent_run_id, TOOL_CALL_STARTED,
                         payload, Source("tool", tool))

    @faults.guard
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        record = self._pop(run_id)
        if record is None or record.handle is None:
            return
        content = getattr(output, "content", output)
        failed = getattr(output, "status", None) == "error"
        record.handle.end({"result": _plain(content), "is_error": failed})

    @faults.guard
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        record = self._pop(run_id)
        if record is None or record.handle is None:
            return
        if type(error).__name__ in _BUBBLE_UP:
            record.handle.end({"interrupted": type(error).__name__})
            return
        call_id = record.handle.event.payload.get("tool_call_id")
        self._problem(record, "warning", f"tool {record.name} failed: {error}", error,
                      str(call_id) if call_id else None)  # on the tool's span, before it ends
        record.handle.end(error=error)

    # ---------------------------------------------------------------- routing
    def route_decided(self, parent_run_id: UUID | None, path: str,
                      ends: Mapping[Any, str] | None, result: Sequence[Any]) -> None:
        """A conditional edge chose: publish a decision on the node that routed (called by
        the wrapper of LangGraph's branch, which knows the options)."""
        if not self.enabled:
            return
        record = self._parent(parent_run_id)
        node = record.node if record is not None else None
        if node is None or node.handle is None:
            return
        chosen = [_destination(item, ends) for item in result]
        if ends:
            options = [{"id": str(key), "description": f"go to {target}"}
                       for key, target in ends.items()]
        else:  # the path function declared no targets: only what it returned is known
            options = [{"id": target} for target in dict.fromkeys(chosen)]
        payload = {
            "decision_id": f"route-{node.handle.event.id}", "intent": f"route after {node.name}",
            "options": options, "chosen": ",".join(_key(item) for item in result),
            "reasoning": f"{path} returned {', '.join(_key(item) for item in result)}",
            "decision_type": "path_choice", "destinations": chosen,
        }
        owner = node.iteration or node.handle
        owner.publish(DECISION_MADE, payload, node_id=node.name)


def _key(item: Any) -> str:
    node = getattr(item, "node", None)  # a Send packet
    return f"Send({node})" if node is not None else str(item)


def _destination(item: Any, ends: Mapping[Any, str] | None) -> str:
    node = getattr(item, "node", None)
    if node is not None:
        return str(node)
    if ends and item in ends:
        return str(ends[item])
    return str(item)

