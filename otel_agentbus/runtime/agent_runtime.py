"""AgentRuntime: entry points, concurrent executions, webhooks and goal progress (seed 001).

Register entry points, ``start()``, then trigger executions by hand (``trigger``,
``trigger_and_wait``), from bus events, or over HTTP. Every execution is one run
(``RunScope``): ``agent.run.started`` then exactly one of ``completed``, ``failed`` or
``cancelled``, so the telemetry mirror draws it as one trace. What runs is a plain async
function ``agent(ctx, input)`` or a :class:`~otel_agentbus.runtime.graph.Graph` from an
entry node.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..bus import EventBus
from ..events import Event, EventValidationError, Scope, Source, freeze_json, new_event_id
from ..kinds import STREAM_STARTED, STREAM_STOPPED
from ..runs import RunHandle, RunScope, json_safe
from ..subscription import Handler, Subscription
from .entry_points import (
    EntryPoint,
    EntryPointError,
    event_subscription,
    validate_entry_point,
    webhook_route,
)
from .execution import (
    AgentFunction,
    ExecutionContext,
    ExecutionRejectedError,
    ExecutionResult,
    ExecutionStatus,
    InputBroker,
    RuntimeNotRunningError,
    UnknownEntryPointError,
)
from .goals import Goal, GoalTracker, empty_progress
from .graph import Graph
from .retention import ExpiringStore
from .streams import ExecutionStream
from .webhooks import DEFAULT_MAX_BODY, WebhookRequest, WebhookServer

logger = logging.getLogger("otel_agentbus.runtime")

STOP_REASON = "runtime_stopped"


@dataclass
class AgentRuntimeConfig:
    """Limits and the webhook server's address (it starts only for webhook entry points)."""

    execution_result_max: int = 1000
    execution_result_ttl_seconds: float | None = None
    idempotency_max: int = 10_000
    idempotency_ttl_seconds: float | None = 24 * 3600.0
    max_history: int = 1000
    """History size of the bus the runtime creates when given none."""
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 0
    """0 picks a free port (``runtime.webhook_port`` tells which)."""
    webhook_max_body_bytes: int = DEFAULT_MAX_BODY
    webhook_read_timeout: float = 10.0
    stop_timeout: float = 5.0
    """How long ``stop()`` waits for cancelled executions to finish."""
    clock: Callable[[], float] = field(default=time.monotonic)
    """The clock of result and idempotency-key expiry (injectable for tests)."""


@dataclass(eq=False)
class _Execution:
    id: str
    stream: ExecutionStream
    input: Any
    done: asyncio.Future[ExecutionResult]
    correlation_id: str | None = None
    session_state: dict[str, Any] | None = None
    session_id: str | None = None
    traceparent: str | None = None
    task: asyncio.Task[ExecutionResult] | None = None
    handle: RunHandle | None = None
    cancel_reason: str | None = None
    accepted_at: float = field(default_factory=time.time)


def _event_safe(value: Any) -> Any:
    """``value`` if a run event can carry it, else its ``repr`` (never fails a run)."""
    value = json_safe(value)
    try:
        freeze_json(value)
    except EventValidationError:
        return repr(value)
    return value


