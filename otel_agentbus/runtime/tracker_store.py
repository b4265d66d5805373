"""What a decision tracker store is (``TrackerStore``), and the in-memory store.

Two stores share the one interface: ``InMemoryTrackerStore`` (tests, or opting out of
persistence; bounded) here, and ``SQLiteTrackerStore`` (embedded file, written on a
background thread) in ``tracker_sqlite``. The record types live in ``tracker_records``;
both, and the SQLite store, stay importable from this module, where they used to live.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Protocol, runtime_checkable

from .tracker_records import (
    Decision,
    DecisionType,
    Option,
    Outcome,
    Problem,
    Run,
    RunStatus,
    RunSummary,
    StoreClosedError,
)
from .tracker_sqlite import SCHEMA_VERSION, SQLiteTrackerStore

__all__ = [
    "SCHEMA_VERSION",
    "Decision",
    "DecisionType",
    "InMemoryTrackerStore",
    "Option",
    "Outcome",
    "Problem",
    "Run",
    "RunStatus",
    "RunSummary",
    "SQLiteTrackerStore",
    "StoreClosedError",
    "TrackerStore",
]


@runtime_checkable
class TrackerStore(Protocol):
    """What the tracker needs from a store. Writes must not block for long: they are
    called on the event loop."""

    def run_started(self, run: Run) -> None: ...
    def decision_made(self, decision: Decision) -> None: ...
    def outcome_recorded(self, execution_id: str, decision_id: str, outcome: Outcome) -> None: ...
    def problem_reported(self, problem: Problem) -> None: ...
    def run_ended(self, run: Run) -> None: ...
    def get_run(self, execution_id: str) -> Run | None: ...
    def list_runs(self, *, stream_id: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunSummary]: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...


class InMemoryTrackerStore:
    """Runs kept in memory; at most ``max_runs`` (the oldest ended runs go first)."""

    def __init__(self, *, max_runs: int = 1000) -> None:
        if not isinstance(max_runs, int) or max_runs < 1:
            raise ValueError(f"max_runs must be an int >= 1, got {max_runs!r}")
        self.max_runs = max_runs
        self._runs: OrderedDict[str, Run] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StoreClosedError("the in-memory tracker store is closed")

    def run_started(self, run: Run) -> None:
        with self._lock:
            self._check()
            self._runs.pop(run.execution_id, None)
            self._runs[run.execution_id] = run.copy()
            if len(self._runs) > self.max_runs:
                victim = next((k for k, r in self._runs.items()
                               if r.status is not RunStatus.RUNNING), None)
                self._runs.pop(victim if victim is not None else next(iter(self._runs)))

    def decision_made(self, decision: Decision) -> None:
        with self._lock:
            self._check()
            run = self._runs.get(decision.execution_id)
            if run is not None:
                run.decisions.append(decision)

    def outcome_recorded(self, execution_id: str, decision_id: str, outcome: Outcome) -> None:
        with self._lock:
            self._check()
            run = self._runs.get(execution_id)
            if run is None:
                return
            for index, decision in enumerate(run.decisions):
                if decision.id == decision_id:
                    run.decisions[index] = replace(decision, outcome=outcome)
                    return

    def problem_reported(self, problem: Problem) -> None:
        with self._lock:
            self._check()
            run = self._runs.get(problem.execution_id)
            if run is not None:
                run.problems.append(problem)

    def run_ended(self, run: Run) -> None:
        with self._lock:
            self._check()
            stored = self._runs.get(run.execution_id)
            if stored is None:
                self._runs[run.execution_id] = stored = run.copy()
            stored.status = run.status
            stored.ended_ns = run.ended_ns
            stored.narrative = run.narrative
            stored.output_data = run.output_data

    def get_run(self, execution_id: str) -> Run | None:
        with self._lock:
            run = self._runs.get(execution_id)
            return None if run is None else run.copy()

    def list_runs(self, *, stream_id: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[RunSummary]:
        with self._lock:
            runs = [r.summary() for r in reversed(self._runs.values())
                    if (stream_id is None or r.stream_id == stream_id)
                    and (status is None or r.status == status)]
        runs.sort(key=lambda r: r.started_ns, reverse=True)
        return runs[:limit]

    def get_decisions(self, execution_id: str) -> list[Decision]:
        run = self.get_run(execution_id)
        return [] if run is None else run.decisions

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        self._closed = True
