"""DecisionTracker: events on the bus, concurrency, unknown executions, persistence, mirror."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest
from telemetry_helpers import HarnessFactory, hex_span, hex_trace

from otel_agentbus import Event, EventBus
from otel_agentbus import semconv as sc
from otel_agentbus.runs import RunScope
from otel_agentbus.runtime.tracker import DecisionTracker, DecisionType, RunStatus
from otel_agentbus.runtime.tracker_store import (
    InMemoryTrackerStore,
    SQLiteTrackerStore,
    StoreClosedError,
)

pytestmark = pytest.mark.timeout(60)

OPTIONS = [
    {"id": "search", "description": "search the web", "action_type": "tool",
     "pros": ["fresh"], "cons": ["slow"], "confidence": 0.7},
    {"id": "answer", "description": "answer from memory", "pros": ["fast"],
     "cons": ["stale"], "confidence": 0.3},
]


def events(bus: EventBus, kind: str | None = None) -> list[Event]:
    """Published events, oldest first."""
    return [e for e in reversed(bus.history(limit=None)) if kind is None or e.kind == kind]


async def test_every_method_publishes_its_event_with_its_payload() -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "support", agent="triage")
    assert tracker.start_run("exec-1", "goal-1", "answer tickets", {"ticket": 7},
                             session_id="conv-1") == "exec-1"
    started = events(bus, "agent.run.started")[0]
    assert started.scope.run_id == "exec-1"
    assert started.scope.stream_id == "support"
    assert started.scope.agent == "triage"
    assert started.scope.session_id == "conv-1"
    assert started.payload["goal_id"] == "goal-1"
    assert started.payload["input"] == {"ticket": 7}

    tracker.set_node("exec-1", "classify")
    decision_id = tracker.decide(
        "exec-1", "pick a source", OPTIONS, "search", "needs fresh data",
        decision_type=DecisionType.TOOL_SELECTION, constraints=["budget < 1$"],
        context={"query": "weather"},
    )
    assert decision_id == "dec_0"
    made = events(bus, "agent.decision.made")[0]
    assert made.scope.run_id == "exec-1"
    assert made.scope.stream_id == "support"
    assert made.scope.node_id == "classify"
    assert made.payload["decision_id"] == "dec_0"
    assert made.payload["intent"] == "pick a source"
    assert made.payload["chosen"] == "search"
    assert made.payload["reasoning"] == "needs fresh data"
    assert made.payload["decision_type"] == "tool_selection"
    assert made.payload["constraints"] == ("budget < 1$",)
    assert made.payload["context"] == {"query": "weather"}
    first = made.payload["options"][0]
    assert first["id"] == "search"
    assert first["pros"] == ("fresh",)
    assert first["cons"] == ("slow",)
    assert first["confidence"] == 0.7
    assert made.payload["options"][1]["action_type"] == "unknown"   # the seed's default

    tracker.record_outcome("exec-1", decision_id, False, result={"hits": 0}, error="timeout",
                           summary="search timed out", state_changes={"retries": 1},
                           tokens_used=12, latency_ms=340)
    outcome = events(bus, "agent.decision.outcome")[0]
    assert outcome.scope.node_id == "classify"
    assert outcome.severity == "warn"
    assert dict(outcome.payload) == {
        "decision_id": "dec_0", "success": False, "summary": "search timed out",
        "tokens_used": 12, "latency_ms": 340, "result": {"hits": 0}, "error": "timeout",
        "state_changes": {"retries": 1},
    }

    problem_id = tracker.report_problem("exec-1", "critical", "search is down", decision_id,
                                        root_cause="provider outage",
                                        suggested_fix="use the cache", node_id="search")
    assert problem_id == "prob_0"
    problem = events(bus, "agent.problem.reported")[0]
    assert problem.scope.node_id == "search"
    assert problem.severity == "error"
    assert dict(problem.payload) == {
        "problem_id": "prob_0", "severity": "critical", "description": "search is down",
        "decision_id": "dec_0", "root_cause": "provider outage",
        "suggested_fix": "use the cache",
    }

    quick = tracker.quick_decision("exec-1", "reply", "send the cached answer", "fallback",
                                   node_id="reply")
    assert quick == "dec_1"
    quick_event = events(bus, "agent.decision.made")[1]
    assert quick_event.payload["chosen"] == "action"
    assert quick_event.payload["options"][0]["description"] == "send the cached answer"
    assert quick_event.payload["options"][0]["action_type"] == "execute"
    assert quick_event.scope.node_id == "reply"

    tracker.end_run("exec-1", False, "could not answer")
    failed = events(bus, "agent.run.failed")[0]
    assert failed.scope.run_id == "exec-1"
    assert failed.payload["error"] == "could not answer"
    assert failed.payload["narrative"] == "could not answer"
    assert [e.kind for e in events(bus)] == [
        "agent.run.started", "agent.decision.made", "agent.decision.outcome",
        "agent.problem.reported", "agent.decision.made", "agent.run.failed",
    ]

    run = tracker.get_run("exec-1")
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert [d.id for d in run.decisions] == ["dec_0", "dec_1"]
    assert run.decisions[0].outcome is not None
    assert run.decisions[0].was_successful is False
    assert [p.id for p in run.problems] == ["prob_0"]
    assert tracker.get_active_executions() == []
    await bus.close()


async def test_completed_and_cancelled_runs_publish_their_end_events() -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s")
    tracker.start_run("a")
    tracker.end_run("a", True, "done", {"answer": 42})
    tracker.start_run("b")
    tracker.end_run("b", False, "user hung up", cancelled=True)
    completed = events(bus, "agent.run.completed")[0]
    assert completed.payload["output"] == {"answer": 42}
    cancelled = events(bus, "agent.run.cancelled")[0]
    assert cancelled.payload["reason"] == "user hung up"
    assert [r.execution_id for r in tracker.list_runs()] == ["b", "a"]
    assert [r.status for r in tracker.list_runs(status="cancelled")] == [RunStatus.CANCELLED]
    await bus.close()


async def test_without_run_events_the_runtime_owns_the_run() -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s", publish_run_events=False)
    async with RunScope(bus, "planner") as run:
        tracker.start_run(run.run_id)
        tracker.quick_decision(run.run_id, "plan", "split the task")
        tracker.end_run(run.run_id, True)
    kinds = [e.kind for e in events(bus)]
    assert kinds == ["agent.run.started", "agent.decision.made", "agent.run.completed"]
    assert {e.scope.run_id for e in events(bus)} == {run.run_id}
    await bus.close()


async def test_starting_a_running_execution_again_does_not_start_a_second_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s")
    tracker.start_run("x")
    tracker.decide("x", "i", OPTIONS, "search", "r")
    with caplog.at_level(logging.WARNING, "otel_agentbus.runtime.tracker"):
        assert tracker.start_run("x") == "x"
    assert "already running" in caplog.text
    assert len(events(bus, "agent.run.started")) == 1
    assert len(tracker.get_decisions("x")) == 1
    await bus.close()


async def test_hundred_concurrent_executions_keep_their_decisions_apart() -> None:
    bus = EventBus(history_size=10_000)
    tracker = DecisionTracker(bus, "many")
    per_run = 10
    rng = random.Random(7)

    async def execution(n: int) -> None:
        execution_id = f"exec-{n}"
        tracker.start_run(execution_id, input_data={"n": n})
        for step in range(per_run):
            await asyncio.sleep(rng.random() / 1000)   # interleave with the other 99
            decision_id = tracker.decide(execution_id, f"{n}:{step}", OPTIONS,
                                         "search", f"run {n}", node_id=f"node-{n}")
            tracker.record_outcome(execution_id, decision_id, True, result=n)
        tracker.end_run(execution_id, True)

    await asyncio.wait_for(asyncio.gather(*(execution(n) for n in range(100))), 30)
    for n in range(100):
        run = tracker.get_run(f"exec-{n}")
        assert run is not None
        assert [d.intent for d in run.decisions] == [f"{n}:{s}" for s in range(per_run)]
        assert [d.id for d in run.decisions] == [f"dec_{s}" for s in range(per_run)]
        assert all(d.outcome is not None and d.outcome.result == n for d in run.decisions)
    made = events(bus, "agent.decision.made")
    assert len(made) == 100 * per_run
    for event in made:   # every event is scoped to the run that made it
        n = int(event.payload["intent"].split(":")[0])
        assert event.scope.run_id == f"exec-{n}"
        assert event.scope.node_id == f"node-{n}"
    await bus.close()


async def test_unknown_execution_is_a_logged_no_op(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s")
    with caplog.at_level(logging.WARNING, "otel_agentbus.runtime.tracker"):
        assert tracker.decide("ghost", "intent", OPTIONS, "search", "r") == ""
        assert tracker.quick_decision("ghost", "intent", "act") == ""
        tracker.record_outcome("ghost", "dec_0", True)
        assert tracker.report_problem("ghost", "minor", "oops") == ""
        tracker.end_run("ghost", True)
        tracker.set_node("ghost", "n")
    assert tracker.get_run("ghost") is None
    assert tracker.get_decisions("ghost") == []
    assert bus.history() == []
    ghost_lines = [r for r in caplog.records if "'ghost'" in r.getMessage()]
    assert len(ghost_lines) == 6
    assert all(r.levelno == logging.WARNING for r in ghost_lines)
    assert "decide" in ghost_lines[0].getMessage()

    tracker.start_run("real")
    caplog.clear()
    with caplog.at_level(logging.WARNING, "otel_agentbus.runtime.tracker"):
        tracker.record_outcome("real", "dec_99", True)
    assert "no decision 'dec_99'" in caplog.text
    assert events(bus, "agent.decision.outcome") == []
    await bus.close()


async def test_an_option_without_an_id_is_a_caller_error() -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s")
    tracker.start_run("x")
    with pytest.raises(ValueError, match="'id'"):
        tracker.decide("x", "i", [{"description": "no id"}], "a", "r")
    await bus.close()


async def test_getters_hand_out_copies() -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s")
    tracker.start_run("x")
    tracker.quick_decision("x", "i", "a")
    run = tracker.get_run("x")
    assert run is not None
    run.decisions.clear()
    assert len(tracker.get_decisions("x")) == 1
    await bus.close()


async def test_a_closed_bus_does_not_stop_recording(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s")
    await bus.close()
    with caplog.at_level(logging.WARNING, "otel_agentbus.runtime.tracker"):
        tracker.start_run("x")
        tracker.quick_decision("x", "i", "a")
        tracker.end_run("x", True)
    assert "could not publish" in caplog.text
    run = tracker.get_run("x")
    assert run is not None and len(run.decisions) == 1
    assert tracker.get_stats()["publish_failures"] == 3


async def test_the_execution_view_binds_one_execution() -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s")
    view = tracker.for_execution("e")
    view.start_run("g")
    view.set_node("n1")
    decision_id = view.decide("i", OPTIONS, "answer", "r")
    view.record_outcome(decision_id, True)
    view.report_problem("minor", "slow")
    view.quick_decision("i2", "act")
    assert view.current_run is not None
    assert view.current_run.decisions[0].node_id == "n1"
    view.end_run(True)
    assert [e.kind for e in events(bus)][-1] == "agent.run.completed"
    await bus.close()


# ------------------------------------------------------------------ persistence
def file_mode(path: str | Path) -> int | None:
    """The permission bits of ``path``, None when it does not exist."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def _record_some(tracker: DecisionTracker, execution_id: str, decisions: int) -> None:
    tracker.start_run(execution_id, "goal", "describe", {"q": execution_id})
    for n in range(decisions):
        decision_id = tracker.decide(execution_id, f"step {n}", OPTIONS, "answer", "why",
                                     node_id="n", context={"n": n})
        tracker.record_outcome(execution_id, decision_id, n % 2 == 0, result={"n": n},
                               tokens_used=n)
    tracker.report_problem(execution_id, "warning", "flaky", "dec_0", "network", "retry")
    tracker.end_run(execution_id, True, "fine", {"answer": execution_id})


