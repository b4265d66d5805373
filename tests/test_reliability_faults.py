"""Faults inside the agent process: subscribers that raise, hang past their timeout, cancel
themselves or are slow; runs cancelled in the middle of a tool call, nodes that raise, runs
timing out; a process that receives SIGTERM mid-run (ended within a bound, open spans ended
with ``agentbus.span.end_reason`` and flushed to the receiver subprocess) or SIGKILL (what
was exported before is intact, in-progress runs show as ``running``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from reliability_helpers import child, db_counts, kill9, report, start_receiver_at
from telemetry_helpers import (
    Harness,
    HarnessFactory,
    attrs,
    child_env,
    parent_id,
    run_python,
    span_id,
)

from otel_agentbus import Event, Scope
from otel_agentbus import semconv as sc
from otel_agentbus.instrument import tool_call
from otel_agentbus.receiver.queries import get_trace, list_runs
from otel_agentbus.runtime.agent_runtime import AgentRuntime
from otel_agentbus.runtime.entry_points import EntryPoint
from otel_agentbus.runtime.execution import ExecutionContext
from otel_agentbus.runtime.graph import Graph

pytestmark = pytest.mark.timeout(90)


def metric_value(reader: InMemoryMetricReader, name: str) -> float:
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points: Any = metric.data.data_points
                    return float(sum(p.value for p in points))
    raise AssertionError(f"no metric {name}")


# ====================================================================== subscribers
async def test_faulty_subscribers_affect_no_one_else_and_are_counted(
    make: HarnessFactory,
) -> None:
    reader = InMemoryMetricReader()
    h = make(metrics_enabled=True, meter_provider=MeterProvider(metric_readers=[reader]))
    bus = h.bus
    runs, per_run = 40, 10  # 400 events: 160 must-deliver, 240 droppable deltas
    seen: Counter[str] = Counter()

    def healthy(event: Event) -> None:
        seen["healthy"] += 1

    async def healthy_blocking(event: Event) -> None:
        seen["blocking"] += 1

    def raiser(event: Event) -> None:
        if event.seq is not None and event.seq % 3 == 0:
            raise RuntimeError(f"boom {event.seq}")

    async def hanger(event: Event) -> None:
        if event.seq is not None and event.seq % 20 == 0:
            await asyncio.Event().wait()  # never returns: cancelled at the timeout

    async def canceller(event: Event) -> None:
        if event.seq is not None and event.seq % 7 == 0:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)

    async def task_killer(event: Event) -> None:
        if event.seq == 7:  # kills the task its sequential subscription runs on
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)

    async def slow(event: Event) -> None:
        await asyncio.sleep(0.002)
        if event.must_deliver:
            seen["slow_must"] += 1

    subs = {
        "healthy": bus.subscribe(healthy, buffer=10_000),
        "blocking": bus.subscribe(healthy_blocking, buffer=8, backpressure="block"),
        "raiser": bus.subscribe(raiser, buffer=10_000),
        "hanger": bus.subscribe(hanger, buffer=10_000, timeout=0.05, concurrency="concurrent",
                                max_concurrency=8),
        "canceller": bus.subscribe(canceller, buffer=10_000, concurrency="concurrent"),
        "task_killer": bus.subscribe(task_killer, buffer=10_000),
        "slow": bus.subscribe(slow, buffer=16, backpressure="drop_oldest"),
    }
    worst = 0.0
    must = 0
    for r in range(runs):
        scope = Scope(run_id=f"r{r}", agent="a")
        node = scope._replace(node_id="n")
        events = [Event("agent.run.started", scope=scope),
                  Event("agent.llm.request", {"call_id": "c", "model": "m"}, scope=node),
                  *(Event("agent.llm.delta", {"call_id": "c", "text": "x"}, scope=node)
                    for _ in range(6)),
                  Event("agent.llm.response", {"call_id": "c"}, scope=node),
                  Event("agent.run.completed", scope=scope)]
        for event in events:
            before = time.perf_counter()
            result = await bus.publish(event)  # never raises, whatever the handlers do
            worst = max(worst, time.perf_counter() - before)
            assert result.matched >= len(subs) - 1
            must += event.must_deliver
    total = runs * per_run
    await asyncio.wait_for(bus.close(timeout=20), 30)

    stats = {name: sub.stats() for name, sub in subs.items()}
    expected_raised = sum(1 for seq in range(1, total + 1) if seq % 3 == 0)
    expected_hung = sum(1 for seq in range(1, total + 1) if seq % 20 == 0)
    expected_cancelled = sum(1 for seq in range(1, total + 1) if seq % 7 == 0)
    assert seen["healthy"] == seen["blocking"] == total
    for name in ("healthy", "blocking"):
        assert (stats[name].handled, stats[name].failed, stats[name].dropped) == (total, 0, 0)
    assert (stats["raiser"].received, stats["raiser"].failed) == (total, expected_raised)
    assert stats["raiser"].handled == total - expected_raised
    assert (stats["hanger"].timed_out, stats["hanger"].handled) == (
        expected_hung, total - expected_hung)
    assert stats["canceller"].failed == expected_cancelled  # self-cancellation: a failure
    assert stats["canceller"].handled == total - expected_cancelled
    # Cancelling the task of a sequential subscription ends it: counted, never silent.
    killed = stats["task_killer"]
    assert killed.closed and killed.failed == 1 and killed.handled == 6
    assert killed.received == killed.handled + killed.failed + killed.dropped
    slow_stats = stats["slow"]
    assert slow_stats.received == total
    assert slow_stats.handled + slow_stats.dropped == total
    assert seen["slow_must"] == must  # the slow one lost only droppable deltas
    bus_stats = bus.stats()
    assert bus_stats.failed == expected_raised + expected_cancelled + 1
    assert bus_stats.timed_out == expected_hung
    assert bus_stats.dropped == slow_stats.dropped + killed.dropped
    # Counted in the metrics as well.
    assert metric_value(reader, sc.METRIC_BUS_FAILED) == bus_stats.failed
    assert metric_value(reader, sc.METRIC_BUS_DROPPED) == bus_stats.dropped
    # The publisher and the telemetry never noticed: every run is a complete trace.
    assert worst < 0.5
    roots = h.named("invoke_agent a")
    assert len(roots) == runs
    assert all(sc.END_REASON not in attrs(s) for s in h.spans())
    assert h.telemetry.mirror.open_runs == 0
    report("subscriber_faults", events=total, raised=expected_raised, timed_out=expected_hung,
           cancelled_themselves=expected_cancelled, slow_dropped=slow_stats.dropped,
           worst_publish_ms=round(worst * 1e3, 2))


# ====================================================================== runs
def _graph(hang: asyncio.Event) -> Graph:
    graph = Graph("faults")

    @graph.node()
    async def manual_tool(ctx: ExecutionContext, state: dict[str, Any]) -> Any:
        # A tool call published by hand whose end event never comes.
        ctx.publish("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "fetch"})
        ctx.publish("agent.llm.request", {"call_id": "c1", "model": "m"})
        if ctx.input.get("mode") == "raise":
            raise ValueError("node exploded")
        await hang.wait()
        return "never"

    @graph.node()
    async def managed_tool(ctx: ExecutionContext, state: dict[str, Any]) -> Any:
        with tool_call("slow_search", arguments={"q": "x"}):
            await hang.wait()
        return "never"

    return graph


def _why(span: ReadableSpan) -> str:
    """What the span says about how it ended."""
    status = span.status
    return f"{status.status_code.name}:{status.description}:{attrs(span).get(sc.END_REASON)}"


def _trace(h: Harness, run_id: str) -> list[ReadableSpan]:
    spans = [s for s in h.spans() if attrs(s).get(sc.RUN_ID) == run_id]
    assert spans, run_id
    return spans


@pytest.mark.parametrize("case", ["cancel_manual", "cancel_managed", "raise", "timeout"])
async def test_interrupted_runs_end_every_span_saying_why(
    make: HarnessFactory, case: str,
) -> None:
    h = make()
    hang = asyncio.Event()
    graph = _graph(hang)
    runtime = AgentRuntime(h.bus, graph=graph, name="faulty")
    entry = "managed_tool" if case == "cancel_managed" else "manual_tool"
    runtime.register_entry_point(EntryPoint(
        "api", entry_node=entry, timeout=0.2 if case == "timeout" else None))
    async with runtime:
        mode = "raise" if case == "raise" else "hang"
        execution_id = await runtime.trigger("api", {"mode": mode})
        if case.startswith("cancel"):
            deadline = time.monotonic() + 10
            while not h.bus.history(kinds="agent.tool.call.started", run_id=execution_id):
                assert time.monotonic() < deadline, "the run never started its tool call"
                await asyncio.sleep(0.005)
            assert await runtime.cancel_execution(execution_id, "user pressed stop")
        result = await runtime.wait_for_execution(execution_id, 10)
    assert result is not None
    started = time.perf_counter()
    assert h.telemetry.force_flush(5) is True
    flush_s = time.perf_counter() - started
    assert flush_s < 5

    spans = {s.name: s for s in _trace(h, execution_id)}
    root = spans["invoke_agent faulty"]
    node = spans[f"node {entry}"]
    assert h.telemetry.mirror.open_runs == 0
    stats = h.telemetry.export_stats()
    assert stats["spans_started"] == stats["spans_ended"]
    # Every span ended with an ERROR status that says why.
    assert all(s.status.status_code is StatusCode.ERROR for s in spans.values()), {
        n: _why(s) for n, s in spans.items()}
    if case == "raise":
        assert result.status == "failed"
        assert root.status.description == "node exploded"
        assert attrs(root)[sc.ERROR_TYPE] == "ValueError"
        assert attrs(node)[sc.ERROR_TYPE] == "ValueError"
        for name in ("execute_tool fetch", "chat m"):  # open when the node raised
            assert attrs(spans[name])[sc.END_REASON] == "failed"
            assert spans[name].status.description == "not ended: failed"
    else:
        reason = "timeout" if case == "timeout" else "user pressed stop"
        assert result.status == "cancelled"
        assert attrs(root)[sc.RUN_STATUS] == "cancelled"
        assert root.status.description == f"cancelled: {reason}"
        if case == "cancel_managed":
            tool = spans["execute_tool slow_search"]
            assert attrs(tool)[sc.ERROR_TYPE] == "cancelled"  # its own end event said so
        else:
            for name in ("execute_tool fetch", "chat m"):
                assert attrs(spans[name])[sc.END_REASON] == reason
                assert spans[name].status.description == f"not ended: {reason}"
    # ... and correctly parented under the run.
    for span in spans.values():
        if span is not root:
            assert parent_id(span) is not None
    assert parent_id(node) == span_id(root)


# ====================================================================== SIGTERM, SIGKILL
def _runs_cli(db: Path) -> dict[str, str]:
    listed = subprocess.run([sys.executable, "-m", "otel_agentbus.cli", "runs", "--db",
                             str(db), "--json"], capture_output=True, text=True, timeout=30,
                            env=child_env(), check=True)
    return {r["run_id"]: r["status"] for r in json.loads(listed.stdout)["runs"]}


def _wait_exit(proc: subprocess.Popen[Any], timeout: float) -> float:
    started = time.monotonic()
    proc.wait(timeout=timeout)
    return time.monotonic() - started


@pytest.mark.parametrize("handlers", [True, False], ids=["handled", "control-no-handler"])
def test_sigterm_mid_run_ends_open_spans_and_flushes(tmp_path: Path, handlers: bool) -> None:
    receiver = start_receiver_at(tmp_path)
    env = child_env() if handlers else child_env(OTEL_AGENTBUS_TEST_NO_SIGNALS="1")
    try:
        with child(tmp_path, "midrun", receiver.grpc_endpoint, env=env) as agent:
            ready = agent.ready
            assert ready["flushed"] is True
            before = _runs_cli(receiver.db)
            assert {before[i] for i in ready["hanging"]} == {"running"}
            agent.proc.send_signal(signal.SIGTERM)
            exit_s = _wait_exit(agent.proc, 20)
            # It died of the signal (a shell shows 143) after shutting telemetry down.
            assert agent.proc.returncode == -signal.SIGTERM
        statuses = _runs_cli(receiver.db)
    finally:
        receiver.stop()
    assert exit_s < 10  # shutdown_timeout is 5 s
    for execution_id in ready["completed"]:
        assert statuses[execution_id] == "completed"
    if not handlers:
        # The control: without the handler nothing ends the spans; the runs stay "running".
        assert {statuses[i] for i in ready["hanging"]} == {"running"}
        return
    runs = {r.run_id: r for r in list_runs(receiver.db)}
    for execution_id, open_call in zip(ready["hanging"], ("execute_tool slow_fetch",
                                                          "chat gpt-4o"), strict=True):
        assert statuses[execution_id] == "failed"
        spans = {s.name: s for s in get_trace(receiver.db, runs[execution_id].trace_id).spans}
        for name in ("invoke_agent midrun", "node work", "iteration work", open_call):
            assert spans[name].attributes[sc.END_REASON] == "SIGTERM", name
            assert spans[name].status_code == "ERROR"
            assert spans[name].status_message == "not ended: SIGTERM"
        assert spans["execute_tool search"].status_code == "UNSET"  # it had finished
    report("sigterm", exit_s=round(exit_s, 2), open_runs_ended=len(ready["hanging"]))


def test_kill9_leaves_exported_data_intact_and_runs_visible_as_running(
    tmp_path: Path,
) -> None:
    receiver = start_receiver_at(tmp_path)
    try:
        with child(tmp_path, "midrun", receiver.grpc_endpoint) as agent:
            ready = agent.ready
            assert ready["flushed"] is True
            kill9(agent.proc)
        statuses = _runs_cli(receiver.db)
        counts = db_counts(receiver.db)
        kill9(receiver.proc)  # the receiver too: its database must survive
    finally:
        receiver.stop()
    for execution_id in ready["completed"]:
        assert statuses[execution_id] == "completed"
        run = next(r for r in list_runs(receiver.db) if r.run_id == execution_id)
        names = sorted(s.name for s in get_trace(receiver.db, run.trace_id).spans)
        assert names == ["execute_tool search", "invoke_agent midrun", "iteration work",
                         "node work"]
    assert {statuses[i] for i in ready["hanging"]} == {"running"}
    with sqlite3.connect(receiver.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db_counts(receiver.db) == counts
    assert _runs_cli(receiver.db) == statuses


CHAINED = r'''
import json, os, signal, sys
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_agentbus import Event, EventBus, Scope, configure
from otel_agentbus.telemetry import install_signal_handlers
from otel_agentbus import semconv as sc
import asyncio

calls = []
signal.signal(signal.SIGTERM, lambda signum, frame: calls.append("app"))  # the app's own
exporter = InMemorySpanExporter()
telemetry = configure(span_exporter=exporter, metrics_enabled=False)
untouched = signal.getsignal(signal.SIGTERM)  # configure() left the app's handler alone
install_signal_handlers(telemetry)  # chained in front of it


async def main():
    bus = telemetry.attach(EventBus())
    await bus.publish(Event("agent.run.started", scope=Scope(run_id="r", agent="a")))
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.1)

asyncio.run(main())
root = [s for s in exporter.get_finished_spans()
        if not s.attributes.get(sc.SPAN_PENDING)]
print(json.dumps({"calls": calls, "kept": untouched.__name__ == "<lambda>",
                  "reasons": [s.attributes.get(sc.END_REASON) for s in root]}))
'''


def test_signal_handler_chains_to_the_applications_own() -> None:
    result = run_python(CHAINED, timeout=30)
    assert result["kept"] is True  # configure() never replaces an application's handler
    assert result["calls"] == ["app"]  # ours ran first, then the app's, and the app lived
    assert result["reasons"] == ["SIGTERM"]
