"""The decision tracker (seed 003's ``StreamDecisionTracker``), publishing on the bus.

One tracker per stream records, per execution, the decisions an agent makes (with the
options it weighed), their outcomes and the problems it reports. Every call publishes an
event (``agent.decision.made``, ``agent.decision.outcome``, ``agent.problem.reported``)
scoped to the run (``run_id`` = execution id), so the telemetry mirror turns them into
span events on the run's trace, and a store keeps them for later reading.

Why it differs from the seed: the run id *is* the execution id (one id on the bus, in the
trace and in the store); a call for an unknown execution is logged and does nothing,
never an exception; and the run events are optional (``publish_run_events=False``) for
when the runtime already opened the run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from opentelemetry import trace

from ..bus import BusClosedError, EventBus
from ..events import Event, Scope, Severity, Source
from ..kinds import (
    DECISION_MADE,
    DECISION_OUTCOME,
    PROBLEM_REPORTED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_STARTED,
)
from ..runs import json_safe
from .tracker_store import (
    Decision,
    DecisionType,
    InMemoryTrackerStore,
    Option,
    Outcome,
    Problem,
    Run,
    RunStatus,
    RunSummary,
    SQLiteTrackerStore,
    TrackerStore,
)

logger = logging.getLogger("otel_agentbus.runtime.tracker")

_PROBLEM_SEVERITY: Final = {
    "critical": Severity.ERROR, "error": Severity.ERROR, "warning": Severity.WARN,
    "warn": Severity.WARN, "minor": Severity.INFO, "info": Severity.INFO,
}

__all__ = [
    "Decision",
    "DecisionTracker",
    "DecisionType",
    "ExecutionDecisions",
    "Option",
    "Outcome",
    "Problem",
    "Run",
    "RunStatus",
    "RunSummary",
]


@dataclass(slots=True)
class _Active:
    run: Run
    scope: Scope
    node_id: str | None = None
    index: dict[str, int] = field(default_factory=dict)


class DecisionTracker:
    """Records decisions, outcomes and problems of many concurrent executions of a stream.

    ``store``: a :class:`TrackerStore`, a path (an SQLite file is opened there and closed
    by :meth:`close`), or None for a bounded in-memory store. Safe from many tasks and
    from threads: state is keyed by execution id under one lock, events are published with
    ``publish_nowait`` (the decision kinds are must-deliver, so never dropped).
    """

    def __init__(
        self,
        bus: EventBus,
        stream_id: str,
        store: TrackerStore | str | os.PathLike[str] | None = None,
        *,
        agent: str | None = None,
        publish_run_events: bool = True,
    ) -> None:
        if not isinstance(stream_id, str) or not stream_id:
            raise ValueError(f"stream_id must be a non-empty str, got {stream_id!r}")
        self.bus = bus
        self.stream_id = stream_id
        self.agent = agent
        self.publish_run_events = publish_run_events
        self._owns_store = not isinstance(store, TrackerStore)
        if store is None:
            self.store: TrackerStore = InMemoryTrackerStore()
        elif isinstance(store, TrackerStore):
            self.store = store
        else:
            self.store = SQLiteTrackerStore(store)
        self._active: dict[str, _Active] = {}
        self._lock = threading.RLock()
        self._publish_failures = 0
        self._store_failures = 0
        self._source = Source("agent", agent or stream_id)

    # ------------------------------------------------------------------ helpers
    def _unknown(self, method: str, execution_id: str, detail: str = "") -> None:
        logger.warning("DecisionTracker(%s).%s: no run for execution %r; ignored%s",
                       self.stream_id, method, execution_id, f" ({detail})" if detail else "")

    def _publish(self, kind: str, payload: Mapping[str, Any], scope: Scope,
                 severity: Severity = Severity.INFO) -> Event | None:
        try:
            event = Event(kind, payload, scope=scope, source=self._source, severity=severity)
            self.bus.publish_nowait(event)
        except (BusClosedError, RuntimeError, ValueError) as error:
            # Recording must not break the agent: the store still gets the record.
            self._publish_failures += 1
            level = logging.WARNING if self._publish_failures == 1 else logging.DEBUG
            logger.log(level, "DecisionTracker(%s): could not publish %s: %s",
                       self.stream_id, kind, error)
            return None
        return event

    def _store(self, method: str, *args: Any) -> None:
        try:
            getattr(self.store, method)(*args)
        except Exception as error:
            self._store_failures += 1
            logger.warning("DecisionTracker(%s): store.%s failed: %r", self.stream_id, method,
                           error)

    # ----------------------------------------------------------- run lifecycle
    def start_run(
        self,
        execution_id: str,
        goal_id: str | None = None,
        goal_description: str = "",
        input_data: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        graph_id: str | None = None,
        agent: str | None = None,
        traceparent: str | None = None,
    ) -> str:
        """Start tracking ``execution_id``; returns the run id (the execution id).

        With ``publish_run_events`` this publishes ``agent.run.started`` (the mirror opens
        the run span); otherwise the run is assumed opened by the runtime.
        """
        if not isinstance(execution_id, str) or not execution_id:
            raise ValueError(f"execution_id must be a non-empty str, got {execution_id!r}")
        with self._lock:
            if execution_id in self._active:
                logger.warning("DecisionTracker(%s).start_run: execution %r is already "
                               "running; ignored", self.stream_id, execution_id)
                return execution_id
            agent = agent or self.agent
            scope = Scope(run_id=execution_id, stream_id=self.stream_id, agent=agent,
                          session_id=session_id, graph_id=graph_id)
            run = Run(execution_id=execution_id, stream_id=self.stream_id, goal_id=goal_id,
                      goal_description=goal_description, input_data=dict(input_data or {}),
                      started_ns=time.time_ns(), agent=agent, session_id=session_id)
            if self.publish_run_events:
                payload: dict[str, Any] = {"goal_id": goal_id,
                                           "goal_description": goal_description}
                if input_data is not None:
                    payload["input"] = json_safe(dict(input_data))
                if traceparent:
                    payload["traceparent"] = traceparent
                started = self._publish(RUN_STARTED, payload, scope)
                if started is not None:
                    run.trace_id = started.correlation.trace_id
                    run.span_id = started.correlation.span_id
            else:  # the runtime's run span is current (RunScope attaches it)
                context = trace.get_current_span().get_span_context()
                if context.is_valid:
                    run.trace_id = format(context.trace_id, "032x")
                    run.span_id = format(context.span_id, "016x")
            self._active[execution_id] = _Active(run, scope)
            self._store("run_started", run.copy())
        logger.debug("started run %s in stream %s", execution_id, self.stream_id)
        return execution_id

    def end_run(
        self,
        execution_id: str,
        success: bool,
        narrative: str = "",
        output_data: Mapping[str, Any] | None = None,
        *,
        cancelled: bool = False,
    ) -> None:
        """End the run: completed when ``success``, else failed (or ``cancelled``)."""
        with self._lock:
            active = self._active.pop(execution_id, None)
            if active is None:
                self._unknown("end_run", execution_id)
                return
            run = active.run
            run.status = (RunStatus.CANCELLED if cancelled else
                          RunStatus.COMPLETED if success else RunStatus.FAILED)
            run.narrative = narrative
            run.output_data = dict(output_data or {})
            run.ended_ns = time.time_ns()
            if self.publish_run_events:
                payload: dict[str, Any] = {"narrative": narrative, "goal_id": run.goal_id}
                if run.status is RunStatus.COMPLETED:
                    if output_data is not None:
                        payload["output"] = json_safe(dict(output_data))
                    self._publish(RUN_COMPLETED, payload, active.scope)
                elif run.status is RunStatus.CANCELLED:
                    payload["reason"] = narrative or "cancelled"
                    self._publish(RUN_CANCELLED, payload, active.scope, Severity.WARN)
                else:
                    payload["error"] = narrative or "the run did not achieve its goal"
                    payload["error_type"] = "RunUnsuccessful"
                    self._publish(RUN_FAILED, payload, active.scope, Severity.ERROR)
            self._store("run_ended", run.copy())
        logger.debug("ended run %s in stream %s: %s", execution_id, self.stream_id, run.status)

    def set_node(self, execution_id: str, node_id: str | None) -> None:
        """The node later decisions of this execution belong to, unless they name one."""
        with self._lock:
            active = self._active.get(execution_id)
            if active is None:
                self._unknown("set_node", execution_id)
                return
            active.node_id = node_id

    # ---------------------------------------------------------------- decisions
    def decide(
        self,
        execution_id: str,
        intent: str,
        options: Sequence[Mapping[str, Any] | Option],
        chosen: str,
        reasoning: str,
        node_id: str | None = None,
        decision_type: DecisionType | str = DecisionType.CUSTOM,
        constraints: Sequence[str] | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        tool_call_id: str | None = None,
    ) -> str:
        """Record a decision; returns its id (``dec_N``), or "" for an unknown execution.

        ``tool_call_id`` names an open tool call: the mirror then puts the decision on that
        tool's span. An option without an ``id`` raises ``ValueError`` (a caller bug).
        """
        built = tuple(o if isinstance(o, Option) else Option.from_dict(o) for o in options)
        with self._lock:
            active = self._active.get(execution_id)
            if active is None:
                self._unknown("decide", execution_id, f"intent {intent!r}")
                return ""
            run = active.run
            decision_id = f"dec_{len(run.decisions)}"
            node = node_id or active.node_id
            decision = Decision(
                id=decision_id, execution_id=execution_id, intent=intent, options=built,
                chosen_option_id=chosen, reasoning=reasoning, node_id=node,
                decision_type=str(decision_type),
                active_constraints=tuple(constraints or ()),
                input_context=dict(context or {}), time_ns=time.time_ns(),
            )
            active.index[decision_id] = len(run.decisions)
            run.decisions.append(decision)
            payload: dict[str, Any] = {
                "decision_id": decision_id, "intent": intent,
                "options": [json_safe(o.to_dict()) for o in built], "chosen": chosen,
                "reasoning": reasoning, "decision_type": decision.decision_type,
            }
            if constraints:
                payload["constraints"] = [str(c) for c in constraints]
            if context:
                payload["context"] = json_safe(dict(context))
            if tool_call_id:
                payload["tool_call_id"] = tool_call_id
            self._publish(DECISION_MADE, payload, active.scope._replace(node_id=node))
            self._store("decision_made", decision)
        return decision_id

    def record_outcome(
        self,
        execution_id: str,
        decision_id: str,
        success: bool,
        result: Any = None,
        error: str | None = None,
        summary: str = "",
        state_changes: Mapping[str, Any] | None = None,
        tokens_used: int = 0,
        latency_ms: int = 0,
        *,
        tool_call_id: str | None = None,
    ) -> None:
        """Record what came of a decision (an unknown execution or decision is logged)."""
        with self._lock:
            active = self._active.get(execution_id)
            if active is None:
                self._unknown("record_outcome", execution_id, f"decision {decision_id!r}")
                return
            position = active.index.get(decision_id)
            if position is None:
                logger.warning("DecisionTracker(%s).record_outcome: execution %r has no "
                               "decision %r; ignored", self.stream_id, execution_id,
                               decision_id)
                return
            outcome = Outcome(success=bool(success), result=result, error=error,
                              summary=summary, state_changes=dict(state_changes or {}),
                              tokens_used=int(tokens_used), latency_ms=int(latency_ms),
                              time_ns=time.time_ns())
            run = active.run
            decision = run.decisions[position]
            run.decisions[position] = replace(decision, outcome=outcome)
            payload: dict[str, Any] = {
                "decision_id": decision_id, "success": bool(success), "summary": summary,
                "tokens_used": int(tokens_used), "latency_ms": int(latency_ms),
            }
            if result is not None:
                payload["result"] = json_safe(result)
            if error is not None:
                payload["error"] = str(error)
            if state_changes:
                payload["state_changes"] = json_safe(dict(state_changes))
            if tool_call_id:
                payload["tool_call_id"] = tool_call_id
            self._publish(DECISION_OUTCOME, payload,
                          active.scope._replace(node_id=decision.node_id),
                          Severity.INFO if success else Severity.WARN)
            self._store("outcome_recorded", execution_id, decision_id, outcome)

    def report_problem(
        self,
        execution_id: str,
        severity: str,
        description: str,
        decision_id: str | None = None,
        root_cause: str | None = None,
        suggested_fix: str | None = None,
        *,
        node_id: str | None = None,
        tool_call_id: str | None = None,
    ) -> str:
        """Report a problem (severity "critical", "warning" or "minor"); returns its id
        (``prob_N``), or "" for an unknown execution."""
        with self._lock:
            active = self._active.get(execution_id)
            if active is None:
                self._unknown("report_problem", execution_id, f"[{severity}] {description}")
                return ""
            run = active.run
            problem_id = f"prob_{len(run.problems)}"
            node = node_id or active.node_id
            problem = Problem(id=problem_id, execution_id=execution_id, severity=severity,
                              description=description, decision_id=decision_id,
                              root_cause=root_cause, suggested_fix=suggested_fix, node_id=node,
                              time_ns=time.time_ns())
            run.problems.append(problem)
            payload: dict[str, Any] = {"problem_id": problem_id, "severity": severity,
                                       "description": description}
            for key, value in (("decision_id", decision_id), ("root_cause", root_cause),
                               ("suggested_fix", suggested_fix),
                               ("tool_call_id", tool_call_id)):
                if value is not None:
                    payload[key] = value
            self._publish(PROBLEM_REPORTED, payload, active.scope._replace(node_id=node),
                          _PROBLEM_SEVERITY.get(str(severity).lower(), Severity.WARN))
            self._store("problem_reported", problem)
        return problem_id

    def quick_decision(
        self,
        execution_id: str,
        intent: str,
        action: str,
        reasoning: str = "",
        node_id: str | None = None,
    ) -> str:
        """A decision with a single option: what the agent is doing and why."""
        return self.decide(
            execution_id=execution_id, intent=intent,
            options=[{"id": "action", "description": action, "action_type": "execute"}],
            chosen="action", reasoning=reasoning, node_id=node_id,
        )

    # ------------------------------------------------------------------ getters
    def get_run(self, execution_id: str) -> Run | None:
        """A copy of the run: the live one while it runs, else the stored one."""
        with self._lock:
            active = self._active.get(execution_id)
            if active is not None:
                return active.run.copy()
        try:
            return self.store.get_run(execution_id)
        except Exception as error:
            logger.warning("DecisionTracker(%s).get_run: store failed: %r", self.stream_id,
                           error)
            return None

    def get_decisions(self, execution_id: str) -> list[Decision]:
        """The decisions of a run, in the order they were made (empty if unknown)."""
        run = self.get_run(execution_id)
        return [] if run is None else run.decisions

    def list_runs(self, *, status: RunStatus | str | None = None,
                  limit: int = 100) -> list[RunSummary]:
        """This stream's runs, newest first, from the store."""
        return self.store.list_runs(stream_id=self.stream_id,
                                    status=None if status is None else str(status), limit=limit)

    def get_active_executions(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def get_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "stream_id": self.stream_id,
                "active_executions": len(self._active),
                "execution_ids": list(self._active),
                "publish_failures": self._publish_failures,
                "store_failures": self._store_failures,
            }

    def for_execution(self, execution_id: str) -> ExecutionDecisions:
        """A view bound to one execution (the seed's ``StreamRuntimeAdapter``)."""
        return ExecutionDecisions(self, execution_id)

    # ---------------------------------------------------------------- lifecycle
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the store has written everything recorded so far."""
        return self.store.flush(timeout)

    def close(self) -> None:
        """Flush and close the store if the tracker opened it (a path or the default)."""
        if self._owns_store:
            self.store.close()
        else:
            self.store.flush()


class ExecutionDecisions:
    """The tracker's methods for one execution, without repeating its id."""

    def __init__(self, tracker: DecisionTracker, execution_id: str) -> None:
        self.tracker = tracker
        self.execution_id = execution_id

    @property
    def current_run(self) -> Run | None:
        return self.tracker.get_run(self.execution_id)

    def start_run(self, goal_id: str | None = None, goal_description: str = "",
                  input_data: Mapping[str, Any] | None = None, **options: Any) -> str:
        return self.tracker.start_run(self.execution_id, goal_id, goal_description,
                                      input_data, **options)

    def end_run(self, success: bool, narrative: str = "",
                output_data: Mapping[str, Any] | None = None, *, cancelled: bool = False) -> None:
        self.tracker.end_run(self.execution_id, success, narrative, output_data,
                             cancelled=cancelled)

    def set_node(self, node_id: str | None) -> None:
        self.tracker.set_node(self.execution_id, node_id)

    def decide(self, intent: str, options: Sequence[Mapping[str, Any] | Option], chosen: str,
               reasoning: str, node_id: str | None = None,
               decision_type: DecisionType | str = DecisionType.CUSTOM,
               constraints: Sequence[str] | None = None,
               context: Mapping[str, Any] | None = None, *,
               tool_call_id: str | None = None) -> str:
        return self.tracker.decide(self.execution_id, intent, options, chosen, reasoning,
                                   node_id, decision_type, constraints, context,
                                   tool_call_id=tool_call_id)

    def record_outcome(self, decision_id: str, success: bool, result: Any = None,
                       error: str | None = None, summary: str = "",
                       state_changes: Mapping[str, Any] | None = None, tokens_used: int = 0,
                       latency_ms: int = 0, *, tool_call_id: str | None = None) -> None:
        self.tracker.record_outcome(self.execution_id, decision_id, success, result, error,
                                    summary, state_changes, tokens_used, latency_ms,
                                    tool_call_id=tool_call_id)

    def report_problem(self, severity: str, description: str, decision_id: str | None = None,
                       root_cause: str | None = None, suggested_fix: str | None = None, *,
                       node_id: str | None = None) -> str:
        return self.tracker.report_problem(self.execution_id, severity, description,
                                           decision_id, root_cause, suggested_fix,
                                           node_id=node_id)

    def quick_decision(self, intent: str, action: str, reasoning: str = "",
                       node_id: str | None = None) -> str:
        return self.tracker.quick_decision(self.execution_id, intent, action, reasoning,
                                           node_id)
