"""Shared helpers of the adapter tests: real OTLP export into the embedded receiver, read back
with the ``otel-agentbus runs`` / ``trace`` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from telemetry_helpers import Receiver, child_env, forget, fresh_global_tracer_provider

from otel_agentbus import EventBus, configure
from otel_agentbus.events import Event
from otel_agentbus.telemetry import Telemetry


@contextmanager
def otlp_bus(receiver: Receiver, service: str) -> Iterator[tuple[Telemetry, EventBus]]:
    """A bus mirrored by a telemetry that exports over OTLP/gRPC to ``receiver``."""
    with fresh_global_tracer_provider():
        telemetry = configure(service_name=service, endpoint=receiver.grpc_endpoint,
                              protocol="grpc", metrics_enabled=False, signal_handlers=False)
        forget(telemetry)
        try:
            yield telemetry, telemetry.attach(EventBus())
        finally:
            telemetry.shutdown(timeout=10)


def cli_json(db: Path, *args: str) -> dict[str, Any]:
    """``otel-agentbus <args> --db DB --json`` in a subprocess, its JSON output parsed."""
    done = subprocess.run(
        [sys.executable, "-m", "otel_agentbus.cli", *args, "--db", str(db), "--json"],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def read_back_run(db: Path, agent: str, timeout: float = 20) -> tuple[dict[str, Any],
                                                                      dict[str, Any]]:
    """The finished run of ``agent`` as ``otel-agentbus runs`` lists it, and its trace."""
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = [r for r in cli_json(db, "runs")["runs"]
                if r["agent"] == agent and r["status"] != "running"]
        if runs:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no finished run of {agent!r} in the receiver: {runs}")
    return runs[-1], cli_json(db, "trace", runs[-1]["trace_id"])


def tree_names(node: dict[str, Any], depth: int = 0) -> list[tuple[int, str]]:
    """(depth, span name) of a ``trace --json`` subtree, depth first."""
    found = [(depth, str(node["name"]))]
    for child in node.get("children", []):
        found.extend(tree_names(child, depth + 1))
    return found


def kinds(events: list[Event]) -> list[str]:
    return [event.kind for event in events]


def in_order(events: list[Event]) -> list[Event]:
    """A bus's history (newest first) in publish order."""
    return sorted(events, key=lambda event: event.seq or 0)


def metric_counts(reader: Any, name: str) -> list[tuple[dict[str, Any], float]]:
    """(attributes, count for a histogram or value for a sum) of every point of ``name``."""
    data = reader.get_metrics_data()
    found: list[tuple[dict[str, Any], float]] = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = getattr(point, "count", None)
                        found.append((dict(point.attributes or {}),
                                      float(value if value is not None else point.value)))
    return found
