"""Hive's ``OutcomeAggregator``: decisions, outcomes and executions of every stream, judged
against the goal (seeds 001 and 003 call it; its own module is not among the seeds).

The trackers report to it (``record_decision``, ``record_outcome``), the runtime reports
finished executions (``record_execution``, judged by the constraints that have a
``check(result)``) and constraint violations; ``AgentRuntime
.get_goal_progress()`` is its ``evaluate_goal_progress()``.

The goal is any object with ``id`` and, optionally, ``description``, ``success_criteria``
(items with ``id`` and optionally ``description``, ``metric``, ``target``, ``weight``) and
``constraints`` (items with ``id`` and optionally ``description``, ``check(result)``,
``entry_point``) -- Hive's
``Goal`` and our :class:`otel_agentbus.runtime.Goal` both fit. A criterion's value: for
``metric="count"`` the number of successes (outcomes plus completed executions), for
anything else (``success_rate``, Hive's default) the share of successes. ``target`` is a
number or a percentage string (``"90%"``); its default is 1.0.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ...runtime.execution import ExecutionResult
from ...runtime.tracker import Decision, Outcome

if TYPE_CHECKING:
    from .bus import EventBus

logger = logging.getLogger("otel_agentbus.compat.hive.outcomes")

_MAX_VIOLATIONS: Final = 1000


@dataclass(slots=True)
class _Tally:
    successes: int = 0
    failures: int = 0

    def add(self, success: bool) -> None:
        if success:
            self.successes += 1
        else:
            self.failures += 1

    @property
    def total(self) -> int:
        return self.successes + self.failures


def _target(raw: object, metric: str) -> float:
    """A criterion's target as a number: ``0.9``, ``90``, ``"90%"``, ``"0.9"``."""
    if raw is None or raw == "":
        return 1.0
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
        except ValueError:
            raise ValueError(f"criterion target must be a number or a percentage, "
                             f"got {raw!r}") from None
        return value
    else:
        raise ValueError(f"criterion target must be a number or a percentage, got {raw!r}")
    if metric != "count" and value > 1.0:
        value /= 100.0  # "90" for a rate means 90 %
    return value


class OutcomeAggregator:
    """Collects what every stream decided and how it turned out; judges the goal."""

    def __init__(self, goal: Any, event_bus: EventBus | None = None) -> None:
        if not isinstance(getattr(goal, "id", None), str):
            raise TypeError(f"goal needs a str attribute 'id', got {goal!r}")
        self.goal = goal
        self._event_bus = event_bus
        self._outcomes = _Tally()
        self._executions = _Tally()
        self._violations: list[dict[str, Any]] = []
        self._streams: set[str] = set()
        self.total_decisions = 0

    # -------------------------------------------------------------- recording
    def record_decision(self, stream_id: str, execution_id: str, decision: Decision) -> None:
        """Called by ``StreamDecisionTracker.decide`` (the seed's keyword arguments)."""
        self._streams.add(stream_id)
        self.total_decisions += 1

    def record_outcome(self, stream_id: str, execution_id: str, decision_id: str,
                       outcome: Outcome) -> None:
        """Called by ``StreamDecisionTracker.record_outcome`` (the seed's arguments)."""
        self._streams.add(stream_id)
        self._outcomes.add(bool(outcome.success))

    async def record_execution(self, stream_id: str, result: ExecutionResult) -> None:
        """A finished execution (cancelled ones are not judged); every goal constraint with
        a ``check(result)`` judges it: False or a message is a violation."""
        if result.status == "cancelled":
            return
        self._streams.add(stream_id)
        self._executions.add(result.success)
        for constraint in getattr(self.goal, "constraints", None) or ():
            check = getattr(constraint, "check", None)
            only = getattr(constraint, "entry_point", None)
            if not callable(check) or (only is not None and only != stream_id):
                continue
            try:
                verdict = check(result)
            except Exception as error:  # a broken check never breaks the runtime
                logger.warning("constraint %r check failed: %r", constraint.id, error)
                continue
            if verdict is False or (isinstance(verdict, str) and verdict):
                description = verdict if isinstance(verdict, str) else str(
                    getattr(constraint, "description", "") or constraint.id)
                await self.record_constraint_violation(
                    str(constraint.id), description, {"status": result.status},
                    stream_id, result.execution_id)

    async def record_constraint_violation(
        self, constraint_id: str, description: str,
        violation_details: Mapping[str, Any] | None = None, stream_id: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        """Note a violated constraint; published as ``constraint_violation`` on the bus."""
        self._violations.append({
            "constraint_id": constraint_id, "description": description,
            "details": dict(violation_details or {}), "stream_id": stream_id,
            "execution_id": execution_id,
        })
        del self._violations[:-_MAX_VIOLATIONS]
        if self._event_bus is not None and stream_id and execution_id:
            await self._event_bus.emit_constraint_violation(
                stream_id, execution_id, constraint_id, description)

    # -------------------------------------------------------------- judging
    def _criterion_status(self, criterion: Any) -> dict[str, Any]:
        metric = str(getattr(criterion, "metric", "success_rate") or "success_rate")
        target = _target(getattr(criterion, "target", None), metric)
        observations = self._outcomes.total + self._executions.total
        successes = self._outcomes.successes + self._executions.successes
        value = float(successes) if metric == "count" else (
            successes / observations if observations else 0.0)
        progress = min(1.0, value / target) if target > 0 else (1.0 if observations else 0.0)
        return {
            "description": str(getattr(criterion, "description", "") or ""),
            "metric": metric, "target": target, "value": value, "progress": progress,
            "met": observations > 0 and value >= target,
            "observations": observations,
        }

    async def evaluate_goal_progress(self) -> dict[str, Any]:
        """Hive's report: ``overall_progress``, ``criteria_status``,
        ``constraint_violations``, ``metrics``, ``recommendation``."""
        criteria: dict[str, dict[str, Any]] = {}
        weighted = total_weight = 0.0
        for criterion in getattr(self.goal, "success_criteria", None) or ():
            status = self._criterion_status(criterion)
            weight = float(getattr(criterion, "weight", 1.0) or 0.0)
            criteria[str(criterion.id)] = status
            weighted += weight * status["progress"]
            total_weight += weight
        overall = weighted / total_weight if total_weight else 0.0
        achieved = bool(criteria) and all(c["met"] for c in criteria.values()) \
            and not self._violations
        recommendation = ("complete" if achieved else
                          "adjust" if self._violations else "continue")
        report = {
            "goal_id": self.goal.id,
            "overall_progress": overall,
            "criteria_status": criteria,
            "constraint_violations": [dict(v) for v in self._violations],
            "metrics": self._metrics(),
            "recommendation": recommendation,
        }
        if self._event_bus is not None:
            await self._event_bus.emit_goal_progress(
                "outcome_aggregator", overall,
                {key: {"met": c["met"], "progress": c["progress"]} for key, c in criteria.items()})
        return report

    def _metrics(self) -> dict[str, Any]:
        return {
            "total_decisions": self.total_decisions,
            "successful_outcomes": self._outcomes.successes,
            "failed_outcomes": self._outcomes.failures,
            "executions": self._executions.total,
            "successful_executions": self._executions.successes,
            "streams_active": len(self._streams),
        }

    def get_stats(self) -> dict[str, Any]:
        return {"goal_id": self.goal.id, **self._metrics(),
                "constraint_violations": len(self._violations)}
