"""Goals: per-criterion progress from executions and events, constraint violations, and
the events the tracker publishes."""

from __future__ import annotations

from typing import Any

import pytest
from async_helpers import WAIT, eventually

from otel_agentbus import Event, EventBus, Scope, Source
from otel_agentbus.runtime.agent_runtime import AgentRuntime
from otel_agentbus.runtime.entry_points import EntryPoint
from otel_agentbus.runtime.execution import ExecutionContext, ExecutionResult
from otel_agentbus.runtime.goals import Constraint, Criterion, Goal, GoalTracker


def result(status: str = "completed", output: Any = None, entry_point: str = "api",
           execution_id: str = "e1") -> ExecutionResult:
    return ExecutionResult(execution_id, entry_point, status, output=output)  # type: ignore[arg-type]


async def test_metrics_success_rate_count_and_latest() -> None:
    bus = EventBus()
    goal = Goal("g", success_criteria=[
        Criterion("rate", metric="success_rate", target=0.5),
        Criterion("three", metric="count", target=3, check=lambda r: r.output == "ok"),
        Criterion("last", metric="latest", check=lambda r: r.output == "ok", weight=2),
    ])
    tracker = GoalTracker(goal, bus)
    tracker.observe_execution(result(output="ok"))
    tracker.observe_execution(result("failed"))
    report = tracker.progress()
    status = report["criteria_status"]
    assert (status["rate"]["value"], status["rate"]["progress"], status["rate"]["met"]) == \
        (0.5, 1.0, True)
    assert status["three"]["value"] == 1 and status["three"]["progress"] == pytest.approx(1 / 3)
    assert status["last"]["value"] == 0.0 and status["last"]["met"] is False
    assert report["overall_progress"] == pytest.approx((1.0 + 1 / 3 + 0.0 * 2) / 4)
    assert report["metrics"]["executions"] == 2 and report["metrics"]["success_rate"] == 0.5
    assert report["achieved"] is False and report["recommendation"] == "continue"
    tracker.observe_execution(result("cancelled"))
    assert tracker.progress()["metrics"]["executions"] == 2  # cancellations are not scored
    await bus.close()


async def test_criteria_filtered_by_entry_point_and_not_applicable_scores() -> None:
    bus = EventBus()
    goal = Goal("g", success_criteria=[
        Criterion("api-only", entry_point="api"),
        Criterion("big", check=lambda r: None if r.output is None else r.output > 10),
    ])
    tracker = GoalTracker(goal, bus)
    tracker.observe_execution(result(entry_point="webhook", output=None))
    status = tracker.progress()["criteria_status"]
    assert status["api-only"]["observations"] == 0 and status["big"]["observations"] == 0
    tracker.observe_execution(result(output=42))
    status = tracker.progress()["criteria_status"]
    assert status["api-only"]["met"] and status["big"]["met"]
    await bus.close()


async def test_violations_and_achievement_are_published_once() -> None:
    bus = EventBus()
    goal = Goal("g", success_criteria=[Criterion("done")], constraints=[
        Constraint("no-pii", "never output an email",
                   check=lambda r: "@" not in str(r.output) or f"email in {r.execution_id}"),
        Constraint("short", "short answers", hard=False,
                   check=lambda r: len(str(r.output)) < 5),
    ])
    tracker = GoalTracker(goal, bus)
    tracker.observe_execution(result(output="ok", execution_id="e1"))
    tracker.observe_execution(result(output="ok", execution_id="e2"))
    achieved = bus.history(kinds="agent.goal.achieved")
    assert len(achieved) == 1 and achieved[0].payload["goal_id"] == "g"
    tracker.observe_execution(result(output="mail me at a@b.c", execution_id="e3"))
    report = tracker.progress()
    violations = report["constraint_violations"]
    assert [(v["constraint_id"], v["hard"], v["execution_id"]) for v in violations] == [
        ("no-pii", True, "e3"), ("short", False, "e3")]
    assert violations[0]["message"] == "email in e3"
    assert violations[1]["message"] == "short answers"
    assert report["achieved"] is False and report["recommendation"] == "adjust"
    events = bus.history(kinds="agent.constraint.violated", limit=None)
    assert [e.payload["constraint_id"] for e in reversed(events)] == ["no-pii", "short"]
    assert {e.scope.run_id for e in events} == {"e3"}
    assert events[1].severity == "error" and events[0].severity == "warn"
    progress = bus.history(kinds="agent.goal.progress", limit=None)
    assert len(progress) == 3
    assert progress[0].payload["criteria_status"]["done"] == {"progress": 1.0, "met": True}
    assert len(bus.history(kinds="agent.goal.achieved")) == 1
    await bus.close()