class AgentRuntime:
    """Runs an agent through named entry points, many executions at once.

    ``bus`` defaults to a new :class:`EventBus`; ``goal`` enables goal tracking;
    ``graph`` is what ``entry_node`` entry points run; ``agent`` is the default function
    for entry points that name neither; ``name`` is the agent's name on runs and spans.
    """

    def __init__(self, bus: EventBus | None = None, goal: Goal | None = None, *,
                 graph: Graph | None = None, agent: AgentFunction | None = None,
                 name: str | None = None, config: AgentRuntimeConfig | None = None) -> None:
        self._config = config or AgentRuntimeConfig()
        self._bus = bus if bus is not None else EventBus(history_size=self._config.max_history)
        self.goal = goal
        self.graph = graph
        if agent is not None and not callable(agent):
            raise TypeError(f"agent must be callable, got {agent!r}")
        self._agent = agent
        self.name = name or (graph.id if graph is not None else None) or "agent"
        self._entry_points: dict[str, EntryPoint] = {}
        self._streams: dict[str, ExecutionStream] = {}
        self._active: dict[str, _Execution] = {}
        clock = self._config.clock
        self._results: ExpiringStore[str, ExecutionResult] = ExpiringStore(
            self._config.execution_result_max, self._config.execution_result_ttl_seconds, clock)
        self._idempotency: ExpiringStore[tuple[str, str], str] = ExpiringStore(
            self._config.idempotency_max, self._config.idempotency_ttl_seconds, clock)
        self._broker = InputBroker()
        self._goals = GoalTracker(goal, self._bus) if goal is not None else None
        self._shared_state: dict[str, Any] = {}
        self._subscriptions: list[Subscription] = []
        self._webhook_server: WebhookServer | None = None
        self._running = False
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------ entry points
    def register_entry_point(self, spec: EntryPoint) -> None:
        """Add an entry point; only while stopped. Raises ``EntryPointError`` (a
        ``ValueError``) for a duplicate id or path, an unknown entry node, bad limits."""
        if self._running:
            raise RuntimeError(f"cannot register entry point {spec.id!r} while the runtime "
                               "is running: stop() it first")
        if spec.id in self._entry_points:
            raise EntryPointError(f"entry point {spec.id!r} is already registered")
        validate_entry_point(spec, self.graph, self._agent)
        if spec.trigger_type == "webhook":
            path = webhook_route(spec).path
            for other in self._entry_points.values():
                if other.trigger_type == "webhook" and webhook_route(other).path == path:
                    raise EntryPointError(f"entry point {spec.id!r}: webhook path {path!r} is "
                                          f"already used by {other.id!r}")
        self._entry_points[spec.id] = spec
        self._streams[spec.id] = ExecutionStream(spec)

    def unregister_entry_point(self, entry_point_id: str) -> bool:
        if self._running:
            raise RuntimeError("cannot unregister entry points while the runtime is running")
        self._streams.pop(entry_point_id, None)
        return self._entry_points.pop(entry_point_id, None) is not None

    def get_entry_points(self) -> list[EntryPoint]:
        return list(self._entry_points.values())

    def get_stream(self, entry_point_id: str) -> ExecutionStream | None:
        return self._streams.get(entry_point_id)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the webhook server and event subscriptions; then triggers are accepted."""
        async with self._lock:
            if self._running:
                return
            routes = [webhook_route(spec) for spec in self._entry_points.values()
                      if spec.trigger_type == "webhook"]
            if routes:
                server = WebhookServer(
                    self._dispatch_webhook, bus=self._bus, host=self._config.webhook_host,
                    port=self._config.webhook_port,
                    max_body_bytes=self._config.webhook_max_body_bytes,
                    read_timeout=self._config.webhook_read_timeout)
                for route in routes:
                    server.add_route(route)
                await server.start()
                self._webhook_server = server
            for spec in self._entry_points.values():
                if spec.trigger_type == "event":
                    self._subscriptions.append(self._bus.subscribe(
                        self._event_handler(spec.id), name=f"entry-point:{spec.id}",
                        **event_subscription(spec)))
            if self._goals is not None:
                self._goals.attach()
            self._running = True
            for spec in self._entry_points.values():
                self._bus.publish_nowait(Event(
                    STREAM_STARTED, {"entry_point": spec.id,
                                             "trigger_type": spec.trigger_type},
                    scope=Scope(stream_id=spec.id, agent=self.name),
                    source=Source("runtime", self.name)))

    async def stop(self) -> None:
        """Refuse new triggers, close subscriptions and the webhook server, cancel running
        executions (reason ``runtime_stopped``) and wait for them (``stop_timeout``)."""
        async with self._lock:
            if not self._running:
                return
            self._running = False
            for sub in self._subscriptions:
                sub.close()
            self._subscriptions.clear()
            if self._goals is not None:
                self._goals.detach()
            server, self._webhook_server = self._webhook_server, None
            if server is not None:
                await server.stop(self._config.stop_timeout)
            records = list(self._active.values())
            for record in records:
                self._request_cancel(record, STOP_REASON)
            tasks = [r.task for r in records if r.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=self._config.stop_timeout)
            if not self._bus.closed:
                for spec in self._entry_points.values():
                    self._bus.publish_nowait(Event(
                        STREAM_STOPPED, {"entry_point": spec.id},
                        scope=Scope(stream_id=spec.id, agent=self.name),
                        source=Source("runtime", self.name)))

    async def __aenter__(self) -> AgentRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- triggers
    async def trigger(self, entry_point_id: str, input: Any = None,
                      correlation_id: str | None = None,
                      session_state: dict[str, Any] | None = None,
                      idempotency_key: str | None = None, *, session_id: str | None = None,
                      traceparent: str | None = None) -> str:
        """Start an execution and return its id at once (it runs in its own task).

        The same ``idempotency_key`` on the same entry point returns the first
        execution's id and runs nothing. Raises ``RuntimeNotRunningError``,
        ``UnknownEntryPointError`` or ``ExecutionRejectedError`` (queue full).
        """
        execution_id, _ = self._submit(
            entry_point_id, input, correlation_id=correlation_id, session_state=session_state,
            idempotency_key=idempotency_key, session_id=session_id, traceparent=traceparent)
        return execution_id

    async def trigger_and_wait(self, entry_point_id: str, input: Any = None,
                               timeout: float | None = None,
                               session_state: dict[str, Any] | None = None, *,
                               correlation_id: str | None = None,
                               idempotency_key: str | None = None,
                               session_id: str | None = None) -> ExecutionResult | None:
        """Trigger and wait for the result; ``None`` after ``timeout`` seconds (the
        execution goes on: cancel it with ``cancel_execution`` if that is wanted)."""
        execution_id = await self.trigger(
            entry_point_id, input, correlation_id, session_state, idempotency_key,
            session_id=session_id)
        return await self.wait_for_execution(execution_id, timeout)

    async def wait_for_execution(self, execution_id: str,
                                 timeout: float | None = None) -> ExecutionResult | None:
        """The execution's result once it ends; ``None`` on timeout or if unknown."""
        record = self._active.get(execution_id)
        if record is None:
            return self._results.get(execution_id)
        try:
            return await asyncio.wait_for(asyncio.shield(record.done), timeout)
        except TimeoutError:
            return None

    async def cancel_execution(self, execution_id: str, reason: str = "cancelled", *,
                               wait: float | None = 5.0) -> bool:
        """Cancel a running or queued execution (its task is cancelled and the run ends
        ``cancelled`` with ``reason``); waits up to ``wait`` seconds for it to end.
        False when it is unknown or already over."""
        record = self._active.get(execution_id)
        if record is None or record.done.done():
            return False
        self._request_cancel(record, reason)
        if wait and record.task is not None and record.task is not asyncio.current_task():
            await asyncio.wait([record.task], timeout=wait)
        return True

    async def inject_input(self, node_id: str, content: str,
                           execution_id: str | None = None) -> bool:
        """Deliver ``content`` to the node waiting in ``ctx.request_input`` (the oldest
        one, or the one of ``execution_id``); False when no such node is waiting."""
        return self._broker.deliver(node_id, content, execution_id)

    def waiting_for_input(self) -> list[tuple[str, str]]:
        """``(execution_id, node_id)`` of every node waiting for client input."""
        return self._broker.waiting()

    # ------------------------------------------------------------------ queries
    def get_execution_result(self, execution_id: str) -> ExecutionResult | None:
        """A finished execution's result, while kept (``execution_result_max``/``_ttl``)."""
        return self._results.get(execution_id)

    def active_executions(self) -> list[str]:
        return list(self._active)

    async def get_goal_progress(self) -> dict[str, Any]:
        """Overall progress, per-criterion status, constraint violations, metrics."""
        return self._goals.progress() if self._goals is not None else empty_progress()

    def get_stats(self) -> dict[str, Any]:
        streams = {ep_id: stream.stats() for ep_id, stream in self._streams.items()}
        totals = {key: sum(s[key] for s in streams.values()) for key in (
            "triggered", "completed", "failed", "cancelled", "rejected", "deduplicated",
            "running", "queued")}
        bus = self._bus.stats()
        return {
            "running": self._running,
            "name": self.name,
            "entry_points": len(self._entry_points),
            "goal_id": self.goal.id if self.goal is not None else None,
            "active_executions": len(self._active),
            "results_kept": len(self._results),
            "results_evicted": self._results.evicted,
            "totals": totals,
            "streams": streams,
            "input": {"requested": self._broker.requested, "delivered": self._broker.delivered,
                      "waiting": len(self._broker.waiting())},
            "webhook": self._webhook_server.stats() if self._webhook_server else None,
            "goal_progress": (self._goals.progress()["overall_progress"]
                              if self._goals is not None else None),
            "event_bus": {"published": bus.published, "dropped": bus.dropped,
                          "subscribers": bus.subscribers},
        }

    def subscribe_to_events(self, kinds: str | Iterable[str], handler: Handler,
                            filter_stream: str | None = None) -> Subscription:
        """Seed 001's helper: a bus subscription, optionally to one entry point's runs."""
        return self._bus.subscribe(handler, kinds=kinds, stream_id=filter_stream)

    def unsubscribe_from_events(self, subscription: Subscription) -> bool:
        return self._bus.unsubscribe(subscription)

    @property
    def bus(self) -> EventBus:
        return self._bus

    event_bus = bus

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def webhook_server(self) -> WebhookServer | None:
        return self._webhook_server

    @property
    def webhook_port(self) -> int | None:
        return self._webhook_server.port if self._webhook_server is not None else None

    @property
    def goal_tracker(self) -> GoalTracker | None:
        return self._goals

    @property
    def shared_state(self) -> dict[str, Any]:
        """The ``ctx.shared`` dict of ``shared`` entry points."""
        return self._shared_state

    # ----------------------------------------------------------------- internals
    def _submit(self, entry_point_id: str, input: Any, *, correlation_id: str | None = None,
                session_state: dict[str, Any] | None = None,
                idempotency_key: str | None = None, session_id: str | None = None,
                traceparent: str | None = None) -> tuple[str, bool]:
        """Admit and start an execution; ``(execution_id, replayed)``. Never awaits."""
        if not self._running:
            raise RuntimeNotRunningError("the agent runtime is not running: call start()")
        stream = self._streams.get(entry_point_id)
        if stream is None:
            raise UnknownEntryPointError(f"no entry point {entry_point_id!r} (registered: "
                                         f"{sorted(self._entry_points)})")
        key = (entry_point_id, str(idempotency_key)) if idempotency_key is not None else None
        if key is not None:
            existing = self._idempotency.get(key)
            if existing is not None:
                stream.deduplicated += 1
                return existing, True
        stream.admit()
        loop = asyncio.get_running_loop()
        record = _Execution(
            id=f"exec-{new_event_id()}", stream=stream, input=input, done=loop.create_future(),
            correlation_id=correlation_id, session_state=session_state, session_id=session_id,
            traceparent=traceparent)
        self._active[record.id] = record
        if key is not None:
            self._idempotency.put(key, record.id)
        record.task = loop.create_task(self._execute(record), name=f"execution {record.id}")
        return record.id, False

    def _request_cancel(self, record: _Execution, reason: str) -> None:
        if record.done.done():
            return
        if record.cancel_reason is None:
            record.cancel_reason = reason
        if record.handle is None:
            # Not started yet: cancelling the task now would skip the run's events
            # entirely, so the task cancels itself as soon as its run has started.
            return
        record.handle.cancel_reason = record.cancel_reason
        if record.task is not None:
            record.task.cancel()

    async def _execute(self, record: _Execution) -> ExecutionResult:
        spec = record.stream.spec
        uses_graph = spec.agent is None and spec.entry_node is not None
        state = dict(record.session_state or {})
        ctx: ExecutionContext | None = None
        result: ExecutionResult | None = None
        scope = RunScope(
            self._bus, self.name, run_id=record.id, session_id=record.session_id,
            stream_id=spec.id, graph_id=self.graph.id if uses_graph and self.graph else None,
            input=_event_safe(record.input), traceparent=record.traceparent,
            correlation_id=record.correlation_id)
        try:
            async with scope as handle:
                record.handle = handle
                if record.cancel_reason is not None:  # cancelled before it started
                    handle.cancel_reason = record.cancel_reason
                    raise asyncio.CancelledError
                ctx = ExecutionContext(
                    run=handle, entry_point=spec.id, input=record.input, state=state,
                    shared=self._shared_state if spec.isolation_level == "shared" else {},
                    broker=self._broker, correlation_id=record.correlation_id,
                    default_node=spec.entry_node)
                async with record.stream.slot():
                    timer = (asyncio.get_running_loop().call_later(
                        spec.timeout, self._request_cancel, record, "timeout")
                        if spec.timeout is not None else None)
                    try:
                        output = await self._invoke(spec, ctx, record.input, state)
                    except Exception as error:
                        result = self._result(record, "failed", ctx, error=error)
                        self._observe(result, handle)
                        raise
                    finally:
                        if timer is not None:
                            timer.cancel()
                handle.output = _event_safe(output)
                result = self._result(record, "completed", ctx, output=output)
                self._observe(result, handle)
        except asyncio.CancelledError:
            result = self._result(record, "cancelled", ctx)
            raise
        except Exception as error:
            if result is None:  # failed before the agent ran (e.g. queue timeout)
                result = self._result(record, "failed", ctx, error=error)
        finally:
            if result is None:  # KeyboardInterrupt, SystemExit: still end the record
                result = self._result(record, "cancelled", ctx)
            self._finish(record, result)
        return result

    async def _invoke(self, spec: EntryPoint, ctx: ExecutionContext, input: Any,
                      state: dict[str, Any]) -> Any:
        if spec.agent is None and spec.entry_node is not None:
            assert self.graph is not None  # checked at registration
            return await self.graph.run(ctx, spec.entry_node, state)
        agent = spec.agent or self._agent
        assert agent is not None  # checked at registration
        output = agent(ctx, input)
        if inspect.isawaitable(output):
            output = await output
        return output

    def _result(self, record: _Execution, status: ExecutionStatus,
                ctx: ExecutionContext | None, *, output: Any = None,
                error: BaseException | None = None) -> ExecutionResult:
        if status == "cancelled":
            message: str | None = record.cancel_reason or "cancelled"
            error_type: str | None = "CancelledError"
        elif error is not None:
            message, error_type = str(error) or type(error).__name__, type(error).__name__
        else:
            message = error_type = None
        return ExecutionResult(
            execution_id=record.id, entry_point=record.stream.id, status=status,
            output=output, error=message, error_type=error_type,
            path=tuple(ctx.path) if ctx is not None else (),
            state=dict(ctx.state) if ctx is not None else {},
            correlation_id=record.correlation_id, started_at=record.accepted_at,
            ended_at=time.time())

    def _observe(self, result: ExecutionResult, handle: RunHandle) -> None:
        if self._goals is not None:
            self._goals.observe_execution(result, handle)

    def _finish(self, record: _Execution, result: ExecutionResult) -> None:
        record.stream.finished(result.status)
        self._active.pop(record.id, None)
        self._results.put(record.id, result)
        if not record.done.done():
            record.done.set_result(result)

    def _event_handler(self, entry_point_id: str) -> Callable[[Event], None]:
        def on_event(event: Event) -> None:
            # Events of this entry point's own runs never re-trigger it (no feedback loop).
            if not self._running or event.scope.stream_id == entry_point_id:
                return
            try:
                self._submit(entry_point_id, {"event": event.to_dict()},
                             correlation_id=event.correlation.correlation_id)
            except (ExecutionRejectedError, RuntimeNotRunningError) as error:
                logger.warning("event %s did not trigger %r: %s", event.kind,
                               entry_point_id, error)
        return on_event

    async def _dispatch_webhook(self, request: WebhookRequest) -> tuple[str, bool]:
        return self._submit(
            request.route.entry_point, request.as_input(),
            idempotency_key=request.idempotency_key, traceparent=request.traceparent,
            correlation_id=request.correlation_id)


def create_agent_runtime(entry_points: Iterable[EntryPoint], *, bus: EventBus | None = None,
                         goal: Goal | None = None, graph: Graph | None = None,
                         agent: AgentFunction | None = None, name: str | None = None,
                         config: AgentRuntimeConfig | None = None) -> AgentRuntime:
    """Seed 001's factory: a runtime with its entry points registered (not started)."""
    runtime = AgentRuntime(bus, goal, graph=graph, agent=agent, name=name, config=config)
    for spec in entry_points:
        runtime.register_entry_point(spec)
    return runtime
