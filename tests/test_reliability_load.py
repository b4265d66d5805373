"""Load: 1,000 concurrent executions of 100 events each through the AgentRuntime, with the
telemetry mirror on, exporting real OTLP/gRPC to the receiver subprocess (the workload
runs in a child interpreter).

Memory stays bounded (RSS from /proc/self/statm), no must-deliver event is lost (a
subscriber with a 64-event drop_oldest queue still gets every one), and every span arrives
complete, correctly parented, in its run's trace: checked by reading everything the
receiver stored.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import child, report, start_receiver_at

from otel_agentbus import semconv as sc
from otel_agentbus.kinds import MUST_DELIVER_KINDS
from otel_agentbus.receiver.queries import list_runs

pytestmark = pytest.mark.timeout(150)

RUNS = 1000
ITERATIONS = 4
PER_ITERATION = Counter({
    "agent.node.loop.iteration": 1, "agent.llm.request": 1, "agent.llm.delta": 16,
    "agent.llm.response": 1, "agent.tool.call.started": 1, "agent.decision.made": 1,
    "agent.tool.call.completed": 1, "agent.state.changed": 1, "agent.goal.progress": 1,
})
PER_RUN = Counter({"agent.run.started": 1, "agent.node.loop.started": 1,
                   "agent.node.loop.completed": 1, "agent.run.completed": 1})
for _kind, _count in PER_ITERATION.items():
    PER_RUN[_kind] += _count * ITERATIONS
RSS_GROWTH_LIMIT = 400 * 1024 * 1024
"""Generous: the workload keeps 1,000 runs open at once and 1,000 results."""


def test_load_1000_concurrent_runs(tmp_path: Path) -> None:
    assert sum(PER_RUN.values()) == 100
    receiver = start_receiver_at(tmp_path)
    try:
        with child(tmp_path, "load", receiver.grpc_endpoint, str(RUNS)) as agent:
            result = agent.call("run", timeout=120)
    finally:
        receiver.stop()

    assert result["statuses"] == {"completed": RUNS}
    assert result["finished"] is True
    # Bus: every event published; no must-deliver event lost anywhere.
    assert result["published"] == RUNS * 100 + 2  # + stream started / stopped
    expected_must = {k: v * RUNS for k, v in PER_RUN.items() if k in MUST_DELIVER_KINDS}
    expected_must.update({"agent.stream.started": 1, "agent.stream.stopped": 1})
    assert result["must_kinds"] == expected_must
    assert result["must_dropped"] == 0
    assert result["must_received"] == sum(expected_must.values())
    assert result["bus_dropped"] == result["lossy_dropped"]  # only the lossy one dropped
    assert result["lossy_received"] == RUNS * 100 + 2
    # Telemetry: every span exported, none failed or dropped.
    stats = result["stats"]
    spans_per_run = 2 + 3 * ITERATIONS  # run, node, 4 x (iteration, chat, tool)
    assert stats["spans_started"] == stats["spans_ended"] == RUNS * spans_per_run
    assert stats["spans_force_ended"] == 0
    assert stats["spans_emitted"] == RUNS * (spans_per_run + 1)  # + pending records
    assert stats["spans_exported"] == stats["spans_emitted"]
    assert stats["spans_export_failed"] == stats["spans_dropped"] == 0
    # Memory stays bounded.
    growth = result["rss_peak"] - result["rss_before"]
    assert growth < RSS_GROWTH_LIMIT, growth

    # The receiver: one complete, well-formed trace per run.
    runs = {r.run_id: r for r in list_runs(receiver.db)}
    assert set(runs) == set(result["ids"])
    assert all(r.status == "completed" for r in runs.values())
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with sqlite3.connect(receiver.db) as conn:
        conn.row_factory = sqlite3.Row
        for row in conn.execute("SELECT trace_id, span_id, parent_span_id, name, "
                                "status_code, attributes, events FROM spans WHERE pending = 0"):
            by_trace[row["trace_id"]].append(dict(row))
    assert len(by_trace) == RUNS
    for run_id, run in runs.items():
        spans = by_trace[run.trace_id]
        assert len(spans) == spans_per_run, (run_id, [s["name"] for s in spans])
        ids = {s["span_id"]: s for s in spans}
        names = Counter(s["name"] for s in spans)
        assert names == {"invoke_agent loader": 1, "node work": 1, "iteration work": 4,
                         "chat m": 4, "execute_tool calc": 4}, names
        root = ids[run.span_id]
        assert root["parent_span_id"] is None
        for span in spans:
            attributes = json.loads(span["attributes"])
            assert attributes[sc.RUN_ID] == run_id
            assert span["status_code"] == "UNSET"
            assert sc.END_REASON not in attributes
            if span is root:
                continue
            parent = ids[span["parent_span_id"]]  # in the same trace
            expected_parent = {"node work": "invoke_agent loader",
                               "iteration work": "node work"}.get(span["name"],
                                                                 "iteration work")
            assert parent["name"] == expected_parent
            if span["name"] == "chat m":
                assert attributes[sc.LLM_CHUNKS] == 16
            if span["name"] == "execute_tool calc":
                assert [e["name"] for e in json.loads(span["events"])] == [sc.EV_DECISION]
        # The four iterations hang off the node; each holds one chat and one tool call.
        iterations = [s["span_id"] for s in spans if s["name"] == "iteration work"]
        children = Counter(s["parent_span_id"] for s in spans
                           if s["name"] in ("chat m", "execute_tool calc"))
        assert {i: children[i] for i in iterations} == dict.fromkeys(iterations, 2)
    report("load", runs=RUNS, events=result["published"], spans=stats["spans_exported"],
           run_s=round(result["run_s"], 1), flush_s=round(result["flush_s"], 1),
           rss_growth_mb=round(growth / 2**20, 1), must_dropped=result["must_dropped"],
           lossy_dropped=result["lossy_dropped"])
