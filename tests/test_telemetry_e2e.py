"""End to end: the mirror exporting real OTLP/gRPC into the embedded receiver (a subprocess).

The publishing side runs in a child interpreter too, so ``configure()`` sets up global
providers there and nothing leaks into this process.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from telemetry_helpers import Receiver, free_port, run_python, start_receiver

from otel_agentbus import semconv as sc
from otel_agentbus.receiver.queries import (
    MetricPoint,
    SpanRow,
    get_trace,
    list_runs,
    metric_points,
    trace_ids,
)

pytestmark = pytest.mark.timeout(60)

PUBLISHER = r'''
import asyncio, json, sys
from otel_agentbus import Event, EventBus, Scope, configure
from otel_agentbus.receiver.queries import list_runs

endpoint, db = sys.argv[1], sys.argv[2]


def ev(kind, payload=None, **scope):
    return Event(kind, payload, scope=Scope(**scope))


ok = {"run_id": "run-ok", "agent": "researcher", "session_id": "conv-1"}
okn = dict(ok, node_id="plan")
bad = {"run_id": "run-bad", "agent": "coder"}
badn = dict(bad, node_id="code")
EVENTS = [
    ("ok.start", ev("agent.run.started", **ok)),
    ("ok.node", ev("agent.node.loop.started", {"max_iterations": 3}, **okn)),
    ("ok.iteration", ev("agent.node.loop.iteration", {"iteration": 1}, **okn)),
    ("ok.llm", ev("agent.llm.request",
                  {"model": "gpt-4o", "provider": "openai", "call_id": "c1"}, **okn)),
    (None, ev("agent.llm.delta", {"call_id": "c1", "text": "a"}, **okn)),
    (None, ev("agent.llm.delta", {"call_id": "c1", "text": "b"}, **okn)),
    (None, ev("agent.llm.delta", {"call_id": "c1", "text": "c"}, **okn)),
    (None, ev("agent.llm.response", {"call_id": "c1", "input_tokens": 100, "output_tokens": 50,
                                     "finish_reasons": ["stop"]}, **okn)),
    ("ok.search", ev("agent.tool.call.started", {"tool_call_id": "t1", "tool_name": "search"},
                     **okn)),
    ("ok.decision", ev("agent.decision.made",
                       {"tool_call_id": "t1", "decision_id": "d1", "chosen": "search",
                        "options": ["search", "ask"], "reasoning": "cheapest"}, **okn)),
    (None, ev("agent.tool.call.completed", {"tool_call_id": "t1", "tool_name": "search",
                                            "is_error": False}, **okn)),
    ("ok.fetch", ev("agent.tool.call.started", {"tool_call_id": "t2", "tool_name": "fetch"},
                    **okn)),
    (None, ev("agent.tool.call.completed",
              {"tool_call_id": "t2", "tool_name": "fetch", "is_error": True,
               "error": "timed out", "error_type": "TimeoutError"}, **okn)),
    (None, ev("agent.decision.outcome", {"decision_id": "d1", "success": False}, **okn)),
    (None, ev("agent.node.loop.completed", {"iterations": 1}, **okn)),
    ("ok.end", ev("agent.run.completed", **ok)),
    ("bad.start", ev("agent.run.started", **bad)),
    (None, ev("agent.node.loop.started", **badn)),
    (None, ev("agent.node.loop.iteration", {"iteration": 1}, **badn)),
    ("bad.compile", ev("agent.tool.call.started", {"tool_call_id": "t3", "tool_name": "compile"},
                       **badn)),
    (None, ev("agent.tool.call.completed",
              {"tool_call_id": "t3", "tool_name": "compile", "is_error": True,
               "error_type": "CompileError"}, **badn)),
    (None, ev("agent.decision.made", {"decision_id": "d2", "chosen": "give up"}, **badn)),
    (None, ev("agent.node.loop.failed", {"error": "no build", "error_type": "CompileError"},
              **badn)),
    ("bad.end", ev("agent.run.failed", {"error": "could not compile",
                                        "error_type": "CompileError"}, **bad)),
]


async def main():
    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="e2e-agent",
                          metric_export_interval_ms=500)
    bus = telemetry.attach(EventBus())
    seen = []
    bus.subscribe(lambda e: seen.append(e.kind), buffer=10_000)
    stamps = {}
    for key, event in EVENTS:
        await bus.publish(event)
        if key:
            stamps[key] = [event.correlation.trace_id, event.correlation.span_id]
    # A third run stays open: its pending record shows it as running.
    await bus.publish(ev("agent.run.started", run_id="run-open", agent="watcher"))
    flushed = telemetry.force_flush(10)
    running = {run.run_id: run.status for run in list_runs(db)}
    await bus.close()
    finished = telemetry.shutdown(timeout=10)
    print(json.dumps({
        "stamps": stamps, "flushed": flushed, "while_open": running, "shutdown": finished,
        "stats": telemetry.export_stats(), "seen": len(seen), "published": len(EVENTS) + 1,
    }))


asyncio.run(main())
'''


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(tmp_path_factory.mktemp("telemetry-e2e"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def published(receiver: Receiver) -> dict[str, Any]:
    return run_python(PUBLISHER, receiver.grpc_endpoint, str(receiver.db), timeout=45)


def spans_of(db: Path, trace: str) -> dict[str, SpanRow]:
    """A trace's spans by name (pending records replaced by their span are left out)."""
    spans = get_trace(db, trace).spans
    by_name = {s.name: s for s in spans}
    assert len(by_name) == len(spans), [s.name for s in spans]
    return by_name


