"""Goals: success criteria measured from executions and events, and constraints checked.

A :class:`Criterion` turns each observation into a score in [0, 1]: its ``check`` on a
finished execution (default: 1.0 when the execution completed, 0.0 when it failed), or
its ``event_check`` on bus events of ``event_kinds``. ``None`` means "not applicable".
The ``metric`` combines the scores into a value: ``success_rate`` (their mean),
``count`` (their sum, e.g. target 3 = "three tickets answered") or ``latest``. Progress
is ``value / target`` capped at 1; the criterion is met when ``value >= target``.

A :class:`Constraint`'s check returns True (or None) when satisfied, False or a message
when violated. Violations are reported, never raised: a violation does not fail the run.

:class:`GoalTracker` publishes ``agent.goal.progress`` (droppable) after each update,
``agent.constraint.violated`` per violation, and ``agent.goal.achieved`` once, the first
time every criterion is met with no hard constraint violated. Executions are observed
inside their run, so these events become span events of the run's span. Cancelled
executions are not observed. A check that raises counts as a ``check_errors``, nothing more.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..bus import EventBus
from ..events import Event, Scope, Severity, Source
from ..filters import make_filter
from ..kinds import CONSTRAINT_VIOLATED, GOAL_ACHIEVED, GOAL_PROGRESS, validate_kind
from ..runs import RunHandle
from ..subscription import Subscription
from .execution import ExecutionResult

logger = logging.getLogger("otel_agentbus.runtime.goals")

Score = bool | float | int | None
ExecutionCheck = Callable[[ExecutionResult], Score]
EventCheck = Callable[[Event], Score]
ConstraintCheck = Callable[[ExecutionResult], "bool | str | None"]
EventConstraintCheck = Callable[[Event], "bool | str | None"]
Metric = Literal["success_rate", "count", "latest"]


@dataclass(frozen=True)
class Criterion:
    id: str
    description: str = ""
    check: ExecutionCheck | None = None
    metric: Metric = "success_rate"
    target: float = 1.0
    weight: float = 1.0
    entry_point: str | None = None
    """Only executions of this entry point count (None: all)."""
    event_kinds: tuple[str, ...] = ()
    event_check: EventCheck | None = None


@dataclass(frozen=True)
class Constraint:
    id: str
    description: str = ""
    check: ConstraintCheck | None = None
    hard: bool = True
    entry_point: str | None = None
    event_kinds: tuple[str, ...] = ()
    event_check: EventConstraintCheck | None = None


@dataclass(frozen=True)
class Goal:
    id: str
    description: str = ""
    success_criteria: Sequence[Criterion] = ()
    constraints: Sequence[Constraint] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"goal id must be a non-empty str, got {self.id!r}")
        groups: tuple[tuple[str, Sequence[Criterion | Constraint]], ...] = (
            ("criterion", self.success_criteria), ("constraint", self.constraints))
        for group, items in groups:
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    raise ValueError(f"goal {self.id!r}: duplicate {group} id {item.id!r}")
                seen.add(item.id)
                for kind in item.event_kinds:
                    validate_kind(kind)
                if item.event_kinds and item.event_check is None:
                    raise ValueError(f"goal {self.id!r}: {group} {item.id!r} has event_kinds "
                                     "but no event_check")
        for criterion in self.success_criteria:
            if criterion.metric not in ("success_rate", "count", "latest"):
                raise ValueError(f"criterion {criterion.id!r}: unknown metric "
                                 f"{criterion.metric!r}")
            if criterion.target < 0 or criterion.weight < 0:
                raise ValueError(f"criterion {criterion.id!r}: target and weight must be >= 0")


class _CriterionState:
    __slots__ = ("latest", "observations", "total")

    def __init__(self) -> None:
        self.observations = 0
        self.total = 0.0
        self.latest = 0.0

    def add(self, score: float) -> None:
        self.observations += 1
        self.total += score
        self.latest = score

    def value(self, metric: Metric) -> float:
        if metric == "count":
            return self.total
        if metric == "latest":
            return self.latest
        return self.total / self.observations if self.observations else 0.0


def _score(raw: Score) -> float | None:
    if raw is None:
        return None
    return max(0.0, min(1.0, float(raw)))


class GoalTracker:
    """Aggregates a goal's progress; the runtime feeds it finished executions."""

    def __init__(self, goal: Goal, bus: EventBus, *, max_violations: int = 1000) -> None:
        self.goal = goal
        self._bus = bus
        self._criteria = {c.id: _CriterionState() for c in goal.success_criteria}
        self._violations: deque[dict[str, Any]] = deque(maxlen=max_violations)
        self.violation_count = 0
        self.hard_violations = 0
        self.executions = 0
        self.completed = 0
        self.failed = 0
        self.check_errors = 0
        self.achieved = False
        self._subscription: Subscription | None = None

    # ---------------------------------------------------------------- events
    def event_kinds(self) -> frozenset[str]:
        kinds = [kind for c in self.goal.success_criteria for kind in c.event_kinds]
        kinds += [kind for c in self.goal.constraints for kind in c.event_kinds]
        return frozenset(kinds)

    def attach(self) -> None:
        """Subscribe to the kinds the event checks look at (no-op when there are none)."""
        kinds = self.event_kinds()
        if kinds and self._subscription is None:
            self._subscription = self._bus.subscribe(
                self.observe_event, filter=make_filter(kinds=kinds),
                name=f"goal:{self.goal.id}")

    def detach(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    # ----------------------------------------------------------- observation
    def _call(self, check: Callable[[Any], Any], subject: Any, what: str) -> Any:
        try:
            return check(subject)
        except Exception:
            self.check_errors += 1
            logger.exception("goal %r: %s check raised", self.goal.id, what)
            return None

    def observe_execution(self, result: ExecutionResult, run: RunHandle | None = None) -> None:
        """Score a finished (completed or failed) execution; publishes in the run's scope."""
        if result.status == "cancelled":
            return
        self.executions += 1
        if result.success:
            self.completed += 1
        else:
            self.failed += 1
        scope = run.scope if run is not None else Scope(run_id=result.execution_id,
                                                        stream_id=result.entry_point)
        changed = False
        for criterion in self.goal.success_criteria:
            if criterion.entry_point not in (None, result.entry_point):
                continue
            if criterion.check is None:
                if criterion.event_check is not None:
                    continue  # an event-only criterion
                score: float | None = 1.0 if result.success else 0.0
            else:
                score = _score(self._call(criterion.check, result, f"criterion {criterion.id}"))
            if score is not None:
                self._criteria[criterion.id].add(score)
                changed = True
        for constraint in self.goal.constraints:
            if constraint.check is None or constraint.entry_point not in (
                    None, result.entry_point):
                continue
            verdict = self._call(constraint.check, result, f"constraint {constraint.id}")
            self._judge(constraint, verdict, scope, result.execution_id, result.entry_point)
        self._after_update(scope, changed)

    def observe_event(self, event: Event) -> None:
        """Score a bus event with the checks that look at its kind."""
        if event.source.component == "goal":
            return  # our own progress events must not feed back into the goal
        scope = event.scope._replace(node_id=None)
        changed = False
        for criterion in self.goal.success_criteria:
            if criterion.event_check is None or event.kind not in criterion.event_kinds:
                continue
            score = _score(self._call(criterion.event_check, event, f"criterion {criterion.id}"))
            if score is not None:
                self._criteria[criterion.id].add(score)
                changed = True
        for constraint in self.goal.constraints:
            if constraint.event_check is None or event.kind not in constraint.event_kinds:
                continue
            verdict = self._call(constraint.event_check, event, f"constraint {constraint.id}")
            self._judge(constraint, verdict, scope, event.scope.run_id, event.scope.stream_id)
        self._after_update(scope, changed)

    def _judge(self, constraint: Constraint, verdict: Any, scope: Scope,
               execution_id: str | None, entry_point: str | None) -> None:
        if verdict is None or verdict is True:
            return
        message = verdict if isinstance(verdict, str) else constraint.description
        record = {"constraint_id": constraint.id, "description": constraint.description,
                  "message": message, "hard": constraint.hard, "execution_id": execution_id,
                  "entry_point": entry_point, "time": time.time()}
        self._violations.append(record)
        self.violation_count += 1
        if constraint.hard:
            self.hard_violations += 1
        self._publish(CONSTRAINT_VIOLATED,
                      {k: v for k, v in record.items() if k != "time"}
                      | {"goal_id": self.goal.id}, scope,
                      Severity.ERROR if constraint.hard else Severity.WARN)

    def _after_update(self, scope: Scope, changed: bool) -> None:
        if not changed:
            return
        report = self.progress()
        self._publish(GOAL_PROGRESS,
                      {"goal_id": self.goal.id, "progress": report["overall_progress"],
                       "criteria_status": {cid: {"progress": s["progress"], "met": s["met"]}
                                           for cid, s in report["criteria_status"].items()}},
                      scope)
        if not self.achieved and report["achieved"]:
            self.achieved = True
            self._publish(GOAL_ACHIEVED,
                          {"goal_id": self.goal.id, "progress": report["overall_progress"]},
                          scope)

    def _publish(self, kind: str, payload: dict[str, Any], scope: Scope,
                 severity: Severity = Severity.INFO) -> None:
        if self._bus.closed:
            return
        self._bus.publish_nowait(Event(kind, payload, scope=scope, severity=severity,
                                       source=Source("goal", self.goal.id)))

    # ---------------------------------------------------------------- report
    def progress(self) -> dict[str, Any]:
        """The report ``AgentRuntime.get_goal_progress()`` returns (Hive's shape)."""
        criteria: dict[str, dict[str, Any]] = {}
        weighted = total_weight = 0.0
        for criterion in self.goal.success_criteria:
            state = self._criteria[criterion.id]
            value = state.value(criterion.metric)
            if criterion.target > 0:
                progress = min(1.0, value / criterion.target)
            else:
                progress = 1.0 if state.observations else 0.0
            met = state.observations > 0 and value >= criterion.target
            criteria[criterion.id] = {
                "description": criterion.description, "metric": criterion.metric,
                "target": criterion.target, "value": value, "progress": progress, "met": met,
                "observations": state.observations,
            }
            weighted += criterion.weight * progress
            total_weight += criterion.weight
        overall = weighted / total_weight if total_weight else 0.0
        achieved = bool(criteria) and all(c["met"] for c in criteria.values()) \
            and self.hard_violations == 0
        if achieved:
            recommendation = "complete"
        elif self.hard_violations:
            recommendation = "adjust"
        else:
            recommendation = "continue"
        return {
            "goal_id": self.goal.id,
            "description": self.goal.description,
            "overall_progress": overall,
            "progress": overall,
            "achieved": achieved,
            "criteria_status": criteria,
            "constraint_violations": [dict(v) for v in self._violations],
            "metrics": {
                "executions": self.executions, "completed": self.completed,
                "failed": self.failed,
                "success_rate": self.completed / self.executions if self.executions else 0.0,
                "violations": self.violation_count, "hard_violations": self.hard_violations,
                "check_errors": self.check_errors,
            },
            "recommendation": recommendation,
        }


def empty_progress() -> dict[str, Any]:
    """The report of a runtime without a goal."""
    return {"goal_id": None, "description": "", "overall_progress": 0.0, "progress": 0.0,
            "achieved": False, "criteria_status": {}, "constraint_violations": [],
            "metrics": {"executions": 0, "completed": 0, "failed": 0, "success_rate": 0.0,
                        "violations": 0, "hard_violations": 0, "check_errors": 0},
            "recommendation": "continue"}
