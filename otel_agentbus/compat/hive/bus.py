"""The Hive event bus API (seed 000), running on our bus and mirrored to OpenTelemetry.

An agent written against Hive's ``EventBus`` switches one import::

    from otel_agentbus.compat.hive import AgentEvent, EventBus, EventType

Every ``AgentEvent`` becomes an :class:`otel_agentbus.Event` of the matching kind
(``otel_agentbus.kinds.HIVE_TYPE_TO_KIND``): ``stream_id`` is the scope's stream,
``execution_id`` the run, ``node_id`` the node, ``data`` the payload. So the telemetry
mirror turns executions into ``invoke_agent`` spans, node loops into node and iteration
spans, tool calls into ``execute_tool`` spans. Handlers get ``AgentEvent`` objects back.

Delivery is the seed's by default: ``publish`` runs the matching handlers concurrently
and returns once they have all run; handlers of different publishes may overlap (also
one handler with itself); at most ``max_concurrent_handlers`` run at once. Events
published on the underlying bus directly reach the handlers too (delivered the same way,
from one background subscription). ``queued_delivery=True`` opts in to the project's
faster delivery: each subscription gets its events in publish order from its own queue
on the underlying bus and ``publish`` returns once the event is queued (with
``await_handlers=True`` too: once they ran). ``subscribe`` may be called before the
event loop runs.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from ...bus import EventBus as CoreBus
from ...default_mirror import MirrorTarget
from ...events import Correlation, Event, Scope, Source, thaw_json
from ...instrument import json_data
from ...kinds import HIVE_TYPE_TO_KIND, KNOWN_KINDS
from ...subscription import Subscription as CoreSubscription
from ...subscription import in_handler

__all__ = ["AgentEvent", "EventBus", "EventHandler", "EventType", "Subscription"]

logger = logging.getLogger("otel_agentbus.compat.hive")


class EventType(StrEnum):
    """Types of events that can be published (the seed's names and values)."""

    EXECUTION_STARTED = "execution_started"
    EXECUTION_COMPLETED = "execution_completed"
    EXECUTION_FAILED = "execution_failed"
    EXECUTION_PAUSED = "execution_paused"
    EXECUTION_RESUMED = "execution_resumed"

    STATE_CHANGED = "state_changed"
    STATE_CONFLICT = "state_conflict"

    GOAL_PROGRESS = "goal_progress"
    GOAL_ACHIEVED = "goal_achieved"
    CONSTRAINT_VIOLATION = "constraint_violation"

    STREAM_STARTED = "stream_started"
    STREAM_STOPPED = "stream_stopped"

    NODE_LOOP_STARTED = "node_loop_started"
    NODE_LOOP_ITERATION = "node_loop_iteration"
    NODE_LOOP_COMPLETED = "node_loop_completed"

    LLM_TEXT_DELTA = "llm_text_delta"
    LLM_REASONING_DELTA = "llm_reasoning_delta"

    TOOL_CALL_STARTED = "tool_call_started"
    TOOL_CALL_COMPLETED = "tool_call_completed"

    CLIENT_OUTPUT_DELTA = "client_output_delta"
    CLIENT_INPUT_REQUESTED = "client_input_requested"

    NODE_INTERNAL_OUTPUT = "node_internal_output"
    NODE_INPUT_BLOCKED = "node_input_blocked"
    NODE_STALLED = "node_stalled"

    CUSTOM = "custom"


_KIND_OF: Final[dict[EventType, str]] = {t: HIVE_TYPE_TO_KIND[t.value] for t in EventType}
_TYPE_OF: Final[dict[str, EventType]] = {kind: t for t, kind in _KIND_OF.items()}
_ALL_KINDS: Final = tuple(_KIND_OF.values())
_EXECUTION_TYPES: Final = frozenset({
    EventType.EXECUTION_STARTED, EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED,
    EventType.EXECUTION_PAUSED, EventType.EXECUTION_RESUMED,
})
_RUN_ENDS: Final = frozenset({EventType.EXECUTION_COMPLETED, EventType.EXECUTION_FAILED})
_MAX_AGENT_NAMES: Final = 4096
_HANDLER_BUFFER: Final = 1024


@dataclass
class AgentEvent:
    """An event in the agent system (the seed's fields)."""

    type: EventType
    stream_id: str
    node_id: str | None = None
    execution_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=datetime.now)
    correlation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Convert to dictionary for serialization."""
        return {
            "type": self.type.value,
            "stream_id": self.stream_id,
            "node_id": self.node_id,
            "execution_id": self.execution_id,
            "data": self.data,
            "timestamp": self.timestamp.isoformat(),
            "correlation_id": self.correlation_id,
        }


EventHandler = Callable[[AgentEvent], Awaitable[None]]


@dataclass
class Subscription:
    """A subscription to events (the seed's record)."""

    id: str
    event_types: set[EventType]
    handler: EventHandler
    filter_stream: str | None = None
    filter_node: str | None = None
    filter_execution: str | None = None


class _Waiting:
    """Publishers waiting (``await_handlers=True``) for the handlers of one event."""

    __slots__ = ("future", "remaining")

    def __init__(self, remaining: int, future: asyncio.Future[None]) -> None:
        self.remaining = remaining
        self.future = future


class EventBus:
    """Hive's pub/sub event bus, over :class:`otel_agentbus.EventBus`.

    ``bus`` is the underlying bus (``.bus``; made for you by default): attach telemetry to
    it with ``telemetry=`` or ``configure(...).attach(hive_bus.bus)``. At most
    ``max_concurrent_handlers`` handlers run at once across all subscriptions.
    ``queued_delivery`` (not in the seed): per-subscription queues instead of running the
    handlers inside ``publish`` (see the module docstring).
    """

    def __init__(
        self,
        max_history: int = 1000,
        max_concurrent_handlers: int = 10,
        *,
        bus: CoreBus | None = None,
        telemetry: MirrorTarget | None = None,
        queued_delivery: bool = False,
        await_handlers: bool = False,
    ) -> None:
        if max_concurrent_handlers < 1:
            raise ValueError(
                f"max_concurrent_handlers must be >= 1, got {max_concurrent_handlers!r}")
        self.bus: CoreBus = bus if bus is not None else CoreBus(history_size=max(0, max_history))
        if telemetry is not None:
            telemetry.attach(self.bus)
        self._max_history = max_history
        self._semaphore = asyncio.Semaphore(max_concurrent_handlers)
        self._queued = queued_delivery
        self._await_handlers = await_handlers
        self._foreign: CoreSubscription | None = None
        """Seed delivery: the one subscription that hands events published on the
        underlying bus directly (not through this facade) to the handlers."""
        self._subscriptions: dict[str, Subscription] = {}
        self._live: dict[str, CoreSubscription | None] = {}
        """Started subscriptions (None: one with no event types, which matches nothing)."""
        self._subscription_counter = 0
        self._originals: OrderedDict[str, AgentEvent] = OrderedDict()
        self._keep_originals = max(0, max_history) + 4 * _HANDLER_BUFFER
        self._agents: OrderedDict[str, str] = OrderedDict()
        self._waiting: dict[str, _Waiting] = {}

    # ----------------------------------------------------------- conversion
    def _to_event(self, event: AgentEvent) -> Event:
        event_type = EventType(event.type)
        data = event.data if isinstance(event.data, dict) else {}
        payload: dict[str, Any] = json_data(data)
        if "input_data" in payload and "input" not in payload:
            payload["input"] = payload.pop("input_data")
        agent = self._agent_of(event_type, event, data)
        timestamp = event.timestamp
        time_ns = (round(timestamp.timestamp() * 1_000_000) * 1000
                   if isinstance(timestamp, datetime) else None)
        return Event(
            _KIND_OF[event_type], payload,
            source=Source("stream", event.stream_id or ""),
            scope=Scope(run_id=event.execution_id or None, stream_id=event.stream_id or None,
                        node_id=event.node_id or None, agent=agent),
            correlation=(Correlation(correlation_id=event.correlation_id)
                         if event.correlation_id else Correlation()),
            time_ns=time_ns,
        )

    def _agent_of(self, event_type: EventType, event: AgentEvent,
                  data: dict[str, Any]) -> str | None:
        """The run's agent name: ``data["agent"]``, else the stream id, remembered per
        execution so that every event of a run carries the same one."""
        named = data.get("agent")
        execution_id = event.execution_id
        if event_type in _EXECUTION_TYPES:
            agent = named if isinstance(named, str) and named else (event.stream_id or "agent")
            if execution_id:
                if event_type in _RUN_ENDS:
                    agent = self._agents.pop(execution_id, agent)
                else:
                    self._agents[execution_id] = agent
                    self._agents.move_to_end(execution_id)
                    while len(self._agents) > _MAX_AGENT_NAMES:
                        self._agents.popitem(last=False)
            return agent
        if isinstance(named, str) and named:
            return named
        if execution_id and execution_id in self._agents:
            return self._agents[execution_id]
        return event.stream_id or None

    def _to_agent_event(self, event: Event) -> AgentEvent:
        """The ``AgentEvent`` that was published (same object), or one rebuilt from an
        event published on the underlying bus directly."""
        original = self._originals.get(event.id)
        if original is not None:
            return original
        scope = event.scope
        return AgentEvent(
            type=_TYPE_OF.get(event.kind, EventType.CUSTOM),
            stream_id=scope.stream_id or scope.agent or "",
            node_id=scope.node_id,
            execution_id=scope.run_id,
            data=thaw_json(event.payload),
            timestamp=datetime.fromtimestamp(event.time_ns / 1e9),
            correlation_id=event.correlation.correlation_id,
        )

    def _remember(self, event_id: str, event: AgentEvent) -> None:
        originals = self._originals
        originals[event_id] = event
        while len(originals) > self._keep_originals:
            originals.popitem(last=False)

    # ------------------------------------------------------------ subscribe
    def subscribe(
        self,
        event_types: list[EventType],
        handler: EventHandler,
        filter_stream: str | None = None,
        filter_node: str | None = None,
        filter_execution: str | None = None,
    ) -> str:
        """Subscribe ``handler`` to ``event_types``; returns the id for ``unsubscribe``."""
        types = {EventType(t) for t in event_types}
        self._subscription_counter += 1
        sub_id = f"sub_{self._subscription_counter}"
        self._subscriptions[sub_id] = Subscription(
            id=sub_id, event_types=types, handler=handler, filter_stream=filter_stream,
            filter_node=filter_node, filter_execution=filter_execution,
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return sub_id  # started by the first publish or wait_for
        self._start_pending()
        return sub_id

    def _start_pending(self) -> None:
        if not self._queued:
            if self._foreign is None and self._subscriptions and not self.bus.closed:
                self._foreign = self.bus.subscribe(
                    self._deliver_foreign, kinds=_ALL_KINDS,
                    predicate=lambda event: event.id not in self._originals,
                    name="hive:published-elsewhere", buffer=_HANDLER_BUFFER,
                    backpressure="block")
            return
        for sub_id in self._subscriptions:
            if sub_id not in self._live:
                self._start(sub_id)

    async def settle(self, timeout: float = 5.0) -> bool:
        """Wait until the events published on the underlying bus so far (e.g. by the
        runtime) have reached the handlers; False after ``timeout`` seconds. Not in the
        seed, where every event goes through ``publish``."""
        sub = self._foreign
        if sub is None:
            return True
        target = sub.received
        deadline = asyncio.get_running_loop().time() + timeout
        spins = 0
        while sub.handled + sub.failed + sub.timed_out + sub.dropped < target:
            if sub.done or asyncio.get_running_loop().time() > deadline:
                return sub.done
            spins += 1
            await asyncio.sleep(0 if spins < 100 else 0.001)
        return True

    async def _deliver_foreign(self, event: Event) -> None:
        await self._run_handlers(self._to_agent_event(event))

    async def _run_handlers(self, event: AgentEvent) -> None:
        """The seed's delivery: every matching handler at once, errors logged."""
        handlers = [s.handler for s in list(self._subscriptions.values())
                    if self._matches(s, event)]
        if not handlers:
            return
        semaphore = self._semaphore

        async def run_handler(handler: EventHandler) -> None:
            async with semaphore:
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception as error:
                    logger.error("Handler error for %s: %s", event.type, error)

        await asyncio.gather(*(run_handler(h) for h in handlers), return_exceptions=True)

    def _start(self, sub_id: str) -> None:
        record = self._subscriptions[sub_id]
        if not record.event_types:
            self._live[sub_id] = None
            return
        handler = record.handler
        semaphore = self._semaphore

        async def deliver(event: Event) -> None:
            try:
                async with semaphore:
                    result = handler(self._to_agent_event(event))
                    if inspect.isawaitable(result):
                        await result
            except Exception as error:
                logger.error("Handler error for %s: %s", _TYPE_OF.get(event.kind, event.kind),
                             error)
            finally:
                waiting = self._waiting.get(event.id)
                if waiting is not None:
                    waiting.remaining -= 1
                    if waiting.remaining <= 0 and not waiting.future.done():
                        waiting.future.set_result(None)

        self._live[sub_id] = self.bus.subscribe(
            deliver,
            kinds=[_KIND_OF[t] for t in record.event_types],
            stream_id=record.filter_stream or None,
            node_id=record.filter_node or None,
            run_id=record.filter_execution or None,
            name=f"hive:{sub_id}",
            buffer=_HANDLER_BUFFER,
            backpressure="block",
        )

    def unsubscribe(self, subscription_id: str) -> bool:
        """Remove a subscription; events already published to it are still handled."""
        if self._subscriptions.pop(subscription_id, None) is None:
            return False
        live = self._live.pop(subscription_id, None)
        if live is not None:
            live.close(drain=True)
        return True

    @staticmethod
    def _matches(subscription: Subscription, event: AgentEvent) -> bool:
        if EventType(event.type) not in subscription.event_types:
            return False
        if subscription.filter_stream and subscription.filter_stream != event.stream_id:
            return False
        if subscription.filter_node and subscription.filter_node != event.node_id:
            return False
        return not (subscription.filter_execution
                    and subscription.filter_execution != event.execution_id)

    # -------------------------------------------------------------- publish
    async def publish(self, event: AgentEvent) -> None:
        """Publish ``event`` to history, telemetry and every matching subscriber.

        Returns once every matching handler has run (``queued_delivery=True``: once the
        event is queued for each, or with ``await_handlers=True`` once they ran).
        """
        self._start_pending()
        core = self._to_event(event)
        self._remember(core.id, event)
        if not self._queued:
            await self.bus.publish(core)
            await self._run_handlers(event)
            return
        if not self._await_handlers or in_handler():
            await self.bus.publish(core)
            return
        matching = [live for s in self._subscriptions.values()
                    if (live := self._live.get(s.id)) is not None and self._matches(s, event)]
        if not matching:
            await self.bus.publish(core)
            return
        waiting = _Waiting(len(matching), asyncio.get_running_loop().create_future())
        self._waiting[core.id] = waiting
        try:
            await self.bus.publish(core)
            while not waiting.future.done():
                await asyncio.wait([waiting.future], timeout=0.5)
                if all(sub.done for sub in matching):
                    break  # their subscriptions ended (bus closed): nobody left to wait for
        finally:
            self._waiting.pop(core.id, None)

    # --------------------------------------------------- convenience publishers
    async def _emit(self, event_type: EventType, stream_id: str, data: dict[str, Any], *,
                    node_id: str | None = None, execution_id: str | None = None,
                    correlation_id: str | None = None) -> None:
        """Publish one ``emit_*`` event: the emitters differ only in type, ids and data."""
        await self.publish(AgentEvent(
            type=event_type, stream_id=stream_id, node_id=node_id, execution_id=execution_id,
            data=data, correlation_id=correlation_id,
        ))

    async def emit_execution_started(
        self,
        stream_id: str,
        execution_id: str,
        input_data: dict[str, Any] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Emit execution started event."""
        await self._emit(EventType.EXECUTION_STARTED, stream_id, {"input": input_data or {}},
                         execution_id=execution_id, correlation_id=correlation_id)

    async def emit_execution_completed(
        self,
        stream_id: str,
        execution_id: str,
        output: dict[str, Any] | None = None,
        correlation_id: str | None = None,
    ) -> None:
        """Emit execution completed event."""
        await self._emit(EventType.EXECUTION_COMPLETED, stream_id, {"output": output or {}},
                         execution_id=execution_id, correlation_id=correlation_id)

    async def emit_execution_failed(
        self,
        stream_id: str,
        execution_id: str,
        error: str,
        correlation_id: str | None = None,
    ) -> None:
        """Emit execution failed event."""
        await self._emit(EventType.EXECUTION_FAILED, stream_id, {"error": error},
                         execution_id=execution_id, correlation_id=correlation_id)

    async def emit_goal_progress(
        self,
        stream_id: str,
        progress: float,
        criteria_status: dict[str, Any],
    ) -> None:
        """Emit goal progress event."""
        await self._emit(EventType.GOAL_PROGRESS, stream_id,
                         {"progress": progress, "criteria_status": criteria_status})

    async def emit_constraint_violation(
        self,
        stream_id: str,
        execution_id: str,
        constraint_id: str,
        description: str,
    ) -> None:
        """Emit constraint violation event."""
        await self._emit(EventType.CONSTRAINT_VIOLATION, stream_id,
                         {"constraint_id": constraint_id, "description": description},
                         execution_id=execution_id)

    async def emit_state_changed(
        self,
        stream_id: str,
        execution_id: str,
        key: str,
        old_value: Any,
        new_value: Any,
        scope: str,
    ) -> None:
        """Emit state changed event."""
        await self._emit(EventType.STATE_CHANGED, stream_id,
                         {"key": key, "old_value": old_value, "new_value": new_value,
                          "scope": scope},
                         execution_id=execution_id)

    async def emit_node_loop_started(
        self,
        stream_id: str,
        node_id: str,
        execution_id: str | None = None,
        max_iterations: int | None = None,
    ) -> None:
        """Emit node loop started event."""
        await self._emit(EventType.NODE_LOOP_STARTED, stream_id,
                         {"max_iterations": max_iterations},
                         node_id=node_id, execution_id=execution_id)

    async def emit_node_loop_iteration(
        self,
        stream_id: str,
        node_id: str,
        iteration: int,
        execution_id: str | None = None,
    ) -> None:
        """Emit node loop iteration event."""
        await self._emit(EventType.NODE_LOOP_ITERATION, stream_id, {"iteration": iteration},
                         node_id=node_id, execution_id=execution_id)

    async def emit_node_loop_completed(
        self,
        stream_id: str,
        node_id: str,
        iterations: int,
        execution_id: str | None = None,
    ) -> None:
        """Emit node loop completed event."""
        await self._emit(EventType.NODE_LOOP_COMPLETED, stream_id, {"iterations": iterations},
                         node_id=node_id, execution_id=execution_id)

    async def emit_llm_text_delta(
        self,
        stream_id: str,
        node_id: str,
        content: str,
        snapshot: str,
        execution_id: str | None = None,
    ) -> None:
        """Emit LLM text delta event."""
        await self._emit(EventType.LLM_TEXT_DELTA, stream_id,
                         {"content": content, "snapshot": snapshot},
                         node_id=node_id, execution_id=execution_id)

    async def emit_llm_reasoning_delta(
        self,
        stream_id: str,
        node_id: str,
        content: str,
        execution_id: str | None = None,
    ) -> None:
        """Emit LLM reasoning delta event."""
        await self._emit(EventType.LLM_REASONING_DELTA, stream_id, {"content": content},
                         node_id=node_id, execution_id=execution_id)

    async def emit_tool_call_started(
        self,
        stream_id: str,
        node_id: str,
        tool_use_id: str,
        tool_name: str,
        tool_input: dict[str, Any] | None = None,
        execution_id: str | None = None,
    ) -> None:
        """Emit tool call started event."""
        await self._emit(EventType.TOOL_CALL_STARTED, stream_id,
                         {"tool_use_id": tool_use_id, "tool_name": tool_name,
                          "tool_input": tool_input or {}},
                         node_id=node_id, execution_id=execution_id)

    async def emit_tool_call_completed(
        self,
        stream_id: str,
        node_id: str,
        tool_use_id: str,
        tool_name: str,
        result: str = "",
        is_error: bool = False,
        execution_id: str | None = None,
    ) -> None:
        """Emit tool call completed event."""
        await self._emit(EventType.TOOL_CALL_COMPLETED, stream_id,
                         {"tool_use_id": tool_use_id, "tool_name": tool_name,
                          "result": result, "is_error": is_error},
                         node_id=node_id, execution_id=execution_id)

    async def emit_client_output_delta(
        self,
        stream_id: str,
        node_id: str,
        content: str,
        snapshot: str,
        execution_id: str | None = None,
    ) -> None:
        """Emit client output delta event (client_facing=True nodes)."""
        await self._emit(EventType.CLIENT_OUTPUT_DELTA, stream_id,
                         {"content": content, "snapshot": snapshot},
                         node_id=node_id, execution_id=execution_id)

    async def emit_client_input_requested(
        self,
        stream_id: str,
        node_id: str,
        prompt: str = "",
        execution_id: str | None = None,
    ) -> None:
        """Emit client input requested event (client_facing=True nodes)."""
        await self._emit(EventType.CLIENT_INPUT_REQUESTED, stream_id, {"prompt": prompt},
                         node_id=node_id, execution_id=execution_id)

    async def emit_node_internal_output(
        self,
        stream_id: str,
        node_id: str,
        content: str,
        execution_id: str | None = None,
    ) -> None:
        """Emit node internal output event (client_facing=False nodes)."""
        await self._emit(EventType.NODE_INTERNAL_OUTPUT, stream_id, {"content": content},
                         node_id=node_id, execution_id=execution_id)

    async def emit_node_stalled(
        self,
        stream_id: str,
        node_id: str,
        reason: str = "",
        execution_id: str | None = None,
    ) -> None:
        """Emit node stalled event."""
        await self._emit(EventType.NODE_STALLED, stream_id, {"reason": reason},
                         node_id=node_id, execution_id=execution_id)

    async def emit_node_input_blocked(
        self,
        stream_id: str,
        node_id: str,
        prompt: str = "",
        execution_id: str | None = None,
    ) -> None:
        """Emit node input blocked event."""
        await self._emit(EventType.NODE_INPUT_BLOCKED, stream_id, {"prompt": prompt},
                         node_id=node_id, execution_id=execution_id)

    # --------------------------------------------------------------- queries
    def get_history(
        self,
        event_type: EventType | None = None,
        stream_id: str | None = None,
        execution_id: str | None = None,
        limit: int = 100,
    ) -> list[AgentEvent]:
        """Matching events, most recent first (from the underlying bus's history ring)."""
        kinds = _KIND_OF[EventType(event_type)] if event_type else _ALL_KINDS
        events = self.bus.history(kinds=kinds, stream_id=stream_id or None,
                                  run_id=execution_id or None, limit=limit)
        return [self._to_agent_event(e) for e in events]

    def get_stats(self) -> dict[str, Any]:
        """Event bus statistics (the seed's keys)."""
        events = self.bus.history(kinds=_ALL_KINDS, limit=None)
        type_counts: dict[str, int] = {}
        for event in reversed(events):
            name = _TYPE_OF[event.kind].value
            type_counts[name] = type_counts.get(name, 0) + 1
        return {
            "total_events": len(events),
            "subscriptions": len(self._subscriptions),
            "events_by_type": type_counts,
        }

    async def wait_for(
        self,
        event_type: EventType,
        stream_id: str | None = None,
        node_id: str | None = None,
        execution_id: str | None = None,
        timeout: float | None = None,
    ) -> AgentEvent | None:
        """The next matching event, or None after ``timeout`` seconds (none or 0: forever)."""
        self._start_pending()
        event = await self.bus.wait_for(
            _KIND_OF[EventType(event_type)], timeout=timeout or None,
            stream_id=stream_id or None, node_id=node_id or None, run_id=execution_id or None,
        )
        return None if event is None else self._to_agent_event(event)

    async def close(self) -> None:
        """Close the underlying bus once queued events are handled (not in the seed)."""
        await self.bus.close()
        self._foreign = None


# Kinds the facade has no type for stay on the underlying bus only.
assert all(kind in KNOWN_KINDS for kind in _ALL_KINDS)