async def test_runs_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tracker.db"
    bus = EventBus()
    tracker = DecisionTracker(bus, "persist", store=path)
    _record_some(tracker, "r1", 3)
    _record_some(tracker, "r2", 200)
    tracker.start_run("r3")   # still running at close
    tracker.close()           # flushes: nothing is lost on a clean stop
    assert file_mode(path) == 0o600

    store = SQLiteTrackerStore(path)
    try:
        runs = store.list_runs(stream_id="persist")
        assert [r.execution_id for r in runs] == ["r3", "r2", "r1"]
        assert [r.decision_count for r in runs] == [0, 200, 3]
        assert runs[0].status is RunStatus.RUNNING
        run = store.get_run("r1")
        assert run is not None
        assert run.status is RunStatus.COMPLETED
        assert run.input_data == {"q": "r1"}
        assert run.output_data == {"answer": "r1"}
        assert run.narrative == "fine"
        assert run.ended_ns is not None and run.duration_ms is not None
        assert [d.intent for d in run.decisions] == ["step 0", "step 1", "step 2"]
        first = run.decisions[0]
        assert first.options[0].pros == ("fresh",)
        assert first.input_context == {"n": 0}
        assert first.outcome is not None and first.outcome.success is True
        assert run.decisions[1].outcome is not None
        assert run.decisions[1].outcome.success is False
        assert [(p.severity, p.root_cause) for p in run.problems] == [("warning", "network")]
        assert len(store.get_decisions("r2")) == 200
        assert store.list_runs(status="completed", limit=1)[0].execution_id == "r2"
    finally:
        store.close()
    for suffix in ("-wal", "-shm"):   # SQLite gives its side files the database's mode
        assert file_mode(f"{path}{suffix}") in (None, 0o600)
    await bus.close()


