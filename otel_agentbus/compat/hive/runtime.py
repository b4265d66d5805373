"""Hive's ``AgentRuntime`` (seed 001), running on :class:`otel_agentbus.runtime.AgentRuntime`.

Written as the seed calls it::

    runtime = AgentRuntime(graph=graph, goal=goal, storage_path=Path("./storage"))
    runtime.register_entry_point(EntryPointSpec(id="api", name="API", entry_node="start"))
    await runtime.start()
    exec_id = await runtime.trigger("api", {"query": "help"})

Every execution is one run on the bus (``agent.run.started`` ... ``completed``/``failed``/
``cancelled``), so a trace once telemetry is attached; its node loops are node and
iteration spans, and the decisions nodes record through ``ctx.runtime`` (a
:class:`StreamRuntimeAdapter`, as Hive's ``NodeContext.runtime``) are span events.

Objects from outside the seeds are duck-typed; what is used of them:

- ``graph``: ``get_node(node_id)`` (None when absent) and optionally ``id``. Our
  :class:`otel_agentbus.runtime.Graph` runs with its edges; any other graph runs the entry
  node only: the node must be callable as ``node(ctx, state)`` or have such a ``fn``.
- ``goal``: ``id`` and optionally ``description``, ``success_criteria``, ``constraints``
  (see :mod:`.outcomes`).
- ``llm``, ``tools``, ``tool_executor``: handed to nodes as ``ctx.llm``, ``ctx.tools``,
  ``ctx.tool_executor``; the runtime itself calls none of them.
- ``runtime_log_store``: gets ``save_summary(execution_id, dict)`` after each execution
  when it has that method. ``checkpoint_config``: kept (``runtime.checkpoint_config``);
  sessions are always written, so there is nothing more to configure.

What ``storage_path`` holds (JSON, see :mod:`.storage`): ``sessions/<execution_id>/
state.json`` per execution, ``runs/<run_id>.json`` per tracked run,
``state/shared_state.json`` (the :class:`SharedStateManager`), ``runtime_logs/``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...bus import EventBus as CoreBus
from ...runtime.agent_runtime import AgentRuntime as CoreRuntime
from ...runtime.agent_runtime import AgentRuntimeConfig as CoreConfig
from ...runtime.entry_points import EntryPoint
from ...runtime.execution import ExecutionContext, ExecutionResult
from ...runtime.streams import ExecutionStream
from ...runtime.webhooks import WebhookRequest, WebhookRoute, WebhookServer
from .bus import AgentEvent, EventBus, EventHandler, EventType
from .config import AgentRuntimeConfig, EntryPointSpec, check_entry_point, webhook_routes
from .nodes import ExecutionAdapter, can_run, run_graph
from .outcomes import OutcomeAggregator
from .sessions import RESUME_AT, initial_state, session_record
from .state import SharedStateManager
from .storage import ConcurrentStorage, RuntimeLogStore, SessionStore
from .tracker import StreamDecisionTracker

__all__ = [
    "AgentRuntime",
    "AgentRuntimeConfig",
    "EntryPointSpec",
    "ExecutionResult",
    "ExecutionStream",
    "create_agent_runtime",
]

logger = logging.getLogger("otel_agentbus.compat.hive.runtime")


class AgentRuntime:
    """Top-level runtime: entry points, concurrent executions, shared state, goal progress.

    ``bus`` (not in the seed): the project bus to run on (telemetry attached to it sees
    every execution); a new one by default, reachable as ``runtime.event_bus.bus``.
    """

    def __init__(
        self,
        graph: Any,
        goal: Any,
        storage_path: str | Path,
        llm: Any = None,
        tools: list[Any] | None = None,
        tool_executor: Callable[..., Any] | None = None,
        config: AgentRuntimeConfig | None = None,
        runtime_log_store: Any = None,
        checkpoint_config: Any = None,
        *,
        bus: CoreBus | None = None,
    ) -> None:
        if not callable(getattr(graph, "get_node", None)):
            raise TypeError(f"graph needs a get_node(node_id) method, got {graph!r}")
        if not isinstance(getattr(goal, "id", None), str):
            raise TypeError(f"goal needs a str attribute 'id', got {goal!r}")
        self.graph = graph
        self.goal = goal
        self._config = config or AgentRuntimeConfig()
        self._runtime_log_store = runtime_log_store
        self.checkpoint_config = checkpoint_config
        self.storage_path = Path(storage_path)
        self._storage = ConcurrentStorage(self.storage_path, self._config.cache_ttl,
                                          self._config.batch_interval)
        self._session_store = SessionStore(self.storage_path)
        self._event_bus = EventBus(max_history=self._config.max_history, bus=bus)
        self._core = CoreRuntime(
            self._event_bus.bus, None, name=str(getattr(graph, "id", "") or "agent"),
            config=CoreConfig(
                execution_result_max=self._config.execution_result_max,
                execution_result_ttl_seconds=self._config.execution_result_ttl_seconds,
                max_history=self._config.max_history))
        self._state_manager = SharedStateManager(
            self._core.shared_state, self.storage_path / "state" / "shared_state.json")
        self._outcome_aggregator = OutcomeAggregator(goal, self._event_bus)
        self._llm = llm
        self._tools = tools or []
        self._tool_executor = tool_executor
        self._entry_points: dict[str, EntryPointSpec] = {}
        self._trackers: dict[str, StreamDecisionTracker] = {}
        self._executions: dict[str, str] = {}
        """Unfinished execution id -> its entry point."""
        self._finishing: dict[str, asyncio.Task[None]] = {}
        """Execution id -> the task persisting it once it ends."""
        self._webhook_server: WebhookServer | None = None
        self._event_subscriptions: list[str] = []
        self._running = False
        self._lock = asyncio.Lock()
        self.intro_message: str = ""

    # ------------------------------------------------------------ entry points
    def register_entry_point(self, spec: EntryPointSpec) -> None:
        """Raises ``RuntimeError`` while running, ``ValueError`` for a duplicate id, an
        entry node not in the graph, or an unknown trigger type or isolation level."""
        if self._running:
            raise RuntimeError("Cannot register entry points while runtime is running")
        if spec.id in self._entry_points:
            raise ValueError(f"Entry point '{spec.id}' already registered")
        if self.graph.get_node(spec.entry_node) is None:
            raise ValueError(f"Entry node '{spec.entry_node}' not found in graph")
        check_entry_point(spec)
        if not can_run(self.graph, spec.entry_node):
            raise ValueError(f"Entry node '{spec.entry_node}' cannot run: it must be callable "
                             "as node(ctx, state) or have such an 'fn'")
        self._core.register_entry_point(EntryPoint(
            id=spec.id, name=spec.name, agent=self._agent_for(spec), trigger_type="api",
            isolation_level="isolated" if spec.isolation_level == "isolated" else "shared",
            max_concurrent=max(1, min(spec.max_concurrent,
                                      self._config.max_concurrent_executions))))
        self._entry_points[spec.id] = spec

    def unregister_entry_point(self, entry_point_id: str) -> bool:
        if self._running:
            raise RuntimeError("Cannot unregister entry points while runtime is running")
        self._core.unregister_entry_point(entry_point_id)
        return self._entry_points.pop(entry_point_id, None) is not None

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start storage, the entry points' streams, the webhook server (when
        ``webhook_routes`` are configured) and the event-driven entry points."""
        if self._running:
            return
        async with self._lock:
            routes = webhook_routes(self._config)  # refused before anything starts
            await self._storage.start()
            for ep_id in self._entry_points:
                self._trackers[ep_id] = StreamDecisionTracker(
                    ep_id, self._storage, self._outcome_aggregator, bus=self._event_bus.bus,
                    publish_run_events=False)
            await self._core.start()
            try:
                if routes:
                    await self._start_webhooks(routes)
            except BaseException:  # e.g. the port is taken: leave nothing half-started
                await self._core.stop()
                self._trackers.clear()
                raise
            for ep_id, spec in self._entry_points.items():
                if spec.trigger_type == "event":
                    self._subscribe_entry_point(ep_id, spec)
            self._running = True
            logger.info("AgentRuntime started with %d streams", len(self._entry_points))

    async def _start_webhooks(self, routes: list[WebhookRoute]) -> None:
        server = WebhookServer(self._publish_webhook, bus=self._event_bus.bus,
                               host=self._config.webhook_host,
                               port=self._config.webhook_port)
        for route in routes:
            server.add_route(route)
        await server.start()
        self._webhook_server = server

    async def _publish_webhook(self, request: WebhookRequest) -> tuple[str, bool]:
        """A webhook request becomes a bus event of stream ``source_id`` (seed 000 has no
        webhook event type: it is a ``custom`` event with ``data["event"]`` naming it)."""
        event_id = request.correlation_id or f"webhook-{uuid.uuid4().hex}"
        await self._event_bus.publish(AgentEvent(
            type=EventType.CUSTOM, stream_id=request.route.entry_point,
            data={"event": "webhook_received", "path": request.path,
                  "method": request.method, "headers": request.headers,
                  "payload": request.payload, "query_params": request.query},
            correlation_id=event_id))
        return event_id, False

    def _subscribe_entry_point(self, ep_id: str, spec: EntryPointSpec) -> None:
        config = spec.trigger_config
        event_types = [EventType(et) for et in config.get("event_types", [])]
        if not event_types:
            logger.warning("Entry point '%s' has trigger_type='event' but no event_types "
                           "in trigger_config", ep_id)
            return

        async def on_event(event: AgentEvent) -> None:
            if self._running and ep_id in self._entry_points:
                await self.trigger(ep_id, {"event": event.to_dict()})

        self._event_subscriptions.append(self._event_bus.subscribe(
            event_types=event_types, handler=on_event,
            filter_stream=config.get("filter_stream"), filter_node=config.get("filter_node")))

    async def stop(self) -> None:
        """Stop triggers and subscriptions, cancel running executions, save state."""
        if not self._running:
            return
        async with self._lock:
            for sub_id in self._event_subscriptions:
                self._event_bus.unsubscribe(sub_id)
            self._event_subscriptions.clear()
            if self._webhook_server is not None:
                await self._webhook_server.stop()
                self._webhook_server = None
            await self._core.stop()
            while self._finishing:
                await asyncio.gather(*self._finishing.values(), return_exceptions=True)
            for tracker in self._trackers.values():
                await tracker.wait_saved()
            self._trackers.clear()
            await self._state_manager.save()
            await self._storage.stop()
            self._running = False
            logger.info("AgentRuntime stopped")

    # ----------------------------------------------------------------- triggers
    async def trigger(
        self,
        entry_point_id: str,
        input_data: dict[str, Any],
        correlation_id: str | None = None,
        session_state: dict[str, Any] | None = None,
    ) -> str:
        """Start an execution; returns its id at once. ``session_state`` (a session's
        ``session_state``: ``memory`` and ``paused_at``) resumes: the state starts as its
        memory and the execution at ``paused_at``. Raises ``RuntimeError`` when not
        running, ``ValueError`` for an unknown entry point."""
        if not self._running:
            raise RuntimeError("AgentRuntime is not running")
        if entry_point_id not in self._entry_points:
            raise ValueError(f"Entry point '{entry_point_id}' not found")
        state = initial_state(input_data, session_state)
        execution_id = await self._core.trigger(entry_point_id, input_data, correlation_id,
                                                state)
        self._executions[execution_id] = entry_point_id
        await self._session_store.write_state(execution_id, session_record(
            execution_id, entry_point_id, self.goal.id, "running", input_data, state,
            correlation_id))
        task = asyncio.get_running_loop().create_task(
            self._finish(execution_id, entry_point_id, input_data, correlation_id),
            name=f"finish {execution_id}")
        self._finishing[execution_id] = task
        task.add_done_callback(lambda _: self._finishing.pop(execution_id, None))
        return execution_id

    async def _finish(self, execution_id: str, entry_point_id: str, input_data: Any,
                      correlation_id: str | None) -> None:
        """After an execution: judge it, persist its session, state and log summary."""
        try:
            result = await self._core.wait_for_execution(execution_id)
            if result is None:
                return
            await self._outcome_aggregator.record_execution(entry_point_id, result)
            session = session_record(execution_id, entry_point_id, self.goal.id, result.status,
                                     input_data, dict(result.state), correlation_id, result)
            await self._session_store.write_state(execution_id, session)
            await self._state_manager.save()
            save_summary = getattr(self._runtime_log_store, "save_summary", None)
            if callable(save_summary):
                saved = save_summary(execution_id, session["result"])
                if inspect.isawaitable(saved):
                    await saved
        except Exception as error:  # persisting must not break the runtime
            logger.error("could not persist execution %s: %r", execution_id, error)
        finally:
            self._executions.pop(execution_id, None)

    async def trigger_and_wait(
        self,
        entry_point_id: str,
        input_data: dict[str, Any],
        timeout: float | None = None,
        session_state: dict[str, Any] | None = None,
    ) -> ExecutionResult | None:
        """Trigger and wait for the result; None after ``timeout`` seconds. With a result,
        the execution's events have reached the subscribers and its session is saved."""
        exec_id = await self.trigger(entry_point_id, input_data, session_state=session_state)
        result = await self._core.wait_for_execution(exec_id, timeout)
        if result is not None:
            await self._settle(exec_id)
        return result

    async def _settle(self, execution_id: str) -> None:
        finishing = self._finishing.get(execution_id)
        if finishing is not None:
            await asyncio.gather(finishing, return_exceptions=True)
        await self._event_bus.settle()

    async def inject_input(self, node_id: str, content: str) -> bool:
        """Deliver user input to the node waiting in ``ctx.request_input``."""
        return await self._core.inject_input(node_id, content)

    async def get_goal_progress(self) -> dict[str, Any]:
        return await self._outcome_aggregator.evaluate_goal_progress()

    async def cancel_execution(self, entry_point_id: str, execution_id: str) -> bool:
        """Cancel a running execution of that entry point; False if not found there."""
        if self._executions.get(execution_id) != entry_point_id:
            return False
        return await self._core.cancel_execution(execution_id)

    # ------------------------------------------------------------------ queries
    def get_entry_points(self) -> list[EntryPointSpec]:
        return list(self._entry_points.values())

    def get_stream(self, entry_point_id: str) -> ExecutionStream | None:
        """The entry point's execution stream while the runtime runs (else None)."""
        return self._core.get_stream(entry_point_id) if self._running else None

    def get_execution_result(self, entry_point_id: str,
                             execution_id: str) -> ExecutionResult | None:
        """The result of a finished execution of that entry point, while kept."""
        if not self._running:
            return None
        result = self._core.get_execution_result(execution_id)
        if result is None or result.entry_point != entry_point_id:
            return None
        return result

    def subscribe_to_events(self, event_types: list[EventType], handler: EventHandler,
                            filter_stream: str | None = None) -> str:
        return self._event_bus.subscribe(event_types=event_types, handler=handler,
                                         filter_stream=filter_stream)

    def unsubscribe_from_events(self, subscription_id: str) -> bool:
        return self._event_bus.unsubscribe(subscription_id)

    def get_stats(self) -> dict[str, Any]:
        core = self._core.get_stats()
        return {
            "running": self._running,
            "entry_points": len(self._entry_points),
            "streams": core["streams"] if self._running else {},
            "goal_id": self.goal.id,
            "outcome_aggregator": self._outcome_aggregator.get_stats(),
            "event_bus": self._event_bus.get_stats(),
            "state_manager": self._state_manager.get_stats(),
        }

    # --------------------------------------------------------------- properties
    @property
    def state_manager(self) -> SharedStateManager:
        return self._state_manager

    @property
    def event_bus(self) -> EventBus:
        return self._event_bus

    @property
    def outcome_aggregator(self) -> OutcomeAggregator:
        return self._outcome_aggregator

    @property
    def webhook_server(self) -> WebhookServer | None:
        return self._webhook_server

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def session_store(self) -> SessionStore:
        """Not in the seed: the sessions under ``storage_path`` (read them after a restart)."""
        return self._session_store

    @property
    def storage(self) -> ConcurrentStorage:
        """Not in the seed: the runs under ``storage_path``."""
        return self._storage

    @property
    def agent_runtime(self) -> CoreRuntime:
        """Not in the seed: the project runtime underneath."""
        return self._core

    # ----------------------------------------------------------------- internals
    def _agent_for(self, spec: EntryPointSpec) -> Callable[[ExecutionContext, Any], Any]:
        async def run_entry_point(ctx: ExecutionContext, input_data: Any) -> Any:
            tracker = self._trackers[spec.id]
            adapter = ExecutionAdapter(tracker, ctx)
            # Hive's NodeContext names, so node code reads them where it always did.
            for name, value in (("runtime", adapter), ("llm", self._llm),
                                ("tools", self._tools), ("tool_executor", self._tool_executor),
                                ("goal", self.goal)):
                setattr(ctx, name, value)
            start_node = ctx.state.pop(RESUME_AT, None) or spec.entry_node
            adapter.start_run(self.goal.id, str(getattr(self.goal, "description", "") or ""),
                              input_data if isinstance(input_data, dict) else None)
            try:
                output = await run_graph(self.graph, ctx, start_node)
            except BaseException as error:
                adapter.end_run(False, str(error) or type(error).__name__)
                raise
            adapter.end_run(True, output_data=output if isinstance(output, dict)
                            else {"output": output})
            return output
        return run_entry_point

def create_agent_runtime(
    graph: Any,
    goal: Any,
    storage_path: str | Path,
    entry_points: list[EntryPointSpec],
    llm: Any = None,
    tools: list[Any] | None = None,
    tool_executor: Callable[..., Any] | None = None,
    config: AgentRuntimeConfig | None = None,
    runtime_log_store: Any = None,
    enable_logging: bool = True,
    checkpoint_config: Any = None,
) -> AgentRuntime:
    """A runtime with its entry points registered (not started); with ``enable_logging``
    and no ``runtime_log_store``, one under ``storage_path/runtime_logs``."""
    if enable_logging and runtime_log_store is None:
        runtime_log_store = RuntimeLogStore(Path(storage_path) / "runtime_logs")
    runtime = AgentRuntime(
        graph=graph, goal=goal, storage_path=storage_path, llm=llm, tools=tools,
        tool_executor=tool_executor, config=config, runtime_log_store=runtime_log_store,
        checkpoint_config=checkpoint_config)
    for spec in entry_points:
        runtime.register_entry_point(spec)
    return runtime
