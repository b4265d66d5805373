"""A Hive program, written from the seeds' call patterns against Hive's own modules, runs
unchanged apart from its imports (in a fresh interpreter)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest
from telemetry_helpers import run_python

pytestmark = pytest.mark.timeout(90)

HIVE_PROGRAM = r'''
import asyncio, json, sys
from pathlib import Path

from framework.runtime.agent_runtime import AgentRuntimeConfig, create_agent_runtime
from framework.runtime.event_bus import AgentEvent, EventType
from framework.runtime.execution_stream import EntryPointSpec
from framework.runtime.stream_runtime import StreamDecisionTracker, StreamRuntimeAdapter
from framework.storage.concurrent import ConcurrentStorage


class SupportGoal:
    id = "support-goal"
    description = "Answer every ticket"
    success_criteria = ()
    constraints = ()


async def classify(ctx, memory):
    runtime = ctx.runtime
    decision_id = runtime.decide(
        intent="Classify ticket",
        options=[{"id": "howto", "description": "how-to question", "confidence": 0.9},
                 {"id": "bug", "description": "bug report", "confidence": 0.1}],
        chosen="howto",
        reasoning="Question matches how-to pattern",
    )
    runtime.record_outcome(decision_id=decision_id, success=True,
                           result={"category": "howto"}, tokens_used=42)
    return {"ticket_id": memory["ticket_id"], "category": "howto"}


async def audit(ctx, memory):
    return {"audited": memory["event"]["execution_id"]}


class SupportGraph:
    nodes = {"classify": classify, "audit": audit}

    def get_node(self, node_id):
        return self.nodes.get(node_id)


async def main(storage_path):
    runtime = create_agent_runtime(
        graph=SupportGraph(),
        goal=SupportGoal(),
        storage_path=Path(storage_path),
        entry_points=[
            EntryPointSpec(id="api", name="API Handler", entry_node="classify",
                           trigger_type="api", isolation_level="shared"),
            EntryPointSpec(id="audit", name="Audit", entry_node="audit", trigger_type="event",
                           trigger_config={"event_types": ["execution_completed"],
                                           "filter_stream": "api"}),
        ],
        config=AgentRuntimeConfig(max_history=500),
    )
    completed = []

    async def on_completed(event: AgentEvent) -> None:
        completed.append((event.stream_id, event.execution_id))

    sub_id = runtime.subscribe_to_events(
        event_types=[EventType.EXECUTION_COMPLETED], handler=on_completed)
    await runtime.start()

    result = await runtime.trigger_and_wait("api", input_data={"ticket_id": "T-1"}, timeout=30)
    audited = asyncio.ensure_future(runtime.event_bus.wait_for(
        EventType.EXECUTION_COMPLETED, stream_id="audit", timeout=30))
    exec_2 = await runtime.trigger("api", {"ticket_id": "T-2"}, correlation_id="batch-7")
    event = await audited
    while runtime.get_execution_result("api", exec_2) is None:
        await asyncio.sleep(0.01)
    second = runtime.get_execution_result("api", exec_2)

    storage = ConcurrentStorage(Path(storage_path))
    tracker = StreamDecisionTracker(stream_id="nightly", storage=storage)
    adapter = StreamRuntimeAdapter(tracker, "nightly-1")
    run_id = adapter.start_run(goal_id="support-goal", goal_description="nightly sweep")
    adapter.set_node("sweep")
    sweep = adapter.quick_decision(intent="Sweep", action="close stale tickets",
                                   reasoning="older than 30 days")
    adapter.record_outcome(sweep, success=True, summary="3 closed")
    adapter.end_run(success=True, narrative="swept")

    progress = await runtime.get_goal_progress()
    stats = runtime.get_stats()
    unsubscribed = runtime.unsubscribe_from_events(sub_id)
    await runtime.stop()
    while await storage.load_run(run_id) is None:  # saved in a task, as in Hive
        await asyncio.sleep(0.01)
    return {
        "first": [result.success, result.output],
        "second": [second.success, second.output, second.correlation_id],
        "audit_event": event is not None,
        "completed_streams": sorted({stream for stream, _ in completed}),
        "run_id": run_id,
        "decisions": progress["metrics"]["total_decisions"],
        "successful_outcomes": progress["metrics"]["successful_outcomes"],
        "stats_keys": sorted(stats),
        "unsubscribed": unsubscribed,
    }


print(json.dumps(asyncio.run(main(sys.argv[1]))))
'''

# Hive's module -> ours: the only change a Hive user makes.
IMPORTS = {
    "framework.runtime.agent_runtime": "otel_agentbus.compat.hive",
    "framework.runtime.event_bus": "otel_agentbus.compat.hive",
    "framework.runtime.execution_stream": "otel_agentbus.compat.hive",
    "framework.runtime.stream_runtime": "otel_agentbus.compat.hive",
    "framework.storage.concurrent": "otel_agentbus.compat.hive",
}


def ported(program: str) -> str:
    for hive, ours in IMPORTS.items():
        program = re.sub(rf"^from {re.escape(hive)} import", f"from {ours} import", program,
                         flags=re.MULTILINE)
    return program


def test_only_import_lines_change() -> None:
    changed = [line for line in difflib.unified_diff(HIVE_PROGRAM.splitlines(),
                                                     ported(HIVE_PROGRAM).splitlines(),
                                                     lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert len(changed) == 2 * len(IMPORTS)
    assert all(line[1:].startswith("from ") and " import " in line for line in changed)


def test_the_hive_program_runs_unchanged_apart_from_its_imports(tmp_path: Path) -> None:
    out = run_python(ported(HIVE_PROGRAM), str(tmp_path), timeout=60)
    assert out["first"] == [True, {"ticket_id": "T-1", "category": "howto"}]
    assert out["second"] == [True, {"ticket_id": "T-2", "category": "howto"}, "batch-7"]
    assert out["audit_event"] is True
    assert out["completed_streams"] == ["api", "audit"]
    assert re.fullmatch(r"run_nightly_\d{8}_\d{6}_[0-9a-f]{8}", out["run_id"])
    assert out["decisions"] == 2  # the node's two executions; the tracker has no aggregator
    assert out["successful_outcomes"] == 2
    assert out["stats_keys"] == ["entry_points", "event_bus", "goal_id", "outcome_aggregator",
                                 "running", "state_manager", "streams"]
    assert out["unsubscribed"] is True
    assert (tmp_path / "runs" / f"{out['run_id']}.json").is_file()
    assert len(list((tmp_path / "sessions").iterdir())) >= 3  # 2 api + at least 1 audit