async def test_a_raising_check_is_counted_not_raised() -> None:
    bus = EventBus()

    def broken(r: ExecutionResult) -> bool:
        raise RuntimeError("bug in check")

    goal = Goal("g", success_criteria=[Criterion("c", check=broken)],
                constraints=[Constraint("k", check=broken)])
    tracker = GoalTracker(goal, bus)
    tracker.observe_execution(result())
    report = tracker.progress()
    assert report["metrics"]["check_errors"] == 2
    assert report["criteria_status"]["c"]["observations"] == 0
    assert report["constraint_violations"] == []
    await bus.close()


def test_goal_validation() -> None:
    with pytest.raises(ValueError, match="duplicate criterion"):
        Goal("g", success_criteria=[Criterion("a"), Criterion("a")])
    with pytest.raises(ValueError, match="no event_check"):
        Goal("g", success_criteria=[Criterion("a", event_kinds=("agent.tool.call.completed",))])
    with pytest.raises(ValueError, match="unknown event kind"):
        Goal("g", constraints=[Constraint("a", event_kinds=("agent.tool.cal",),
                                          event_check=lambda e: True)])
    with pytest.raises(ValueError, match="unknown metric"):
        Goal("g", success_criteria=[Criterion("a", metric="median")])  # type: ignore[arg-type]


async def test_runtime_scores_executions_inside_their_runs_and_events_from_the_bus() -> None:
    async def agent(ctx: ExecutionContext, input: Any) -> Any:
        ctx.publish("agent.tool.call.completed",
                    {"tool_call_id": "t", "tool_name": input, "is_error": input == "rm"})
        return input

    goal = Goal("g", success_criteria=[
        Criterion("runs", metric="count", target=2),
        Criterion("tools-ok", event_kinds=("agent.tool.call.completed",),
                  event_check=lambda e: not e.payload["is_error"]),
    ], constraints=[
        Constraint("no-rm", "never run rm", event_kinds=("agent.tool.call.completed",),
                   event_check=lambda e: e.payload["tool_name"] != "rm"),
    ])
    runtime = AgentRuntime(goal=goal)
    runtime.register_entry_point(EntryPoint("api", agent=agent))
    await runtime.start()
    try:
        first = await runtime.trigger_and_wait("api", "ls", timeout=WAIT)
        assert first is not None
        # Observed inside the run: the progress event comes before the run's end.
        run_kinds = [e.kind for e in reversed(runtime.bus.history(
            run_id=first.execution_id, limit=None))]
        assert run_kinds.index("agent.goal.progress") < run_kinds.index("agent.run.completed")
        tracker = runtime.goal_tracker
        assert tracker is not None
        await eventually(lambda: tracker.progress()["criteria_status"]["tools-ok"][
            "observations"] == 1)
        second = await runtime.trigger_and_wait("api", "rm", timeout=WAIT)
        assert second is not None
        await eventually(lambda: tracker.progress()["criteria_status"]["tools-ok"][
            "observations"] == 2)
        report = await runtime.get_goal_progress()
        assert report["criteria_status"]["runs"]["met"] is True
        assert report["criteria_status"]["tools-ok"]["value"] == 0.5
        assert [(v["constraint_id"], v["execution_id"]) for v in
                report["constraint_violations"]] == [("no-rm", second.execution_id)]
        assert report["overall_progress"] == pytest.approx(0.75)
        assert runtime.get_stats()["goal_progress"] == pytest.approx(0.75)
    finally:
        await runtime.stop()
    assert not any(s.name == "goal:g" for s in runtime.bus.stats().subscriber_stats)


async def test_goal_progress_without_a_goal_and_feedback_is_ignored() -> None:
    runtime = AgentRuntime()
    report = await runtime.get_goal_progress()
    assert report["goal_id"] is None and report["overall_progress"] == 0.0

    bus = EventBus()
    goal = Goal("g", success_criteria=[
        Criterion("p", event_kinds=("agent.goal.progress",), event_check=lambda e: True)])
    tracker = GoalTracker(goal, bus)
    tracker.observe_event(Event("agent.goal.progress", {"progress": 1.0},
                                source=Source("goal", "g"), scope=Scope(run_id="r")))
    assert tracker.progress()["criteria_status"]["p"]["observations"] == 0
    await bus.close()
