"""Hive's ``StreamDecisionTracker`` and ``StreamRuntimeAdapter`` (seed 003), over our tracker.

Written as the seed calls it::

    tracker = StreamDecisionTracker(stream_id="webhook", storage=storage,
                                    outcome_aggregator=aggregator)
    run_id = tracker.start_run(execution_id="exec_123", goal_id="support-goal")

Every call also goes to an :class:`otel_agentbus.runtime.DecisionTracker`, which
publishes ``agent.run.*``, ``agent.decision.made``, ``agent.decision.outcome`` and
``agent.problem.reported`` on the bus, so the run is a trace and its decisions are span
events once telemetry is attached. The bus is ``bus=`` (not in the seed), else the default
bus (``otel_agentbus.instrument.set_default_bus``), else a new one.

``storage``: any object with ``save_run(run)`` (a coroutine function or a plain one), as
the seed's ``ConcurrentStorage`` has; ``end_run`` hands it the finished :class:`Run`.
``outcome_aggregator``: any object with the seed's ``record_decision(stream_id=,
execution_id=, decision=)`` and ``record_outcome(stream_id=, execution_id=,
decision_id=, outcome=)``.

Where it differs from the seed (all in ``docs/conformance-hive.md``): the trace's run id is
the *execution* id (so the execution's bus events and the tracker's decisions share one
trace; the seed's ``run_…`` id names the :class:`Run` record); ``set_trace_context`` gets
the run's real OpenTelemetry trace id, not a fresh random one; ``get_run`` returns None as
soon as ``end_run`` returned (the seed: once the save finished).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import uuid
from datetime import datetime
from typing import Any, Final

from ...bus import EventBus as CoreBus
from ...instrument import get_default_bus
from ...runtime.tracker import (
    Decision,
    DecisionTracker,
    DecisionType,
    Option,
    Outcome,
    Problem,
    RunStatus,
    RunSummary,
)
from ...runtime.tracker import (
    Run as StoredRun,
)
from .observability import get_trace_context, set_trace_context
from .records import Run

__all__ = [
    "Decision",
    "DecisionType",
    "Option",
    "Outcome",
    "Problem",
    "Run",
    "RunStatus",
    "StreamDecisionTracker",
    "StreamRuntime",
    "StreamRuntimeAdapter",
    "get_trace_context",
    "set_trace_context",
]

logger = logging.getLogger("otel_agentbus.compat.hive.tracker")

_UNKNOWN_NODE: Final = "unknown"


class _NoStore:
    """The core tracker's store here: the seed's ``storage`` is what persists."""

    def run_started(self, run: StoredRun) -> None: ...
    def decision_made(self, decision: Decision) -> None: ...
    def outcome_recorded(self, execution_id: str, decision_id: str, outcome: Outcome) -> None: ...
    def problem_reported(self, problem: Problem) -> None: ...
    def run_ended(self, run: StoredRun) -> None: ...

    def get_run(self, execution_id: str) -> StoredRun | None:
        return None

    def list_runs(self, *, stream_id: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunSummary]:
        return []

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None: ...


class StreamDecisionTracker:
    """Runs by execution id, with decisions, outcomes and problems (the seed's API).

    ``bus`` and ``publish_run_events`` are not in the seed: the bus to publish on, and
    whether ``start_run``/``end_run`` open and close the run themselves (False when a
    runtime already did, e.g. inside :class:`~otel_agentbus.compat.hive.AgentRuntime`).
    """

    def __init__(
        self,
        stream_id: str,
        storage: Any,
        outcome_aggregator: Any = None,
        *,
        bus: CoreBus | None = None,
        publish_run_events: bool = True,
    ) -> None:
        if storage is not None and not callable(getattr(storage, "save_run", None)):
            raise TypeError(f"storage needs a save_run(run) method (like Hive's "
                            f"ConcurrentStorage), got {type(storage).__name__}")
        self.stream_id = stream_id
        self._storage = storage
        self._outcome_aggregator = outcome_aggregator
        core_bus = bus if bus is not None else get_default_bus()
        self.decision_tracker = DecisionTracker(
            core_bus if core_bus is not None else CoreBus(), stream_id, _NoStore(),
            publish_run_events=publish_run_events)
        """The project's tracker doing the publishing (not in the seed)."""
        self._runs: dict[str, Run] = {}
        self._lock = threading.RLock()
        """Many executions may record from many threads at once (as the seed promises)."""
        self._current_nodes: dict[str, str] = {}
        self._saves: set[asyncio.Task[None]] = set()

    @property
    def bus(self) -> CoreBus:
        return self.decision_tracker.bus

    # ------------------------------------------------------------ run lifecycle
    def start_run(
        self,
        execution_id: str,
        goal_id: str,
        goal_description: str = "",
        input_data: dict[str, Any] | None = None,
    ) -> str:
        """Start a run for an execution; returns the run id (``run_<stream>_<time>_<hex>``)."""
        with self._lock:
            timestamp = datetime.now().strftime("%Y%m%d_%H%M%S")
            run_id = f"run_{self.stream_id}_{timestamp}_{uuid.uuid4().hex[:8]}"
            self.decision_tracker.start_run(execution_id, goal_id, goal_description, input_data)
            stored = self.decision_tracker.get_run(execution_id)
            trace_id = (stored.trace_id if stored is not None else None) or uuid.uuid4().hex
            set_trace_context(trace_id=trace_id, execution_id=execution_id, run_id=run_id,
                              goal_id=goal_id, stream_id=self.stream_id)
            self._runs[execution_id] = Run(
                id=run_id, goal_id=goal_id, goal_description=goal_description,
                input_data=dict(input_data or {}), execution_id=execution_id,
                stream_id=self.stream_id, trace_id=trace_id)
            self._current_nodes[execution_id] = _UNKNOWN_NODE
            return run_id

    def end_run(
        self,
        execution_id: str,
        success: bool,
        narrative: str = "",
        output_data: dict[str, Any] | None = None,
    ) -> None:
        """End the run and hand it to ``storage.save_run`` (in a task when it is async)."""
        with self._lock:
            run = self._runs.pop(execution_id, None)
            self._current_nodes.pop(execution_id, None)
            if run is None:
                logger.warning("end_run called but no run for execution %s", execution_id)
                return
            run.output_data = dict(output_data or {})
            run.complete(RunStatus.COMPLETED if success else RunStatus.FAILED, narrative)
            self.decision_tracker.end_run(execution_id, success, narrative, output_data)
        self._save(run)  # outside the lock: a plain save_run may take its time

    def _save(self, run: Run) -> None:
        if self._storage is None:
            return
        try:
            saving = self._storage.save_run(run)
        except Exception as error:
            logger.error("Failed to save run %s: %s", run.id, error)
            return
        if not inspect.isawaitable(saving):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._await_save(run, saving))
            return
        task = loop.create_task(self._await_save(run, saving), name=f"save {run.id}")
        self._saves.add(task)
        task.add_done_callback(self._saves.discard)

    @staticmethod
    async def _await_save(run: Run, saving: Any) -> None:
        try:
            await saving
        except Exception as error:
            logger.error("Failed to save run %s: %s", run.id, error)

    async def wait_saved(self) -> None:
        """Wait for the runs ``end_run`` is still saving (not in the seed)."""
        while self._saves:
            await asyncio.gather(*self._saves, return_exceptions=True)

    def set_node(self, execution_id: str, node_id: str) -> None:
        """Set the current node context for an execution."""
        self._current_nodes[execution_id] = node_id
        if execution_id in self._runs:
            self.decision_tracker.set_node(execution_id, node_id)

    def get_run(self, execution_id: str) -> Run | None:
        """The live run of an execution (None once it ended)."""
        return self._runs.get(execution_id)

    # ---------------------------------------------------------------- decisions
    def decide(
        self,
        execution_id: str,
        intent: str,
        options: list[dict[str, Any]],
        chosen: str,
        reasoning: str,
        node_id: str | None = None,
        decision_type: DecisionType = DecisionType.CUSTOM,
        constraints: list[str] | None = None,
        context: dict[str, Any] | None = None,
    ) -> str:
        """Record a decision; its id (``dec_N``), or "" when no run is in progress."""
        with self._lock:
            run = self._runs.get(execution_id)
            if run is None:
                logger.warning("decide called but no run for execution %s: %s", execution_id,
                               intent)
                return ""
            current = node_id or self._current_nodes.get(execution_id, _UNKNOWN_NODE)
            decision_id = self.decision_tracker.decide(
                execution_id, intent, options, chosen, reasoning,
                None if current == _UNKNOWN_NODE else current, decision_type, constraints,
                context)
            if not decision_id:
                return ""
            decision = Decision(
                id=decision_id, execution_id=execution_id, intent=intent,
                options=tuple(Option.from_dict(o) for o in options), chosen_option_id=chosen,
                reasoning=reasoning, node_id=current, decision_type=str(decision_type),
                active_constraints=tuple(constraints or ()), input_context=dict(context or {}))
            run.add_decision(decision)
            if self._outcome_aggregator is not None:
                self._outcome_aggregator.record_decision(
                    stream_id=self.stream_id, execution_id=execution_id, decision=decision)
            return decision_id

    def record_outcome(
        self,
        execution_id: str,
        decision_id: str,
        success: bool,
        result: Any = None,
        error: str | None = None,
        summary: str = "",
        state_changes: dict[str, Any] | None = None,
        tokens_used: int = 0,
        latency_ms: int = 0,
    ) -> None:
        """Record the outcome of a decision."""
        with self._lock:
            run = self._runs.get(execution_id)
            if run is None:
                logger.warning("record_outcome called but no run for execution %s", execution_id)
                return
            outcome = Outcome(success=success, result=result, error=error, summary=summary,
                              state_changes=dict(state_changes or {}), tokens_used=tokens_used,
                              latency_ms=latency_ms)
            run.record_outcome(decision_id, outcome)
            self.decision_tracker.record_outcome(execution_id, decision_id, success, result, error,
                                                 summary, state_changes, tokens_used, latency_ms)
            if self._outcome_aggregator is not None:
                self._outcome_aggregator.record_outcome(
                    stream_id=self.stream_id, execution_id=execution_id, decision_id=decision_id,
                    outcome=outcome)

    def report_problem(
        self,
        execution_id: str,
        severity: str,
        description: str,
        decision_id: str | None = None,
        root_cause: str | None = None,
        suggested_fix: str | None = None,
    ) -> str:
        """Report a problem; its id, or "" when no run is in progress."""
        with self._lock:
            run = self._runs.get(execution_id)
            if run is None:
                logger.warning("report_problem called but no run for execution %s: [%s] %s",
                               execution_id, severity, description)
                return ""
            problem_id = self.decision_tracker.report_problem(
                execution_id, severity, description, decision_id, root_cause, suggested_fix)
            node = self._current_nodes.get(execution_id)
            run.problems.append(Problem(
                id=problem_id or f"prob_{len(run.problems)}", execution_id=execution_id,
                severity=severity, description=description, decision_id=decision_id,
                root_cause=root_cause, suggested_fix=suggested_fix,
                node_id=None if node == _UNKNOWN_NODE else node))
            return run.problems[-1].id

    def quick_decision(
        self,
        execution_id: str,
        intent: str,
        action: str,
        reasoning: str,
        node_id: str | None = None,
    ) -> str:
        """A decision with a single option: what the agent is doing and why."""
        return self.decide(
            execution_id=execution_id, intent=intent,
            options=[{"id": "action", "description": action, "action_type": "execute"}],
            chosen="action", reasoning=reasoning, node_id=node_id)

    # ---------------------------------------------------------------- stats
    def get_active_executions(self) -> list[str]:
        return list(self._runs)

    def get_stats(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "active_executions": len(self._runs),
                "execution_ids": list(self._runs)}


