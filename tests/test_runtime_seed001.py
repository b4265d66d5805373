"""Seed 001's AgentRuntime docstring example on the project's own runtime API.

Adapted where the project's names differ: this runtime keeps no storage and calls no LLM
itself (``storage_path`` and ``llm`` go), the graph and goal are built here, and the
test waits for both executions before reading the progress. The example verbatim, on the
seed's own signatures, is ``test_conformance_hive_001.py`` (``otel_agentbus.compat.hive``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from otel_agentbus.runtime.agent_runtime import AgentRuntime
from otel_agentbus.runtime.entry_points import EntryPointSpec
from otel_agentbus.runtime.execution import ExecutionContext, ExecutionResult
from otel_agentbus.runtime.goals import Constraint, Criterion, Goal
from otel_agentbus.runtime.graph import Graph, Node


async def process_webhook(ctx: ExecutionContext, state: dict[str, Any]) -> dict[str, Any]:
    return {"ticket_id": ctx.input["ticket_id"], "status": "triaged"}


async def process_request(ctx: ExecutionContext, state: dict[str, Any]) -> dict[str, Any]:
    return {"answer": f"here is help with {ctx.input['query']!r}"}


support_agent_graph = Graph("support-agent", nodes=[
    Node("process-webhook", process_webhook),
    Node("process-request", process_request),
])


def triaged(result: ExecutionResult) -> bool | None:
    return result.success and result.output.get("status") == "triaged"


support_agent_goal = Goal(
    id="resolve-support-requests",
    description="Triage every ticket and answer every request",
    success_criteria=[
        Criterion("tickets-triaged", "Webhook tickets are triaged", check=triaged,
                  entry_point="webhook"),
        Criterion("requests-answered", "API requests get an answer", entry_point="api"),
    ],
    constraints=[
        Constraint("fast", "An execution takes under a minute",
                   check=lambda result: result.duration_s < 60),
    ],
)


async def test_seed_001_docstring_example() -> None:
    # Create runtime
    runtime = AgentRuntime(
        graph=support_agent_graph,
        goal=support_agent_goal,
    )

    # Register entry points
    runtime.register_entry_point(EntryPointSpec(
        id="webhook",
        name="Zendesk Webhook",
        entry_node="process-webhook",
        trigger_type="webhook",
        isolation_level="shared",
    ))

    runtime.register_entry_point(EntryPointSpec(
        id="api",
        name="API Handler",
        entry_node="process-request",
        trigger_type="api",
        isolation_level="shared",
    ))

    # Start runtime
    await runtime.start()
    try:
        # Trigger executions (non-blocking)
        exec_1 = await runtime.trigger("webhook", {"ticket_id": "123"})
        exec_2 = await runtime.trigger("api", {"query": "help"})
        assert exec_1 != exec_2

        results = await asyncio.gather(*(runtime.wait_for_execution(e, timeout=10)
                                         for e in (exec_1, exec_2)))
        assert [r.status for r in results if r is not None] == ["completed", "completed"]

        # Check goal progress
        progress = await runtime.get_goal_progress()
        print(f"Progress: {progress['overall_progress']:.1%}")
        assert f"{progress['overall_progress']:.1%}" == "100.0%"
        assert progress["criteria_status"]["tickets-triaged"]["met"] is True
        assert progress["criteria_status"]["requests-answered"]["observations"] == 1
        assert progress["constraint_violations"] == []
        assert progress["achieved"] is True
        assert len(runtime.bus.history(kinds="agent.goal.achieved")) == 1
        assert runtime.webhook_port is not None  # the webhook entry point has its server
    finally:
        # Stop runtime
        await runtime.stop()
    assert not runtime.is_running
    assert runtime.webhook_server is None