def latest(points: list[MetricPoint], **labels: str) -> MetricPoint:
    matching = [p for p in points if all(p.attributes.get(k) == v for k, v in labels.items())]
    assert matching, f"no point with {labels} in {[p.attributes for p in points]}"
    return matching[-1]


def test_publisher_side(published: dict[str, Any]) -> None:
    assert published["seen"] == published["published"]
    assert published["flushed"] is True
    assert published["shutdown"] is True
    stats = published["stats"]
    assert stats["spans_export_failed"] == 0
    assert stats["spans_exported"] == stats["spans_emitted"]
    assert stats["spans_started"] == stats["spans_ended"]


def test_one_trace_per_run(receiver: Receiver, published: dict[str, Any]) -> None:
    stamps = published["stamps"]
    runs = {r.run_id: r for r in list_runs(receiver.db)}
    assert set(runs) == {"run-ok", "run-bad", "run-open"}
    assert runs["run-ok"].trace_id == stamps["ok.start"][0]
    assert runs["run-bad"].trace_id == stamps["bad.start"][0]
    assert len({r.trace_id for r in runs.values()}) == 3
    assert set(trace_ids(receiver.db)) == {r.trace_id for r in runs.values()}
    for run in runs.values():
        tree = get_trace(receiver.db, run.trace_id)
        assert {s.attributes[sc.RUN_ID] for s in tree.spans} == {run.run_id}
        assert len(tree.roots) == 1
        assert tree.roots[0].span.span_id == run.span_id


def test_run_statuses_and_pending_records(receiver: Receiver, published: dict[str, Any]) -> None:
    # While the third run was open, only its pending record had arrived.
    assert published["while_open"] == {"run-ok": "completed", "run-bad": "failed",
                                       "run-open": "running"}
    runs = {r.run_id: r for r in list_runs(receiver.db)}
    assert runs["run-ok"].status == "completed"
    assert runs["run-bad"].status == "failed"
    assert runs["run-open"].status != "running"  # shutdown ended it: the record is replaced
    with sqlite3.connect(receiver.db) as conn:
        pending = conn.execute(
            "SELECT trace_id, parent_span_id, name, attributes FROM spans WHERE pending = 1"
        ).fetchall()
    # One per run, under the run span, and not a second agent span: another name, no
    # GenAI operation, OpenInference's generic kind.
    assert sorted(row[:3] for row in pending) == sorted(
        (r.trace_id, r.span_id, f"{sc.PENDING_SPAN_PREFIX} {r.name}") for r in runs.values())
    for *_, attributes in pending:
        record = json.loads(attributes)
        assert sc.GEN_AI_OPERATION_NAME not in record
        assert record[sc.OPENINFERENCE_SPAN_KIND] == sc.OI_CHAIN
        assert record[sc.RUN_ID] in runs
    for run in runs.values():
        assert not any(s.pending for s in get_trace(receiver.db, run.trace_id).spans)
    open_root = spans_of(receiver.db, runs["run-open"].trace_id)["invoke_agent watcher"]
    assert open_root.attributes[sc.END_REASON] == "shutdown"
    assert open_root.status_code == "ERROR"


