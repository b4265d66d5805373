"""Seed 003's ``StreamDecisionTracker`` docstring example on the project's own tracker API
(the example verbatim, on the seed's signatures, is ``test_conformance_hive_003.py``)."""

from __future__ import annotations

from pathlib import Path

from otel_agentbus import EventBus
from otel_agentbus.runtime.tracker import DecisionTracker, RunStatus
from otel_agentbus.runtime.tracker_store import SQLiteTrackerStore


async def test_seed_003_docstring_example(tmp_path: Path) -> None:
    bus = EventBus()
    concurrent_storage = SQLiteTrackerStore(tmp_path / "decisions.db")

    runtime = DecisionTracker(
        bus,
        stream_id="webhook",
        store=concurrent_storage,
    )

    # Start a run for a specific execution
    run_id = runtime.start_run(
        execution_id="exec_123",
        goal_id="support-goal",
        goal_description="Handle support tickets",
    )

    # Record decisions (thread-safe)
    decision_id = runtime.decide(
        execution_id="exec_123",
        intent="Classify ticket",
        options=[
            {"id": "howto", "description": "A how-to question", "pros": ["matches"],
             "cons": [], "confidence": 0.9},
            {"id": "bug", "description": "A bug report", "pros": [],
             "cons": ["no stack trace"], "confidence": 0.1},
        ],
        chosen="howto",
        reasoning="Question matches how-to pattern",
    )

    # Record outcome
    runtime.record_outcome(
        execution_id="exec_123",
        decision_id=decision_id,
        success=True,
        result={"category": "howto"},
    )

    # End run
    runtime.end_run(
        execution_id="exec_123",
        success=True,
        narrative="Ticket resolved",
    )

    assert run_id == "exec_123"
    assert decision_id == "dec_0"
    kinds = [e.kind for e in reversed(bus.history())]
    assert kinds == ["agent.run.started", "agent.decision.made", "agent.decision.outcome",
                     "agent.run.completed"]
    assert {e.scope.run_id for e in bus.history()} == {"exec_123"}
    assert {e.scope.stream_id for e in bus.history()} == {"webhook"}

    runtime.close()
    concurrent_storage.close()
    reopened = SQLiteTrackerStore(tmp_path / "decisions.db")
    try:
        run = reopened.get_run("exec_123")
        assert run is not None
        assert run.status is RunStatus.COMPLETED
        assert run.goal_id == "support-goal"
        assert run.narrative == "Ticket resolved"
        [decision] = run.decisions
        assert decision.chosen_option_id == "howto"
        assert decision.chosen_option is not None
        assert decision.chosen_option.confidence == 0.9
        assert decision.outcome is not None
        assert decision.outcome.result == {"category": "howto"}
    finally:
        reopened.close()
    await bus.close()
