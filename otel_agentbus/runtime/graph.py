"""A small agent graph: nodes, static and conditional edges, bounded per-node loops.

A node is ``async def node(ctx, state) -> result`` (a plain function works too). It runs
in a loop: returning :data:`CONTINUE` asks for another iteration, anything else ends the
loop with that result. A node still returning ``CONTINUE`` at its ``max_iterations``
publishes ``agent.node.stalled`` and then, with ``on_stall="fail"`` (the default), fails
with :class:`NodeStalledError` (the run fails); with ``on_stall="proceed"`` its result is
``None`` and the graph follows its edges.

After a node, its edges are tried in the order they were added: a static edge always
matches, ``when(result, state)`` guards an edge, and a router ``route(result, state)``
names the next node or returns ``None`` (:data:`END`). No matching edge ends the graph;
the last node's result is the output. ``max_steps`` bounds node visits, so a cycle in the
graph cannot run forever.

Each node visit publishes ``agent.node.loop.started`` {max_iterations}, one
``agent.node.loop.iteration`` {iteration} per iteration, then ``agent.node.loop.completed``
{iterations} or ``agent.node.loop.failed`` {error, error_type}; the telemetry mirror turns
them into ``node`` and ``iteration`` spans, and the iteration span is the current
OpenTelemetry span while the node runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from opentelemetry import context as otel_context

from ..events import Severity
from ..kinds import (
    NODE_LOOP_COMPLETED,
    NODE_LOOP_FAILED,
    NODE_LOOP_ITERATION,
    NODE_LOOP_STARTED,
    NODE_STALLED,
)
from ..runs import error_payload
from ..tracecontext import context_of
from .execution import ExecutionContext


class _Continue:
    """The loop signal; a singleton so no real result can be mistaken for it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "CONTINUE"


CONTINUE: Final = _Continue()
"""Return it from a node to run another iteration of that node."""
END: Final = None
"""What a router returns to end the graph."""

NodeFunction = Callable[[ExecutionContext, dict[str, Any]], Any]
Condition = Callable[[Any, dict[str, Any]], bool]
Router = Callable[[Any, dict[str, Any]], "str | None"]
StallPolicy = Literal["fail", "proceed"]


class GraphError(ValueError):
    """An invalid graph, or a router naming a node that does not exist."""


class NodeStalledError(RuntimeError):
    """A node still asked to continue when it reached ``max_iterations``."""


class GraphStepLimitError(RuntimeError):
    """The graph visited more than ``max_steps`` nodes (a cycle that never exits)."""


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    fn: NodeFunction
    max_iterations: int = 10
    on_stall: StallPolicy = "fail"
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise GraphError(f"node id must be a non-empty str, got {self.id!r}")
        if not callable(self.fn):
            raise GraphError(f"node {self.id!r}: fn must be callable, got {self.fn!r}")
        if (not isinstance(self.max_iterations, int) or isinstance(self.max_iterations, bool)
                or self.max_iterations < 1):
            raise GraphError(f"node {self.id!r}: max_iterations must be an int >= 1, "
                             f"got {self.max_iterations!r}")
        if self.on_stall not in ("fail", "proceed"):
            raise GraphError(f"node {self.id!r}: on_stall must be 'fail' or 'proceed', "
                             f"got {self.on_stall!r}")


@dataclass(frozen=True, slots=True)
class Edge:
    """``source -> target`` (guarded by ``when`` if given), or ``source -> route(...)``."""

    source: str
    target: str | None = None
    when: Condition | None = None
    route: Router | None = None

    def __post_init__(self) -> None:
        if (self.target is None) == (self.route is None):
            raise GraphError(f"edge from {self.source!r} needs exactly one of target or route")
        if self.route is not None and self.when is not None:
            raise GraphError(f"edge from {self.source!r}: a router takes no 'when'")

    def next(self, result: Any, state: dict[str, Any]) -> str | None:
        if self.route is not None:
            return self.route(result, state)
        if self.when is None or self.when(result, state):
            return self.target
        return None