async def test_a_store_is_written_in_order_and_refuses_writes_after_close(
    tmp_path: Path,
) -> None:
    store = SQLiteTrackerStore(tmp_path / "t.db")
    bus = EventBus()
    tracker = DecisionTracker(bus, "s", store=store)
    _record_some(tracker, "x", 50)
    assert store.flush(10)
    assert store.write_errors == 0
    assert store.writes == 1 + 50 * 2 + 1 + 1
    tracker.close()           # not its store: only flushed
    assert not store.closed
    run = tracker.get_run("x")
    assert run is not None
    store.close()
    store.close()             # idempotent
    with pytest.raises(StoreClosedError):
        store.run_started(run)
    with pytest.raises(StoreClosedError):
        store.get_run("x")
    # The tracker survives a closed store: logged, counted, the agent goes on.
    tracker.start_run("y")
    assert tracker.get_stats()["store_failures"] == 1
    await bus.close()


async def test_in_memory_store_is_bounded() -> None:
    bus = EventBus()
    tracker = DecisionTracker(bus, "s", store=InMemoryTrackerStore(max_runs=5))
    tracker.start_run("running")
    for n in range(20):
        tracker.start_run(f"r{n}")
        tracker.end_run(f"r{n}", True)
    ids = {r.execution_id for r in tracker.list_runs(limit=100)}
    assert len(ids) == 5
    assert "running" in ids          # ended runs are evicted first
    assert "r19" in ids
    await bus.close()


