"""The web view's queries on a large receiver database (``python -m bench.web_list``).

Stores ``--spans`` synthetic spans (runs of 20 spans: nodes, iterations, model and tool
calls, decisions, some failed and some still running) through the receiver's own ingest,
then times, side by side in this process:

- the first page of the runs list (50 runs, newest first), alone and as the API answers it
  (with the agent and status lists for the filters), filtered by agent and by
  status, a page 40 pages deep, and a search by run id prefix;
- the whole-list query the CLI used before the run indexes (every span's attributes
  parsed), as the baseline of the first page;
- the waterfall document of one 10,000-span trace;
- storing the spans with the run indexes against the same store with them dropped (what
  the indexes cost each write).

Prints one JSON object (milliseconds are medians over ``--rounds``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_agentbus.receiver.ingest import Ingest, Signal
from otel_agentbus.receiver.queries import connect
from otel_agentbus.receiver.run_list import RunQuery, decode_cursor, query_runs
from otel_agentbus.receiver.store import Store
from otel_agentbus.receiver.web.api import runs_answer
from otel_agentbus.receiver.web.links import WebLinks
from otel_agentbus.receiver.web.trace_view import trace_document

SPANS_PER_RUN = 20
AGENTS = [f"agent-{i}" for i in range(10)]
BIG_TRACE_SPANS = 10_000
BATCH = 1_000

# The run list as ``list_runs`` selected it before the partial run indexes: every span's
# attributes parsed to find the invoke_agent spans (kept here as the baseline).
OLD_RUNS_SQL = """
SELECT s.*, (SELECT COUNT(*) FROM spans c WHERE c.trace_id = s.trace_id AND c.pending = 0)
         AS span_count
FROM spans s
WHERE (json_extract(s.attributes, '$."gen_ai.operation.name"') = 'invoke_agent'
  AND NOT EXISTS (
      SELECT 1 FROM spans p
      WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
        AND json_extract(p.attributes, '$."gen_ai.operation.name"') = 'invoke_agent'))
  OR (s.pending = 1 AND NOT EXISTS (
      SELECT 1 FROM spans r WHERE r.trace_id = s.trace_id AND r.span_id = s.parent_span_id))