class Graph:
    """Nodes and edges; :meth:`run` walks them from an entry node."""

    def __init__(self, id: str = "graph", *, nodes: Iterable[Node] = (),
                 edges: Iterable[Edge] = (), max_steps: int = 100) -> None:
        if not isinstance(id, str) or not id:
            raise GraphError(f"graph id must be a non-empty str, got {id!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise GraphError(f"max_steps must be an int >= 1, got {max_steps!r}")
        self.id = id
        self.max_steps = max_steps
        self._nodes: dict[str, Node] = {}
        self._edges: dict[str, list[Edge]] = {}
        for node in nodes:
            self.add_node(node)
        for edge in edges:
            self._add(edge)

    # ---------------------------------------------------------------- building
    def add_node(self, node: Node | str, fn: NodeFunction | None = None, *,
                 max_iterations: int = 10, on_stall: StallPolicy = "fail",
                 description: str = "") -> Node:
        """Add ``Node(...)``, or build one from an id and a function."""
        if not isinstance(node, Node):
            if fn is None:
                raise GraphError(f"node {node!r} needs a function")
            node = Node(node, fn, max_iterations, on_stall, description)
        if node.id in self._nodes:
            raise GraphError(f"node {node.id!r} is already in graph {self.id!r}")
        self._nodes[node.id] = node
        return node

    def node(self, id: str | None = None, *, max_iterations: int = 10,
             on_stall: StallPolicy = "fail") -> Callable[[NodeFunction], NodeFunction]:
        """Decorator form of :meth:`add_node`; the id defaults to the function's name."""
        def register(fn: NodeFunction) -> NodeFunction:
            node_id = id or str(getattr(fn, "__name__", ""))
            self.add_node(node_id, fn,
                          max_iterations=max_iterations, on_stall=on_stall)
            return fn
        return register

    def add_edge(self, source: str, target: str, *, when: Condition | None = None) -> Graph:
        """A static edge, or a conditional one when ``when(result, state)`` is given."""
        return self._add(Edge(source, target, when=when))

    def add_router(self, source: str, route: Router) -> Graph:
        """A conditional edge whose function picks the next node (``None`` ends)."""
        return self._add(Edge(source, route=route))

    def _add(self, edge: Edge) -> Graph:
        for end in (edge.source, edge.target):
            if end is not None and end not in self._nodes:
                raise GraphError(f"edge {edge.source!r} -> {edge.target!r}: "
                                 f"no node {end!r} in graph {self.id!r} (add nodes first)")
        self._edges.setdefault(edge.source, []).append(edge)
        return self

    # ----------------------------------------------------------------- queries
    def get_node(self, node_id: str) -> Node | None:
        return self._nodes.get(node_id)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return tuple(self._nodes.values())

    def edges_from(self, source: str) -> tuple[Edge, ...]:
        return tuple(self._edges.get(source, ()))

    def next_node(self, source: str, result: Any, state: dict[str, Any]) -> str | None:
        for edge in self._edges.get(source, ()):
            target = edge.next(result, state)
            if target is None:
                continue
            if target not in self._nodes:
                raise GraphError(f"edge from {source!r} routed to unknown node {target!r}")
            return target
        return None

    # --------------------------------------------------------------- execution
    async def run(self, ctx: ExecutionContext, entry_node: str,
                  state: dict[str, Any]) -> Any:
        """Walk the graph from ``entry_node``; returns the last node's result."""
        if entry_node not in self._nodes:
            raise GraphError(f"entry node {entry_node!r} is not in graph {self.id!r}")
        current: str | None = entry_node
        output: Any = None
        steps = 0
        while current is not None:
            steps += 1
            if steps > self.max_steps:
                raise GraphStepLimitError(
                    f"graph {self.id!r} visited more than {self.max_steps} nodes")
            node = self._nodes[current]
            ctx.path.append(node.id)
            output = await self._run_node(ctx, node, state)
            ctx.results[node.id] = output
            current = self.next_node(node.id, output, state)
        return output

    async def _run_node(self, ctx: ExecutionContext, node: Node,
                        state: dict[str, Any]) -> Any:
        run = ctx.run
        run.publish(NODE_LOOP_STARTED, {"max_iterations": node.max_iterations},
                    node_id=node.id)
        ctx.node_id = node.id
        iteration = 0
        result: Any = None
        try:
            while True:
                iteration += 1
                ctx.iteration = iteration
                started = run.publish(NODE_LOOP_ITERATION, {"iteration": iteration},
                                      node_id=node.id)
                # The iteration span is current while the node runs (attached and
                # detached in this frame), so plain OpenTelemetry spans nest under it.
                token = otel_context.attach(context_of(started))
                try:
                    result = node.fn(ctx, state)
                    if inspect.isawaitable(result):
                        result = await result
                finally:
                    otel_context.detach(token)
                if result is not CONTINUE:
                    break
                if iteration >= node.max_iterations:
                    run.publish(NODE_STALLED,
                                {"iterations": iteration, "max_iterations": node.max_iterations,
                                 "reason": "max_iterations reached"},
                                node_id=node.id, severity=Severity.WARN)
                    if node.on_stall == "fail":
                        raise NodeStalledError(
                            f"node {node.id!r} still continuing after {iteration} iterations")
                    result = None
                    break
        except Exception as error:
            run.publish(NODE_LOOP_FAILED,
                        {**error_payload(error), "iterations": iteration},
                        node_id=node.id, severity=Severity.ERROR)
            raise
        finally:
            ctx.node_id = None
            ctx.iteration = None
        run.publish(NODE_LOOP_COMPLETED, {"iterations": iteration}, node_id=node.id)
        return result
