"""The Hive runtime and tracker facades' runs arrive as traces in the embedded receiver,
with their decisions as span events (a real child process exporting over OTLP/gRPC)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from telemetry_helpers import Receiver, run_python, start_receiver

from otel_agentbus import semconv as sc
from otel_agentbus.receiver.queries import get_trace, list_runs

pytestmark = pytest.mark.timeout(90)

SCRIPT = r'''
import asyncio, json, sys
from otel_agentbus import configure
from otel_agentbus.compat.hive import (
    AgentRuntime, ConcurrentStorage, EntryPointSpec, StreamDecisionTracker, get_trace_context)

endpoint, storage_path = sys.argv[1], sys.argv[2]


class Goal:
    id = "support-goal"
    description = "Handle support tickets"
    success_criteria = ()


async def triage(ctx, memory):
    decision = ctx.runtime.decide(intent="Classify ticket",
                                  options=[{"id": "howto"}, {"id": "bug"}],
                                  chosen="howto", reasoning="matches how-to")
    ctx.runtime.record_outcome(decision, success=True, result={"category": "howto"})
    return {"category": "howto"}


class Graph:
    id = "support-agent"

    def get_node(self, node_id):
        return {"triage": triage}.get(node_id)


async def main():
    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="hive-runtime",
                          metrics_enabled=False)
    runtime = AgentRuntime(Graph(), Goal(), storage_path)
    telemetry.attach(runtime.event_bus.bus)
    runtime.register_entry_point(EntryPointSpec(id="api", name="API", entry_node="triage"))
    await runtime.start()
    result = await runtime.trigger_and_wait("api", {"ticket_id": "1"}, timeout=30)

    tracker = StreamDecisionTracker("batch", ConcurrentStorage(storage_path),
                                    bus=runtime.event_bus.bus)
    run_id = tracker.start_run("batch-1", "support-goal", "nightly batch")
    trace_context = get_trace_context()
    tracker.set_node("batch-1", "sorter")
    decision = tracker.decide("batch-1", "Order tickets", [{"id": "by-age"}, {"id": "by-size"}],
                              "by-age", "oldest first")
    tracker.record_outcome("batch-1", decision, False, error="queue empty")
    tracker.report_problem("batch-1", "warning", "nothing to sort")
    tracker.end_run("batch-1", False, "nothing done")
    await tracker.wait_saved()

    await runtime.stop()
    await runtime.event_bus.close()
    flushed = telemetry.force_flush(10)
    telemetry.shutdown(timeout=10)
    print(json.dumps({"execution_id": result.execution_id, "status": result.status,
                      "run_id": run_id, "trace_context": trace_context, "flushed": flushed}))


asyncio.run(main())
'''


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(tmp_path_factory.mktemp("hive-conformance"))
    try:
        yield started
    finally:
        started.stop()


def test_runtime_and_tracker_runs_are_traces_with_decision_events(
    receiver: Receiver, tmp_path: Path
) -> None:
    out = run_python(SCRIPT, receiver.grpc_endpoint, str(tmp_path), timeout=60)
    assert out["flushed"] is True
    assert out["status"] == "completed"

    runs = {run.run_id: run for run in list_runs(receiver.db)}
    execution, batch = runs[out["execution_id"]], runs["batch-1"]
    assert execution.status == "completed"
    assert batch.status == "failed"
    # The seed's trace context names the run's own trace.
    assert out["trace_context"]["trace_id"] == batch.trace_id
    assert out["trace_context"]["run_id"] == out["run_id"]

    spans = [s for s in get_trace(receiver.db, execution.trace_id).spans if not s.pending]
    decisions = [(s.name, e) for s in spans for e in s.events if e.name == "agentbus.decision"]
    assert len(decisions) == 1
    span_name, event = decisions[0]
    assert span_name == "iteration triage"  # the node's iteration, where it decided
    assert event.attributes[sc.DECISION_CHOSEN] == "howto"
    assert "agentbus.outcome" in [e.name for s in spans for e in s.events]
    root = next(s for s in spans if s.parent_span_id is None)
    assert root.attributes[sc.RUN_ID] == out["execution_id"]
    assert root.attributes[sc.STREAM_ID] == "api"

    batch_spans = [s for s in get_trace(receiver.db, batch.trace_id).spans if not s.pending]
    events = sorted(e.name for s in batch_spans for e in s.events)
    assert "agentbus.decision" in events
    assert events == ["agentbus.decision", "agentbus.outcome", "agentbus.problem"]
