"""``otel-agentbus demo``: a few agents on the bus, exported over real OTLP.

:mod:`.workload` is what agents publish (deterministic per seed); :mod:`.runner` wires it
to telemetry, the embedded receiver and the terminal.
"""

from __future__ import annotations

from .runner import DemoReport, DemoRun, Progress, format_report, run_demo
from .workload import PROFILES, EventCounter, RunPlan, RunResult, plan_runs, run_workload

__all__ = [
    "PROFILES",
    "DemoReport",
    "DemoRun",
    "EventCounter",
    "Progress",
    "RunPlan",
    "RunResult",
    "format_report",
    "plan_runs",
    "run_demo",
    "run_workload",
]
