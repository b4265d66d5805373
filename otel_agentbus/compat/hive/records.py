"""The run record of seed 003's tracker: live while the run goes on (later decisions show
in the object ``get_run`` returned), handed to ``storage.save_run`` when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ...runtime.tracker import Decision, Outcome, Problem, RunStatus


@dataclass
class Run:
    """A run as the seed's tracker holds it: live while running (later decisions show)."""

    id: str
    goal_id: str
    goal_description: str = ""
    input_data: dict[str, Any] = field(default_factory=dict)
    output_data: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    narrative: str = ""
    decisions: list[Decision] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    started_at: datetime = field(default_factory=datetime.now)
    completed_at: datetime | None = None
    execution_id: str = ""
    stream_id: str = ""
    trace_id: str | None = None

    def add_decision(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def record_outcome(self, decision_id: str, outcome: Outcome) -> None:
        for index, decision in enumerate(self.decisions):
            if decision.id == decision_id:
                self.decisions[index] = replace(decision, outcome=outcome)
                return

    def complete(self, status: RunStatus, narrative: str = "") -> None:
        self.status = status
        self.narrative = narrative
        self.completed_at = datetime.now()

    @property
    def duration_ms(self) -> float | None:
        if self.completed_at is None:
            return None
        return (self.completed_at - self.started_at).total_seconds() * 1000.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for storages that write runs to disk."""
        return {
            "id": self.id, "goal_id": self.goal_id, "goal_description": self.goal_description,
            "input_data": self.input_data, "output_data": self.output_data,
            "status": self.status.value, "narrative": self.narrative,
            "decisions": [{
                "id": d.id, "node_id": d.node_id, "intent": d.intent,
                "decision_type": d.decision_type, "options": [o.to_dict() for o in d.options],
                "chosen_option_id": d.chosen_option_id, "reasoning": d.reasoning,
                "active_constraints": list(d.active_constraints),
                "input_context": dict(d.input_context),
                "outcome": d.outcome.to_dict() if d.outcome is not None else None,
            } for d in self.decisions],
            "problems": [{
                "id": p.id, "severity": p.severity, "description": p.description,
                "decision_id": p.decision_id, "root_cause": p.root_cause,
                "suggested_fix": p.suggested_fix, "node_id": p.node_id,
            } for p in self.problems],
            "started_at": self.started_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "execution_id": self.execution_id, "stream_id": self.stream_id,
            "trace_id": self.trace_id,
        }