def test_completed_run_tree(receiver: Receiver, published: dict[str, Any]) -> None:
    stamps = published["stamps"]
    spans = spans_of(receiver.db, stamps["ok.start"][0])
    assert sorted(spans) == ["chat gpt-4o", "execute_tool fetch", "execute_tool search",
                             "invoke_agent researcher", "iteration plan", "node plan"]
    root, node, iteration = (spans["invoke_agent researcher"], spans["node plan"],
                             spans["iteration plan"])
    chat, search, fetch = spans["chat gpt-4o"], spans["execute_tool search"], spans[
        "execute_tool fetch"]
    for key, span in (("ok.start", root), ("ok.node", node), ("ok.iteration", iteration),
                      ("ok.llm", chat), ("ok.search", search), ("ok.fetch", fetch),
                      ("ok.decision", search), ("ok.end", root)):
        assert stamps[key] == [span.trace_id, span.span_id], key
    assert root.parent_span_id is None
    assert node.parent_span_id == root.span_id
    assert iteration.parent_span_id == node.span_id
    assert {chat.parent_span_id, search.parent_span_id, fetch.parent_span_id} == {
        iteration.span_id}
    assert root.kind == "INTERNAL" and chat.kind == "CLIENT"
    assert root.status_code == "UNSET"
    assert root.service_name == "e2e-agent"
    assert root.attributes[sc.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert root.attributes[sc.GEN_AI_AGENT_NAME] == "researcher"
    assert root.attributes[sc.RUN_STATUS] == "completed"
    for span in spans.values():
        assert span.attributes[sc.GEN_AI_CONVERSATION_ID] == "conv-1"
    assert node.attributes[sc.NODE_MAX_ITERATIONS] == 3
    assert iteration.attributes[sc.NODE_ITERATION] == 1
    assert chat.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert chat.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 50
    assert chat.attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    assert chat.attributes[sc.LLM_CHUNKS] == 3
    assert search.status_code == "UNSET"
    assert search.attributes[sc.GEN_AI_TOOL_CALL_ID] == "t1"
    assert fetch.status_code == "ERROR"
    assert fetch.status_message == "timed out"
    assert fetch.attributes[sc.ERROR_TYPE] == "TimeoutError"
    (decision,) = search.events
    assert decision.name == "agentbus.decision"
    assert decision.attributes[sc.DECISION_ID] == "d1"
    assert decision.attributes[sc.DECISION_OPTIONS] == ["search", "ask"]
    assert decision.attributes[sc.DECISION_REASONING] == "cheapest"
    assert [e.name for e in iteration.events] == ["agentbus.outcome"]


def test_failed_run_tree(receiver: Receiver, published: dict[str, Any]) -> None:
    spans = spans_of(receiver.db, published["stamps"]["bad.start"][0])
    assert sorted(spans) == ["execute_tool compile", "invoke_agent coder", "iteration code",
                             "node code"]
    root, node = spans["invoke_agent coder"], spans["node code"]
    compile_ = spans["execute_tool compile"]
    assert root.status_code == "ERROR"
    assert root.status_message == "could not compile"
    assert root.attributes[sc.ERROR_TYPE] == "CompileError"
    assert root.attributes[sc.RUN_STATUS] == "failed"
    assert sc.GEN_AI_CONVERSATION_ID not in root.attributes  # no session: none invented
    assert node.status_code == "ERROR"
    assert compile_.status_code == "ERROR"
    assert compile_.attributes[sc.ERROR_TYPE] == "CompileError"
    assert compile_.parent_span_id == spans["iteration code"].span_id
    assert [e.name for e in spans["iteration code"].events] == ["agentbus.decision"]


def test_metrics_arrive(receiver: Receiver, published: dict[str, Any]) -> None:
    durations = metric_points(receiver.db, sc.METRIC_OPERATION_DURATION)
    point = latest(durations, **{sc.GEN_AI_REQUEST_MODEL: "gpt-4o"})
    assert point.histogram is not None
    assert point.histogram["count"] == 1
    assert point.service_name == "e2e-agent"
    tokens = metric_points(receiver.db, sc.METRIC_TOKEN_USAGE)
    assert latest(tokens, **{sc.GEN_AI_TOKEN_TYPE: "input"}).histogram["sum"] == 100  # type: ignore[index]
    assert latest(tokens, **{sc.GEN_AI_TOKEN_TYPE: "output"}).histogram["sum"] == 50  # type: ignore[index]
    runs = metric_points(receiver.db, sc.METRIC_RUNS)
    assert latest(runs, **{sc.GEN_AI_AGENT_NAME: "researcher", sc.RUN_STATUS: "completed"}
                  ).value == 1
    assert latest(runs, **{sc.GEN_AI_AGENT_NAME: "coder", sc.RUN_STATUS: "failed"}).value == 1
    tools = metric_points(receiver.db, sc.METRIC_TOOL_CALLS)
    assert latest(tools, **{sc.GEN_AI_TOOL_NAME: "fetch", "status": "error"}).value == 1
    exported = metric_points(receiver.db, sc.METRIC_EXPORT_SPANS)
    assert latest(exported, outcome="exported").value > 0


# ====================================================================== dead collector
DEAD_COLLECTOR = r'''
import asyncio, json, sys, time
from otel_agentbus import Event, EventBus, Scope, configure

endpoint = sys.argv[1]


async def main():
    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="dead",
                          metric_export_interval_ms=500)
    bus = telemetry.attach(EventBus())
    counts = [0, 0]
    bus.subscribe(lambda e: counts.__setitem__(0, counts[0] + 1), buffer=10_000)

    async def slow(e):
        counts[1] += 1

    bus.subscribe(slow, buffer=10_000, backpressure="block")
    published = 0
    started = time.perf_counter()
    for i in range(200):
        scope = Scope(run_id=f"run-{i}", agent="a")
        node = scope._replace(node_id="n")
        for event in (
            Event("agent.run.started", scope=scope),
            Event("agent.node.loop.started", scope=node),
            Event("agent.node.loop.iteration", {"iteration": 1}, scope=node),
            Event("agent.llm.request", {"model": "m", "call_id": "c"}, scope=node),
            Event("agent.llm.delta", {"call_id": "c", "text": "x"}, scope=node),
            Event("agent.llm.response", {"call_id": "c", "output_tokens": 1}, scope=node),
            Event("agent.tool.call.started", {"tool_call_id": "t", "tool_name": "x"}, scope=node),
            Event("agent.decision.made", {"tool_call_id": "t", "chosen": "x"}, scope=node),
            Event("agent.tool.call.completed", {"tool_call_id": "t"}, scope=node),
            Event("agent.run.completed", scope=scope),
        ):
            await bus.publish(event)
            published += 1
    publish_s = time.perf_counter() - started
    await bus.close()
    started = time.perf_counter()
    finished = telemetry.shutdown(timeout=2)
    shutdown_s = time.perf_counter() - started
    deadline = time.monotonic() + 20
    while telemetry.export_stats()["spans_export_failed"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    print(json.dumps({"published": published, "counts": counts, "publish_s": publish_s,
                      "shutdown_s": shutdown_s, "finished": finished,
                      "stats": telemetry.export_stats()}))


asyncio.run(main())
'''


def test_dead_collector_never_blocks_the_agent() -> None:
    result = run_python(DEAD_COLLECTOR, f"http://127.0.0.1:{free_port()}", timeout=45)
    assert result["published"] == 2000
    assert result["counts"] == [2000, 2000]  # every subscriber got every event
    assert result["publish_s"] < 5  # the default OTLP timeout is 10 s: no export on this path
    assert result["shutdown_s"] < 3
    stats = result["stats"]
    assert stats["spans_emitted"] == 200 * 6
    assert stats["spans_export_failed"] > 0
    assert stats["spans_exported"] == 0
