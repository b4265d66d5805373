"""How a seed graph's nodes run on the project's graph runner.

Our :class:`otel_agentbus.runtime.Graph` runs as it is, with its edges and node loops.
Any other graph (Hive's ``GraphSpec`` is outside the seeds) runs its entry node only,
through a one-node ``Graph``, so it still gets node and iteration spans: the node must be
callable as ``node(ctx, state)`` or have such an ``fn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...runtime.execution import ExecutionContext
from ...runtime.graph import Graph, Node
from .tracker import StreamDecisionTracker, StreamRuntimeAdapter


class ExecutionAdapter(StreamRuntimeAdapter):
    """``ctx.runtime``: decisions default to the graph node running now."""

    def __init__(self, tracker: StreamDecisionTracker, ctx: ExecutionContext) -> None:
        super().__init__(tracker, ctx.execution_id)
        self._ctx = ctx

    def _node(self, node_id: str | None) -> str:
        return node_id or self._ctx.node_id or self._current_node


def node_function(graph: Any, node_id: str) -> Callable[..., Any] | None:
    """The callable of ``graph.get_node(node_id)``; None when absent or not callable."""
    node = graph.get_node(node_id)
    if node is None:
        return None
    if callable(node):
        return node  # type: ignore[no-any-return]
    fn = getattr(node, "fn", None)
    return fn if callable(fn) else None


def can_run(graph: Any, node_id: str) -> bool:
    return isinstance(graph, Graph) or node_function(graph, node_id) is not None


async def run_graph(graph: Any, ctx: ExecutionContext, node_id: str) -> Any:
    """Run ``graph`` from ``node_id`` on ``ctx.state``; the last node's result."""
    if isinstance(graph, Graph):
        return await graph.run(ctx, node_id, ctx.state)
    fn = node_function(graph, node_id)
    if fn is None:
        raise ValueError(f"Entry node '{node_id}' not found in graph or not callable")
    single = Graph(str(getattr(graph, "id", "") or "graph"), nodes=[Node(node_id, fn)])
    return await single.run(ctx, node_id, ctx.state)
