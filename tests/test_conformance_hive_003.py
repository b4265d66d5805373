"""Seed 003 (Hive ``StreamDecisionTracker`` / ``StreamRuntimeAdapter``), as the seed text
calls it. Every expectation below is read off the seed, not off our API: one test per
call pattern. The table of rows is ``docs/conformance-hive.md``."""

from __future__ import annotations

import inspect
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from async_helpers import wait_until

from otel_agentbus import EventBus as CoreBus
from otel_agentbus.compat.hive import (
    ConcurrentStorage,
    DecisionType,
    OutcomeAggregator,
    Run,
    RunStatus,
    StreamDecisionTracker,
    StreamRuntime,
    StreamRuntimeAdapter,
    get_trace_context,
)

pytestmark = pytest.mark.timeout(60)

R = inspect.Parameter.empty
# (method, ((parameter, default), ...)) exactly as in the seed text.
SEED_TRACKER_SIGNATURES: dict[str, tuple[tuple[str, Any], ...]] = {
    "__init__": (("stream_id", R), ("storage", R), ("outcome_aggregator", None)),
    "start_run": (("execution_id", R), ("goal_id", R), ("goal_description", ""),
                  ("input_data", None)),
    "end_run": (("execution_id", R), ("success", R), ("narrative", ""), ("output_data", None)),
    "set_node": (("execution_id", R), ("node_id", R)),
    "get_run": (("execution_id", R),),
    "decide": (("execution_id", R), ("intent", R), ("options", R), ("chosen", R),
               ("reasoning", R), ("node_id", None), ("decision_type", DecisionType.CUSTOM),
               ("constraints", None), ("context", None)),
    "record_outcome": (("execution_id", R), ("decision_id", R), ("success", R),
                       ("result", None), ("error", None), ("summary", ""),
                       ("state_changes", None), ("tokens_used", 0), ("latency_ms", 0)),
    "report_problem": (("execution_id", R), ("severity", R), ("description", R),
                       ("decision_id", None), ("root_cause", None), ("suggested_fix", None)),
    "quick_decision": (("execution_id", R), ("intent", R), ("action", R), ("reasoning", R),
                       ("node_id", None)),
    "get_active_executions": (),
    "get_stats": (),
}
SEED_ADAPTER_SIGNATURES: dict[str, tuple[tuple[str, Any], ...]] = {
    "__init__": (("stream_runtime", R), ("execution_id", R)),
    "start_run": (("goal_id", R), ("goal_description", ""), ("input_data", None)),
    "end_run": (("success", R), ("narrative", ""), ("output_data", None)),
    "set_node": (("node_id", R),),
    "decide": (("intent", R), ("options", R), ("chosen", R), ("reasoning", R),
               ("node_id", None), ("decision_type", DecisionType.CUSTOM),
               ("constraints", None), ("context", None)),
    "record_outcome": (("decision_id", R), ("success", R), ("result", None), ("error", None),
                       ("summary", ""), ("state_changes", None), ("tokens_used", 0),
                       ("latency_ms", 0)),
    "report_problem": (("severity", R), ("description", R), ("decision_id", None),
                       ("root_cause", None), ("suggested_fix", None)),
    "quick_decision": (("intent", R), ("action", R), ("reasoning", R), ("node_id", None)),
}


def _positional(cls: type, method: str) -> tuple[tuple[str, Any], ...]:
    parameters = inspect.signature(getattr(cls, method)).parameters.values()
    return tuple((p.name, p.default) for p in parameters
                 if p.name != "self" and p.kind is not inspect.Parameter.KEYWORD_ONLY)


@pytest.mark.parametrize("method", sorted(SEED_TRACKER_SIGNATURES))
def test_tracker_method_has_the_seeds_parameters(method: str) -> None:
    assert _positional(StreamDecisionTracker, method) == SEED_TRACKER_SIGNATURES[method]


@pytest.mark.parametrize("method", sorted(SEED_ADAPTER_SIGNATURES))
def test_adapter_method_has_the_seeds_parameters(method: str) -> None:
    assert _positional(StreamRuntimeAdapter, method) == SEED_ADAPTER_SIGNATURES[method]


class SeedStorage:
    """A storage as the seed uses it: only ``await storage.save_run(run)``."""

    def __init__(self) -> None:
        self.saved: list[Run] = []

    async def save_run(self, run: Run) -> None:
        self.saved.append(run)


