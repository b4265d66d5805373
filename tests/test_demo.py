"""``otel-agentbus demo``: the CLI as a real subprocess exporting real OTLP, plus the
workload in-process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from telemetry_helpers import child_env, start_receiver

from otel_agentbus import EventBus
from otel_agentbus.demo import EventCounter, plan_runs, run_workload
from otel_agentbus.receiver.queries import SpanRow, TraceTree, get_trace, list_runs
from otel_agentbus.telemetry.mirror import TelemetryMirror

pytestmark = pytest.mark.timeout(60)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
SUBPROCESS_TIMEOUT = 45


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "otel_agentbus.cli", "demo", *args],
        capture_output=True, text=True, env=child_env(), timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    return done


def _demo_json(*args: str) -> dict[str, Any]:
    done = _demo(*args, "--json")
    report: dict[str, Any] = json.loads(done.stdout)  # stdout holds the JSON and nothing else
    return report


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "demo.db"


@pytest.fixture(scope="module")
def report(demo_db: Path) -> dict[str, Any]:
    return _demo_json("--runs", "4", "--seed", "7", "--db", str(demo_db))


def _run(report: dict[str, Any], status: str) -> dict[str, Any]:
    run: dict[str, Any] = next(r for r in report["runs"] if r["status"] == status)
    return run


def _error_spans(tree: TraceTree, prefix: str) -> list[SpanRow]:
    return [s for s in tree.spans if s.name.startswith(prefix) and s.status_code == "ERROR"]


# ---- the CLI, end to end over OTLP/gRPC ------------------------------------------------


def test_json_report_lists_every_run(report: dict[str, Any], demo_db: Path) -> None:
    runs = report["runs"]
    assert len(runs) == 4
    assert {"completed", "failed", "cancelled"} <= {r["status"] for r in runs}
    trace_ids = [r["trace_id"] for r in runs]
    assert all(HEX32.match(t) for t in trace_ids)
    assert len(set(trace_ids)) == 4
    assert all(r["span_count"] > 3 and r["duration_s"] > 0 for r in runs)
    assert {r["agent"] for r in runs} <= {"travel-planner", "support-triage", "code-reviewer"}
    assert report["db"] == str(demo_db.absolute())
    assert report["events_published"] > 50
    assert report["spans_exported"] >= sum(r["span_count"] for r in runs)
    stored = {row.trace_id: row for row in list_runs(demo_db)}
    for run in runs:
        assert stored[run["trace_id"]].status == run["status"]
        assert stored[run["trace_id"]].span_count == run["span_count"]


def test_failed_run_trace(report: dict[str, Any], demo_db: Path) -> None:
    run = _run(report, "failed")
    tree = get_trace(demo_db, run["trace_id"])
    (root,) = [node.span for node in tree.roots]
    assert root.name == f"invoke_agent {run['agent']}"
    assert root.status_code == "ERROR"
    assert root.attributes["agentbus.run.status"] == "failed"
    assert root.attributes["error.type"]

    tools = _error_spans(tree, "execute_tool ")
    assert tools and all(s.attributes.get("error.type") for s in tools)
    span_ids = {s.span_id for s in tree.spans}
    assert all(s.parent_span_id in span_ids for s in tools)

    chats = [s for s in tree.spans if s.name.startswith("chat ")]
    assert chats and all(s.kind == "CLIENT" for s in chats)
    for chat in chats:
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert chat.attributes["gen_ai.usage.output_tokens"] > 0
        assert chat.attributes["gen_ai.provider.name"]

    decisions = [e for s in tree.spans for e in s.events if e.name == "agentbus.decision"]
    assert decisions and all("agentbus.decision.chosen" in e.attributes for e in decisions)
    assert any(e.name == "agentbus.problem" for s in tree.spans for e in s.events)


def test_cancelled_run_force_ends_the_open_tool_call(
    report: dict[str, Any], demo_db: Path
) -> None:
    run = _run(report, "cancelled")
    tree = get_trace(demo_db, run["trace_id"])
    ended = [s for s in tree.spans if "agentbus.span.end_reason" in s.attributes]
    assert any(s.name.startswith("execute_tool ") for s in ended)
    assert all(s.attributes["agentbus.span.end_reason"] == "user_cancelled" for s in ended)
    root = next(node.span for node in tree.roots)
    assert root.attributes["agentbus.run.status"] == "cancelled"


def test_same_seed_same_runs(report: dict[str, Any], tmp_path: Path) -> None:
    again = _demo_json("--runs", "4", "--seed", "7", "--db", str(tmp_path / "again.db"))

    def shape(r: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(run["run_id"], run["agent"], run["status"]) for run in r["runs"]]

    assert shape(again) == shape(report)
    assert not {r["trace_id"] for r in again["runs"]} & {r["trace_id"] for r in report["runs"]}


def test_text_mode_prints_runs_and_a_tree(tmp_path: Path) -> None:
    db = tmp_path / "text.db"
    done = _demo("--runs", "3", "--seed", "1", "--db", str(db))
    out = done.stdout
    assert "RUN ID" in out and "TRACE ID" in out
    match = re.search(r"^trace ([0-9a-f]{32})  \(", out, re.M)
    assert match is not None, out
    assert get_trace(db, match.group(1)).spans
    assert "invoke_agent " in out and "execute_tool " in out
    assert f"otel-agentbus runs --db {db}" in out
    assert "[3/3]" in done.stderr  # progress goes to stderr, a line per run off a terminal


# ---- --otlp-endpoint: a receiver in another process ------------------------------------


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    started = start_receiver(tmp_path, db=tmp_path / "receiver.db")
    try:
        yield started.ready, started.db
    finally:
        started.stop()


def test_otlp_endpoint_exports_to_another_receiver(
    receiver: tuple[dict[str, str], Path],
) -> None:
    ready, db = receiver
    report = _demo_json("--runs", "3", "--seed", "3", "--otlp-endpoint",
                        f"http://{ready['grpc']}")
    assert report["db"] is None
    expected = {r["trace_id"]: r for r in report["runs"]}
    assert len(expected) == 3
    deadline = time.monotonic() + 10
    while True:
        stored = {row.trace_id: row for row in list_runs(db) if row.trace_id in expected}
        if len(stored) == 3 and all(row.status != "running" for row in stored.values()):
            break
        assert time.monotonic() < deadline, f"receiver holds {stored}"
        time.sleep(0.05)
    for trace_id, run in expected.items():
        assert stored[trace_id].status == run["status"]
        assert stored[trace_id].agent == run["agent"]
        assert stored[trace_id].span_count == run["span_count"]


def test_unreachable_endpoint_fails_fast() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "otel_agentbus.cli", "demo", "--otlp-endpoint",
         "http://127.0.0.1:1"],
        capture_output=True, text=True, env=child_env(), timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 1
    assert "cannot reach the OTLP endpoint" in done.stderr
    assert time.monotonic() - started < 15


# ---- the workload in-process -----------------------------------------------------------


def test_plans_are_deterministic_and_include_failures() -> None:
    assert plan_runs(6, 11) == plan_runs(6, 11)
    assert plan_runs(6, 11) != plan_runs(6, 12)
    for runs in (3, 4, 6, 10):
        outcomes = [p.outcome for p in plan_runs(runs, 5)]
        assert outcomes.count("failed") == 1 and outcomes.count("cancelled") == 1
    assert {p.outcome for p in plan_runs(2, 5)} == {"completed"}
    with pytest.raises(ValueError):
        plan_runs(0, 1)


async def test_workload_through_the_mirror() -> None:
    exporter = InMemorySpanExporter()
    bus = EventBus()
    bus.add_hook(TelemetryMirror(SimpleSpanProcessor(exporter), pending_spans=False))
    counter = EventCounter()
    bus.subscribe(counter, buffer=100_000)
    finished: list[str] = []
    results = await run_workload(bus, plan_runs(5, 21), lambda r: finished.append(r.status))
    await bus.close()

    assert [r.status for r in results] == [p.outcome for p in plan_runs(5, 21)]
    assert sorted(finished) == sorted(r.status for r in results)
    assert counter.total == bus.stats().published == sum(r.events for r in results)
    assert counter.by_kind["agent.run.started"] == 5
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 5
    cancelled = next(r for r in results if r.status == "cancelled")
    forced = [s for s in spans if s.name.startswith("execute_tool ")
              and s.attributes is not None and "agentbus.span.end_reason" in s.attributes
              and format(s.context.trace_id, "032x") == cancelled.trace_id]
    assert len(forced) == 1