ORDER BY s.start_ns, s.trace_id, s.span_id
"""


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _span(trace: bytes, span_id: int, parent: int | None, name: str, start: int, end: int,
          attributes: dict[str, Any], *, error: bool = False,
          events: tuple[tuple[str, dict[str, Any]], ...] = ()) -> Span:
    span = Span(trace_id=trace, span_id=span_id.to_bytes(8, "big"), name=name,
                start_time_unix_nano=start, end_time_unix_nano=end)
    if parent is not None:
        span.parent_span_id = parent.to_bytes(8, "big")
    span.attributes.extend(_kv(k, v) for k, v in attributes.items())
    for event_name, event_attributes in events:
        event = span.events.add(name=event_name, time_unix_nano=end)
        event.attributes.extend(_kv(k, v) for k, v in event_attributes.items())
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = "TimeoutError: the tool timed out"
    return span


def run_spans(index: int, base_ns: int) -> list[Span]:
    """One run of SPANS_PER_RUN spans; every 20th fails, every 100th is still running."""
    trace = (index + 1).to_bytes(16, "big")
    root_id = index * 100 + 1
    start = base_ns + index * 1_000_000_000
    run_id, agent = f"run-{index:07d}", AGENTS[index % len(AGENTS)]
    common = {"agentbus.run.id": run_id, "gen_ai.agent.name": agent}
    failed, running = index % 20 == 7, index % 100 == 42
    spans: list[Span] = []
    next_id = root_id + 1
    for node in range(3):
        node_id, iteration_id = next_id, next_id + 1
        node_start = start + node * 100_000_000
        spans.append(_span(trace, node_id, root_id, "node act", node_start,
                           node_start + 90_000_000, {**common, "gen_ai.operation.name":
                                                     "invoke_workflow"}))
        spans.append(_span(trace, iteration_id, node_id, "iteration act", node_start,
                           node_start + 90_000_000, {**common, "gen_ai.operation.name":
                                                     "invoke_workflow"},
                           events=(("agentbus.decision", {"agentbus.decision.chosen":
                                                          "search"}),)))
        spans.append(_span(trace, next_id + 2, iteration_id, "chat gpt-4o", node_start,
                           node_start + 40_000_000, {**common, "gen_ai.operation.name": "chat",
                                                     "gen_ai.usage.input_tokens": 400,
                                                     "gen_ai.usage.output_tokens": 40}))
        for tool in range(2):
            spans.append(_span(
                trace, next_id + 3 + tool, iteration_id, "execute_tool search",
                node_start + 40_000_000, node_start + 80_000_000,
                {**common, "gen_ai.operation.name": "execute_tool",
                 "gen_ai.tool.name": "search"}, error=failed and node == 2))
        next_id += 5
    if running:
        spans.append(_span(trace, next_id, root_id, "agentbus.pending invoke_agent " + agent,
                           start, start, {**common, "agentbus.span.pending": True}))
    else:
        spans.append(_span(
            trace, root_id, None, f"invoke_agent {agent}", start, start + 300_000_000,
            {**common, "gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens":
             1200, "gen_ai.usage.output_tokens": 120,
             "agentbus.run.status": "failed" if failed else "completed"}, error=failed))
    while len(spans) < SPANS_PER_RUN:  # pad to exactly SPANS_PER_RUN with model calls
        spans.append(_span(trace, next_id + len(spans), root_id, "chat gpt-4o", start,
                           start + 1_000_000, {**common, "gen_ai.operation.name": "chat"}))
    return spans


def big_trace_spans(base_ns: int) -> list[Span]:
    trace = (10**9).to_bytes(16, "big")
    spans = [_span(trace, 1, None, "invoke_agent big", base_ns, base_ns + 10**10,
                   {"gen_ai.operation.name": "invoke_agent", "agentbus.run.id": "run-big"})]
    for i in range(2, BIG_TRACE_SPANS + 1):
        parent = 1 if (i - 2) % 10 == 0 else i - 1  # chains ten deep under the root
        start = base_ns + i * 1_000_000
        spans.append(_span(trace, i, parent, f"execute_tool t{i % 7}", start,
                           start + 500_000, {"gen_ai.operation.name": "execute_tool"}))
    return spans


def _batches(spans: Iterator[Span]) -> Iterator[bytes]:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for span in spans:
        scope.spans.append(span)
        if len(scope.spans) == BATCH:
            yield request.SerializeToString()
            request = ExportTraceServiceRequest()
            scope = request.resource_spans.add().scope_spans.add()
    if len(scope.spans):
        yield request.SerializeToString()


def _all_spans(runs: int, base_ns: int) -> Iterator[Span]:
    for index in range(runs):
        yield from run_spans(index, base_ns)


def fill(db: Path, requests: list[bytes], *, run_indexes: bool) -> float:
    """Store ``requests``; seconds taken."""
    with Store(db) as store:
        if not run_indexes:
            store._conn.execute("DROP INDEX spans_runs")  # bench only: the cost of the index
            store._conn.execute("DROP INDEX spans_pending")
        ingest = Ingest(store)
        started = time.perf_counter()
        for body in requests:
            ingest.export_protobuf(Signal.TRACES, body)
        return time.perf_counter() - started


def timed(rounds: int, work: Callable[[], object]) -> float:
    """Median milliseconds of ``work``."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    runs = args.spans // SPANS_PER_RUN
    base_ns = 1_790_000_000_000_000_000
    requests = list(_batches(_all_spans(runs, base_ns)))
    big = list(_batches(iter(big_trace_spans(base_ns))))
    with tempfile.TemporaryDirectory() as folder:
        store_s: dict[str, list[float]] = {"indexed": [], "plain": []}
        for round_ in range(2):  # alternating, each into a new file
            store_s["plain"].append(fill(Path(folder, f"plain{round_}.db"), requests,
                                         run_indexes=False))
            store_s["indexed"].append(fill(Path(folder, f"indexed{round_}.db"), requests,
                                           run_indexes=True))
        indexed = Path(folder, "indexed0.db")
        fill(indexed, big, run_indexes=True)
        with connect(indexed) as conn:
            def page(**filters: Any) -> Callable[[], object]:
                return lambda: query_runs(conn, RunQuery(**filters))

            cursor: tuple[int, str, str] | None = None
            for _ in range(40):
                found = query_runs(conn, RunQuery(before=cursor))
                assert found.next_cursor is not None
                cursor = decode_cursor(found.next_cursor)
            first = query_runs(conn, RunQuery())
            assert len(first.runs) == 50
            figures = {
                "spans": args.spans + BIG_TRACE_SPANS,
                "runs": runs + 1,
                "first_page_ms": timed(args.rounds, page()),
                "list_answer_ms": timed(args.rounds, lambda: runs_answer(
                    conn, RunQuery(), WebLinks())),
                "agent_filter_ms": timed(args.rounds, page(agent=AGENTS[3])),
                "status_failed_ms": timed(args.rounds, page(status="failed")),
                "page_40_ms": timed(args.rounds, page(before=cursor)),
                "search_run_id_ms": timed(args.rounds, page(search="run-00012")),
                "old_whole_list_ms": timed(args.rounds,
                                           lambda: conn.execute(OLD_RUNS_SQL).fetchall()),
                "trace_10k_spans_ms": timed(args.rounds, lambda: trace_document(
                    conn, (10**9).to_bytes(16, "big").hex(), lambda run: run.to_dict())),
            }
        figures["list_vs_old_whole_list"] = round(
            figures["first_page_ms"] / figures["old_whole_list_ms"], 4)
        indexed_s, plain_s = min(store_s["indexed"]), min(store_s["plain"])
        figures["store_s_indexed"] = round(indexed_s, 2)
        figures["store_s_plain"] = round(plain_s, 2)
        figures["store_indexed_vs_plain"] = round(indexed_s / plain_s, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
