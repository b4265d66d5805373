"""The values a decision tracker store takes and gives back (seed 003's ``Run``,
``Decision``, ``Option``, ``Outcome`` and problems), and the error a closed store raises.

They live apart from the stores so that every store, and every reader of a store, shares
one definition without importing a storage engine.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "Decision",
    "DecisionType",
    "Option",
    "Outcome",
    "Problem",
    "Run",
    "RunStatus",
    "RunSummary",
    "StoreClosedError",
]


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DecisionType(enum.StrEnum):
    """What kind of choice a decision was (Hive's ``DecisionType``)."""

    TOOL_SELECTION = "tool_selection"
    PARAMETER_CHOICE = "parameter_choice"
    PATH_CHOICE = "path_choice"
    OUTPUT_FORMAT = "output_format"
    RETRY_STRATEGY = "retry_strategy"
    DELEGATION = "delegation"
    CUSTOM = "custom"


@dataclass(frozen=True, slots=True)
class Option:
    """One option the agent considered."""

    id: str
    description: str = ""
    action_type: str = "unknown"
    action_params: Mapping[str, Any] = field(default_factory=dict)
    pros: tuple[str, ...] = ()
    cons: tuple[str, ...] = ()
    confidence: float = 0.5

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Option:
        """Seed 003's option dict (``id`` required; the rest defaults as in the seed)."""
        if not isinstance(data, Mapping) or not data.get("id"):
            raise ValueError(f"an option needs a non-empty 'id', got {data!r}")
        confidence = data.get("confidence", 0.5)
        return cls(
            id=str(data["id"]),
            description=str(data.get("description", "")),
            action_type=str(data.get("action_type", "unknown")),
            action_params=dict(data.get("action_params") or {}),
            pros=tuple(str(p) for p in data.get("pros") or ()),
            cons=tuple(str(c) for c in data.get("cons") or ()),
            confidence=float(confidence) if confidence is not None else 0.5,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "description": self.description, "action_type": self.action_type,
            "action_params": dict(self.action_params), "pros": list(self.pros),
            "cons": list(self.cons), "confidence": self.confidence,
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened after a decision was acted on."""

    success: bool
    result: Any = None
    error: str | None = None
    summary: str = ""
    state_changes: Mapping[str, Any] = field(default_factory=dict)
    tokens_used: int = 0
    latency_ms: int = 0
    time_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success, "result": self.result, "error": self.error,
            "summary": self.summary, "state_changes": dict(self.state_changes),
            "tokens_used": self.tokens_used, "latency_ms": self.latency_ms,
            "time_ns": self.time_ns,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Outcome:
        return cls(
            success=bool(data["success"]), result=data.get("result"), error=data.get("error"),
            summary=data.get("summary", ""), state_changes=data.get("state_changes") or {},
            tokens_used=int(data.get("tokens_used", 0)),
            latency_ms=int(data.get("latency_ms", 0)), time_ns=int(data.get("time_ns", 0)),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """One recorded decision; ``outcome`` is filled in by ``record_outcome``."""

    id: str
    execution_id: str
    intent: str
    options: tuple[Option, ...]
    chosen_option_id: str
    reasoning: str
    node_id: str | None = None
    decision_type: str = DecisionType.CUSTOM.value
    active_constraints: tuple[str, ...] = ()
    input_context: Mapping[str, Any] = field(default_factory=dict)
    time_ns: int = 0
    outcome: Outcome | None = None

    @property
    def chosen_option(self) -> Option | None:
        return next((o for o in self.options if o.id == self.chosen_option_id), None)

    @property
    def was_successful(self) -> bool | None:
        return None if self.outcome is None else self.outcome.success


@dataclass(frozen=True, slots=True)
class Problem:
    """A problem reported during a run."""

    id: str
    execution_id: str
    severity: str
    description: str
    decision_id: str | None = None
    root_cause: str | None = None
    suggested_fix: str | None = None
    node_id: str | None = None
    time_ns: int = 0


@dataclass(slots=True)
class Run:
    """One execution's run with everything recorded in it. Getters hand out copies."""

    execution_id: str
    stream_id: str
    goal_id: str | None = None
    goal_description: str = ""
    input_data: Mapping[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    started_ns: int = 0
    ended_ns: int | None = None
    narrative: str = ""
    output_data: Mapping[str, Any] = field(default_factory=dict)
    agent: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def id(self) -> str:
        """The run id: the execution id (one id on the bus, in the trace and the store)."""
        return self.execution_id

    @property
    def duration_ms(self) -> float | None:
        return None if self.ended_ns is None else (self.ended_ns - self.started_ns) / 1e6

    def copy(self) -> Run:
        return replace(self, decisions=list(self.decisions), problems=list(self.problems))

    def summary(self) -> RunSummary:
        return RunSummary(
            execution_id=self.execution_id, stream_id=self.stream_id, goal_id=self.goal_id,
            status=self.status, started_ns=self.started_ns, ended_ns=self.ended_ns,
            narrative=self.narrative, agent=self.agent, trace_id=self.trace_id,
            decision_count=len(self.decisions), problem_count=len(self.problems),
        )


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run without its decisions, for listings."""

    execution_id: str
    stream_id: str
    goal_id: str | None
    status: RunStatus
    started_ns: int
    ended_ns: int | None
    narrative: str
    agent: str | None
    trace_id: str | None
    decision_count: int
    problem_count: int


class StoreClosedError(RuntimeError):
    """Writing to a tracker store after ``close()``."""
