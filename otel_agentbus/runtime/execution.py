"""What one execution sees and leaves behind.

``ExecutionContext`` is the ``ctx`` every agent function and graph node receives: the
run's identity, its state, and ``request_input`` for nodes that wait on the client.
``ExecutionResult`` is what ``trigger_and_wait`` returns. ``InputBroker`` pairs a waiting
node with ``AgentRuntime.inject_input``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..bus import EventBus
from ..events import Event, Severity
from ..kinds import CLIENT_INPUT_RECEIVED, CLIENT_INPUT_REQUESTED, CLIENT_OUTPUT_DELTA
from ..runs import RunHandle


class RuntimeNotRunningError(RuntimeError):
    """A trigger while the runtime is stopped."""


class UnknownEntryPointError(ValueError):
    """A trigger of an entry point that was never registered."""


class ExecutionRejectedError(RuntimeError):
    """The entry point is at ``max_concurrent`` and its queue (``max_queued``) is full."""


class ExecutionQueueTimeoutError(TimeoutError):
    """An execution waited longer than its entry point's ``queue_timeout`` for a slot."""


ExecutionStatus = Literal["completed", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """How one execution ended. ``path`` lists the graph nodes visited, in order."""

    execution_id: str
    entry_point: str
    status: ExecutionStatus
    output: Any = None
    error: str | None = None
    error_type: str | None = None
    path: tuple[str, ...] = ()
    state: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    started_at: float = 0.0
    """Unix time (seconds) the execution was accepted."""
    ended_at: float = 0.0

    @property
    def success(self) -> bool:
        return self.status == "completed"

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


AgentFunction = Callable[["ExecutionContext", Any], Awaitable[Any]]
"""``async def agent(ctx, input) -> output``: the simplest thing a runtime runs."""


class _Waiter:
    __slots__ = ("future", "handle", "node_id")

    def __init__(self, handle: RunHandle, node_id: str, future: asyncio.Future[str]) -> None:
        self.handle = handle
        self.node_id = node_id
        self.future = future


class InputBroker:
    """Nodes waiting for client input, by node id, first come first served."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[_Waiter]] = {}
        self.requested = 0
        self.delivered = 0

    async def request(self, handle: RunHandle, node_id: str, prompt: str,
                      timeout: float | None) -> str:
        """Publish ``agent.client.input.requested`` and wait for :meth:`deliver`."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(handle, node_id, future)
        self._waiting.setdefault(node_id, []).append(waiter)
        self.requested += 1
        try:
            handle.publish(CLIENT_INPUT_REQUESTED, {"prompt": prompt}, node_id=node_id)
            if timeout is None:
                return await future
            return await asyncio.wait_for(future, timeout)
        finally:
            queue = self._waiting.get(node_id)
            if queue is not None and waiter in queue:
                queue.remove(waiter)
                if not queue:
                    del self._waiting[node_id]

    def deliver(self, node_id: str, content: str, execution_id: str | None = None) -> bool:
        """Hand ``content`` to the oldest node ``node_id`` waiting (in that execution)."""
        for waiter in list(self._waiting.get(node_id, ())):
            if execution_id is not None and waiter.handle.run_id != execution_id:
                continue
            if waiter.future.done():
                continue
            waiter.handle.publish(CLIENT_INPUT_RECEIVED, {"content": content},
                                  node_id=node_id)
            waiter.future.set_result(content)
            self.delivered += 1
            return True
        return False

    def waiting(self) -> list[tuple[str, str]]:
        """``(execution_id, node_id)`` of every node waiting now."""
        return [(w.handle.run_id, node_id) for node_id, queue in self._waiting.items()
                for w in queue if not w.future.done()]


class ExecutionContext:
    """The ``ctx`` of one execution.

    ``state`` starts as a copy of the trigger's ``session_state`` and is what graph nodes
    share; ``shared`` is one dict for every execution of a ``shared`` entry point (a fresh
    one for ``isolated``). ``node_id`` and ``iteration`` are set while a graph node runs.
    """

    def __init__(self, *, run: RunHandle, entry_point: str, input: Any,
                 state: dict[str, Any], shared: dict[str, Any], broker: InputBroker,
                 correlation_id: str | None = None, default_node: str | None = None) -> None:
        self.run = run
        self.entry_point = entry_point
        self.input = input
        self.state = state
        self.shared = shared
        self.correlation_id = correlation_id
        self.node_id: str | None = None
        self.iteration: int | None = None
        self.results: dict[str, Any] = {}
        """The last result of each graph node that has run."""
        self.path: list[str] = []
        """Graph nodes visited so far, in order."""
        self._broker = broker
        self._default_node = default_node or entry_point

    @property
    def execution_id(self) -> str:
        return self.run.run_id

    @property
    def bus(self) -> EventBus:
        return self.run.bus

    async def request_input(self, prompt: str = "", *, node_id: str | None = None,
                            timeout: float | None = None) -> str:
        """Wait until ``AgentRuntime.inject_input(node_id, content)`` delivers; returns it.

        The node is this graph node, else the entry point's id (plain agent functions).
        Raises ``TimeoutError`` after ``timeout`` seconds.
        """
        node = node_id or self.node_id or self._default_node
        return await self._broker.request(self.run, node, prompt, timeout)

    def publish(self, kind: str, payload: Mapping[str, Any] | None = None, *,
                severity: Severity | str = Severity.INFO) -> Event:
        """Publish an event of this execution, in the current node's scope."""
        return self.run.publish(kind, payload, node_id=self.node_id, severity=severity)

    def emit_output(self, text: str) -> Event:
        """Stream text to the client (``agent.client.output.delta``, droppable)."""
        return self.publish(CLIENT_OUTPUT_DELTA, {"content": text})