class RecordingAggregator:
    """The two callbacks the seed makes, with the seed's keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def record_decision(self, *, stream_id: str, execution_id: str, decision: Any) -> None:
        self.calls.append(("record_decision", {"stream_id": stream_id,
                                               "execution_id": execution_id,
                                               "decision": decision}))

    def record_outcome(self, *, stream_id: str, execution_id: str, decision_id: str,
                       outcome: Any) -> None:
        self.calls.append(("record_outcome", {"stream_id": stream_id,
                                              "execution_id": execution_id,
                                              "decision_id": decision_id,
                                              "outcome": outcome}))


@pytest.fixture
async def bus() -> Any:
    core = CoreBus()
    yield core
    await core.close()


async def test_the_seeds_docstring_example_runs_as_written(tmp_path: Path, bus: CoreBus) -> None:
    concurrent_storage = ConcurrentStorage(base_path=tmp_path)
    aggregator = OutcomeAggregator(type("Goal", (), {"id": "support-goal"})())
    # --- the seed's example, verbatim apart from options=[...] being spelled out
    runtime = StreamRuntime(
        stream_id="webhook",
        storage=concurrent_storage,
        outcome_aggregator=aggregator,
        bus=bus,
    )
    run_id = runtime.start_run(
        execution_id="exec_123",
        goal_id="support-goal",
        goal_description="Handle support tickets",
    )
    decision_id = runtime.decide(
        execution_id="exec_123",
        intent="Classify ticket",
        options=[{"id": "howto", "description": "A how-to question"}, {"id": "bug"}],
        chosen="howto",
        reasoning="Question matches how-to pattern",
    )
    runtime.record_outcome(
        execution_id="exec_123",
        decision_id=decision_id,
        success=True,
        result={"category": "howto"},
    )
    runtime.end_run(
        execution_id="exec_123",
        success=True,
        narrative="Ticket resolved",
    )
    # ---
    assert re.fullmatch(r"run_webhook_\d{8}_\d{6}_[0-9a-f]{8}", run_id)
    assert decision_id == "dec_0"
    await runtime.wait_saved()
    saved = json.loads((tmp_path / "runs" / f"{run_id}.json").read_text())
    assert saved["status"] == "completed"
    assert saved["narrative"] == "Ticket resolved"
    assert saved["decisions"][0]["chosen_option_id"] == "howto"
    assert saved["decisions"][0]["outcome"]["result"] == {"category": "howto"}
    assert aggregator.get_stats()["total_decisions"] == 1
    assert aggregator.get_stats()["successful_outcomes"] == 1


async def test_constructed_without_a_bus_as_the_seed_does() -> None:
    tracker = StreamDecisionTracker("webhook", SeedStorage())
    assert tracker.start_run("e1", "g").startswith("run_webhook_")
    assert [e.kind for e in tracker.bus.history()] == ["agent.run.started"]
    tracker.end_run("e1", True)
    await tracker.wait_saved()
    await tracker.bus.close()


async def test_a_seed_style_storage_gets_the_finished_run(bus: CoreBus) -> None:
    storage = SeedStorage()
    tracker = StreamDecisionTracker("s", storage, bus=bus)
    run_id = tracker.start_run("e1", "g", "goal text", {"q": 1})
    tracker.decide("e1", "pick", [{"id": "a"}], "a", "only one")
    tracker.end_run("e1", False, "gave up", {"partial": True})
    await tracker.wait_saved()
    (run,) = storage.saved
    assert run.id == run_id
    assert run.status is RunStatus.FAILED
    assert (run.narrative, run.output_data, run.input_data) == ("gave up", {"partial": True},
                                                                {"q": 1})
    assert run.completed_at is not None
    assert [d.id for d in run.decisions] == ["dec_0"]


def test_a_storage_without_save_run_is_refused_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match="save_run"):
        StreamDecisionTracker("s", object())


async def test_start_run_sets_the_trace_context(bus: CoreBus) -> None:
    tracker = StreamDecisionTracker("webhook", SeedStorage(), bus=bus)
    run_id = tracker.start_run("exec_1", "goal-1")
    context = get_trace_context()
    assert context["run_id"] == run_id
    assert context["execution_id"] == "exec_1"
    assert context["goal_id"] == "goal-1"
    assert context["stream_id"] == "webhook"
    # No telemetry here, so no span: a fresh id as in the seed (with telemetry it is the
    # run's own trace id: test_conformance_hive_traces.py).
    assert re.fullmatch(r"[0-9a-f]{32}", context["trace_id"])


async def test_get_run_is_live_and_none_after_the_run_ended(bus: CoreBus) -> None:
    tracker = StreamDecisionTracker("s", SeedStorage(), bus=bus)
    assert tracker.get_run("e1") is None
    tracker.start_run("e1", "g")
    run = tracker.get_run("e1")
    assert run is not None and run.decisions == []
    tracker.decide("e1", "later", [{"id": "x"}], "x", "because")
    assert [d.intent for d in run.decisions] == ["later"]  # the same, live object
    tracker.end_run("e1", True)
    assert tracker.get_run("e1") is None
    await tracker.wait_saved()


async def test_decide_builds_options_and_uses_the_current_node(bus: CoreBus) -> None:
    tracker = StreamDecisionTracker("s", SeedStorage(), bus=bus)
    tracker.start_run("e1", "g")
    first = tracker.decide("e1", "i", [{"id": "a"}], "a", "r")
    tracker.set_node("e1", "planner")
    second = tracker.decide("e1", "i2", [{"id": "a", "description": "d", "action_type": "tool",
                                          "action_params": {"k": 1}, "pros": ["p"],
                                          "cons": ["c"], "confidence": 0.8}], "a", "r2",
                            decision_type=DecisionType.TOOL_SELECTION, constraints=["cheap"],
                            context={"budget": 3})
    run = tracker.get_run("e1")
    assert run is not None
    assert (first, second) == ("dec_0", "dec_1")
    d0, d1 = run.decisions
    assert d0.node_id == "unknown"  # the seed's default node
    assert d0.options[0].action_type == "unknown" and d0.options[0].confidence == 0.5
    assert d1.node_id == "planner"
    assert d1.options[0].to_dict() == {"id": "a", "description": "d", "action_type": "tool",
                                       "action_params": {"k": 1}, "pros": ["p"],
                                       "cons": ["c"], "confidence": 0.8}
    assert d1.decision_type == "tool_selection"
    assert d1.active_constraints == ("cheap",) and d1.input_context == {"budget": 3}
    made = [e for e in bus.history(kinds="agent.decision.made")]
    assert {e.scope.run_id for e in made} == {"e1"}
    tracker.end_run("e1", True)
    await tracker.wait_saved()


async def test_record_outcome_fills_the_decisions_outcome(bus: CoreBus) -> None:
    tracker = StreamDecisionTracker("s", SeedStorage(), bus=bus)
    tracker.start_run("e1", "g")
    decision_id = tracker.decide("e1", "i", [{"id": "a"}], "a", "r")
    tracker.record_outcome("e1", decision_id, False, result=None, error="timeout",
                           summary="tool timed out", state_changes={"x": 1}, tokens_used=12,
                           latency_ms=340)
    run = tracker.get_run("e1")
    assert run is not None
    outcome = run.decisions[0].outcome
    assert outcome is not None
    assert (outcome.success, outcome.error, outcome.summary, outcome.tokens_used,
            outcome.latency_ms, dict(outcome.state_changes)) == (
        False, "timeout", "tool timed out", 12, 340, {"x": 1})
    (event,) = bus.history(kinds="agent.decision.outcome")
    assert event.payload["decision_id"] == decision_id
    tracker.end_run("e1", False)
    await tracker.wait_saved()


async def test_report_problem_returns_its_id(bus: CoreBus) -> None:
    tracker = StreamDecisionTracker("s", SeedStorage(), bus=bus)
    tracker.start_run("e1", "g")
    problem_id = tracker.report_problem("e1", "critical", "db down", decision_id="dec_0",
                                        root_cause="network", suggested_fix="retry")
    run = tracker.get_run("e1")
    assert run is not None
    assert problem_id == run.problems[0].id != ""
    assert (run.problems[0].severity, run.problems[0].root_cause) == ("critical", "network")
    (event,) = bus.history(kinds="agent.problem.reported")
    assert event.payload["description"] == "db down"
    tracker.end_run("e1", False)
    await tracker.wait_saved()


async def test_calls_for_an_unknown_execution_warn_and_return_empty(
    bus: CoreBus, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = StreamDecisionTracker("s", SeedStorage(), bus=bus)
    with caplog.at_level(logging.WARNING):
        assert tracker.decide("nope", "i", [{"id": "a"}], "a", "r") == ""
        assert tracker.report_problem("nope", "minor", "d") == ""
        tracker.record_outcome("nope", "dec_0", True)
        tracker.end_run("nope", True)
    assert len([r for r in caplog.records if "nope" in r.getMessage()]) == 4
    assert bus.history() == []


async def test_quick_decision_is_a_single_execute_option(bus: CoreBus) -> None:
    tracker = StreamDecisionTracker("s", SeedStorage(), bus=bus)
    tracker.start_run("e1", "g")
    decision_id = tracker.quick_decision("e1", "fetch", "call the API", "needed", node_id="n")
    run = tracker.get_run("e1")
    assert run is not None
    (decision,) = run.decisions
    assert decision.id == decision_id
    assert decision.chosen_option_id == "action"
    assert [(o.id, o.description, o.action_type) for o in decision.options] == [
        ("action", "call the API", "execute")]
    assert decision.node_id == "n"
    tracker.end_run("e1", True)
    await tracker.wait_saved()


async def test_both_outcome_aggregator_callbacks_get_the_seeds_arguments(
    bus: CoreBus
) -> None:
    aggregator = RecordingAggregator()
    tracker = StreamDecisionTracker("webhook", SeedStorage(), aggregator, bus=bus)
    tracker.start_run("e1", "g")
    decision_id = tracker.decide("e1", "i", [{"id": "a"}], "a", "r")
    tracker.record_outcome("e1", decision_id, True, result=7)
    (name1, decided), (name2, outcome) = aggregator.calls
    assert (name1, name2) == ("record_decision", "record_outcome")
    assert (decided["stream_id"], decided["execution_id"]) == ("webhook", "e1")
    assert decided["decision"].id == decision_id
    assert (outcome["decision_id"], outcome["outcome"].success, outcome["outcome"].result) == (
        decision_id, True, 7)
    tracker.end_run("e1", True)
    await tracker.wait_saved()


async def test_active_executions_and_stats(bus: CoreBus) -> None:
    tracker = StreamDecisionTracker("s", SeedStorage(), bus=bus)
    tracker.start_run("e1", "g")
    tracker.start_run("e2", "g")
    assert tracker.get_active_executions() == ["e1", "e2"]
    assert tracker.get_stats() == {"stream_id": "s", "active_executions": 2,
                                   "execution_ids": ["e1", "e2"]}
    tracker.end_run("e1", True)
    tracker.end_run("e2", True)
    assert tracker.get_stats()["active_executions"] == 0
    await tracker.wait_saved()


async def test_the_adapter_routes_every_call_to_its_execution(bus: CoreBus) -> None:
    storage = SeedStorage()
    tracker = StreamDecisionTracker("s", storage, bus=bus)
    adapter = StreamRuntimeAdapter(tracker, "e1")
    assert adapter.storage is storage
    assert adapter.execution_id == "e1"
    assert adapter.current_run is None
    run_id = adapter.start_run("g", "goal", {"q": 1})
    adapter.set_node("writer")
    decision_id = adapter.decide("i", [{"id": "a"}], "a", "r")
    adapter.record_outcome(decision_id, True, result="ok")
    quick = adapter.quick_decision("i2", "act", "why")
    problem = adapter.report_problem("warning", "slow")
    run = adapter.current_run
    assert run is not None and run.id == run_id
    assert [(d.id, d.node_id) for d in run.decisions] == [(decision_id, "writer"),
                                                          (quick, "writer")]
    assert run.decisions[0].outcome is not None
    assert run.problems[0].id == problem
    adapter.end_run(True, "done", {"answer": 1})
    assert adapter.current_run is None
    await tracker.wait_saved()
    assert storage.saved[0].output_data == {"answer": 1}


async def test_a_sync_save_run_is_called_at_once(bus: CoreBus) -> None:
    saved: list[str] = []

    class SyncStorage:
        def save_run(self, run: Run) -> None:
            saved.append(run.id)

    tracker = StreamDecisionTracker("s", SyncStorage(), bus=bus)
    run_id = tracker.start_run("e1", "g")
    tracker.end_run("e1", True)
    assert saved == [run_id]


async def test_many_threads_record_decisions_at_once(bus: CoreBus) -> None:
    """The seed: "Thread-safe: multiple executions can record decisions concurrently"."""
    tracker = StreamDecisionTracker("s", SeedStorage(), bus=bus)
    for thread in range(4):
        tracker.start_run(f"e{thread}", "g")

    def record(thread: int) -> list[str]:
        return [tracker.decide(f"e{thread % 2}", f"i{n}", [{"id": "a"}], "a", "r")
                for n in range(50)]

    with ThreadPoolExecutor(4) as pool:
        ids = [i for batch in pool.map(record, range(4)) for i in batch]
    for execution in ("e0", "e1"):
        run = tracker.get_run(execution)
        assert run is not None
        assert [d.id for d in run.decisions] == [f"dec_{n}" for n in range(100)]
    assert sorted(ids) == sorted(f"dec_{n}" for n in range(100) for _ in range(2))
    await until_published(bus, 4 + 200)


async def until_published(bus: CoreBus, count: int) -> None:
    await wait_until(lambda: len(bus.history(limit=None)) >= count)
    assert len(bus.history(kinds="agent.decision.made", limit=None)) == 200