# ------------------------------------------------------------------ telemetry
async def test_decisions_become_span_events_on_the_run_span(make: HarnessFactory) -> None:
    h = make()
    tracker = DecisionTracker(h.bus, "traced", agent="planner")
    tracker.start_run("exec-7", "g", session_id="conv-7")
    decision_id = tracker.decide("exec-7", "pick", OPTIONS, "search", "fresh data needed")
    tracker.record_outcome("exec-7", decision_id, True, summary="found it")
    tracker.report_problem("exec-7", "minor", "slow search")
    tracker.end_run("exec-7", True, "done")
    run_span = h.one("invoke_agent planner")
    attributes: dict[str, Any] = dict(run_span.attributes or {})
    assert attributes[sc.RUN_ID] == "exec-7"
    assert attributes[sc.STREAM_ID] == "traced"
    assert [e.name for e in run_span.events] == [
        "agentbus.decision", "agentbus.outcome", "agentbus.problem"]
    decision = dict(run_span.events[0].attributes or {})
    assert decision[sc.DECISION_ID] == "dec_0"
    assert decision[sc.DECISION_INTENT] == "pick"
    assert decision[sc.DECISION_CHOSEN] == "search"
    assert decision[sc.DECISION_REASONING] == "fresh data needed"
    assert "search the web" in str(decision[sc.DECISION_OPTIONS])
    outcome = dict(run_span.events[1].attributes or {})
    assert outcome["agentbus.outcome.decision_id"] == "dec_0"
    assert outcome["agentbus.outcome.success"] is True
    # The run record carries the trace context of its span (seed 003: trace context per run).
    run = tracker.get_run("exec-7")
    assert run is not None
    assert run.trace_id == hex_trace(run_span)
    assert run.span_id == hex_span(run_span)


async def test_a_decision_naming_a_tool_call_lands_on_the_tool_span(
    make: HarnessFactory,
) -> None:
    h = make()
    tracker = DecisionTracker(h.bus, "traced", agent="planner")
    tracker.start_run("exec-8")
    scope_event = Event("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "fetch"},
                        scope=h.bus.history(limit=1)[0].scope)
    await h.bus.publish(scope_event)
    tracker.decide("exec-8", "which url", OPTIONS, "search", "r", tool_call_id="t1")
    await h.bus.publish(Event("agent.tool.call.completed",
                              {"tool_call_id": "t1", "tool_name": "fetch"},
                              scope=scope_event.scope))
    tracker.end_run("exec-8", True)
    tool = h.one("execute_tool fetch")
    assert [e.name for e in tool.events] == ["agentbus.decision"]
    assert h.one("invoke_agent planner").events == ()


async def test_inside_a_runtime_run_the_record_takes_the_run_span_trace(
    make: HarnessFactory,
) -> None:
    h = make()
    tracker = DecisionTracker(h.bus, "traced", publish_run_events=False)
    async with RunScope(h.bus, "runtime-agent") as run:
        tracker.start_run(run.run_id)
        tracker.quick_decision(run.run_id, "plan", "split the task")
        tracker.end_run(run.run_id, True)
    run_span = h.one("invoke_agent runtime-agent")      # one run span, not two
    assert [e.name for e in run_span.events] == ["agentbus.decision"]
    record = tracker.get_run(run.run_id)
    assert record is not None
    assert record.trace_id == hex_trace(run_span)
    assert record.span_id == hex_span(run_span)