StreamRuntime = StreamDecisionTracker
"""The name seed 003's own docstring example uses (the class's former name)."""


class StreamRuntimeAdapter:
    """The tracker's methods for one execution (the seed's adapter for graph code)."""

    def __init__(self, stream_runtime: StreamDecisionTracker, execution_id: str) -> None:
        self._runtime = stream_runtime
        self._execution_id = execution_id
        self._current_node = _UNKNOWN_NODE

    def _node(self, node_id: str | None) -> str:
        """The node a decision belongs to: the given one, else the last ``set_node``."""
        return node_id or self._current_node

    @property
    def storage(self) -> Any:
        return self._runtime._storage

    @property
    def execution_id(self) -> str:
        return self._execution_id

    @property
    def current_run(self) -> Run | None:
        return self._runtime.get_run(self._execution_id)

    def start_run(self, goal_id: str, goal_description: str = "",
                  input_data: dict[str, Any] | None = None) -> str:
        return self._runtime.start_run(execution_id=self._execution_id, goal_id=goal_id,
                                       goal_description=goal_description,
                                       input_data=input_data)

    def end_run(self, success: bool, narrative: str = "",
                output_data: dict[str, Any] | None = None) -> None:
        self._runtime.end_run(execution_id=self._execution_id, success=success,
                              narrative=narrative, output_data=output_data)

    def set_node(self, node_id: str) -> None:
        self._current_node = node_id
        self._runtime.set_node(self._execution_id, node_id)

    def decide(self, intent: str, options: list[dict[str, Any]], chosen: str, reasoning: str,
               node_id: str | None = None, decision_type: DecisionType = DecisionType.CUSTOM,
               constraints: list[str] | None = None,
               context: dict[str, Any] | None = None) -> str:
        return self._runtime.decide(
            execution_id=self._execution_id, intent=intent, options=options, chosen=chosen,
            reasoning=reasoning, node_id=self._node(node_id),
            decision_type=decision_type, constraints=constraints, context=context)

    def record_outcome(self, decision_id: str, success: bool, result: Any = None,
                       error: str | None = None, summary: str = "",
                       state_changes: dict[str, Any] | None = None, tokens_used: int = 0,
                       latency_ms: int = 0) -> None:
        self._runtime.record_outcome(
            execution_id=self._execution_id, decision_id=decision_id, success=success,
            result=result, error=error, summary=summary, state_changes=state_changes,
            tokens_used=tokens_used, latency_ms=latency_ms)

    def report_problem(self, severity: str, description: str, decision_id: str | None = None,
                       root_cause: str | None = None,
                       suggested_fix: str | None = None) -> str:
        return self._runtime.report_problem(
            execution_id=self._execution_id, severity=severity, description=description,
            decision_id=decision_id, root_cause=root_cause, suggested_fix=suggested_fix)

    def quick_decision(self, intent: str, action: str, reasoning: str,
                       node_id: str | None = None) -> str:
        return self._runtime.quick_decision(
            execution_id=self._execution_id, intent=intent, action=action,
            reasoning=reasoning, node_id=self._node(node_id))

