"""Every dashboard query against a real Prometheus server fed by the demo workload.

A child process runs the demo workload through an EventBus with ``configure(...)`` attached
and a ``MeterProvider(metric_readers=[PrometheusMetricReader()])``, serving /metrics while
the runs happen. A real Prometheus (Debian's 2.42, ``--enable-feature=exemplar-storage``)
scrapes it every second; then each dashboard query (variables set to match-all, and again
with the service picked from the variable query) must return at least one series, and
each vector selector in it too, so an ``or vector(0)`` cannot hide a wrong name.

Where the Python exporter and the collector differ, the test says so explicitly:

- Resource attributes: the collector's exporter (``resource_to_telemetry_conversion``) puts
  ``service_name`` on every series; the Python exporter only on ``target_info``. The scrape
  config below adds ``service_name`` as a target label to stand in for it.
- ``traces_span_metrics_*`` come only from the collector's span_metrics connector. The child
  serves them from an emulator that applies the connector's naming (namespace, dimensions,
  ``SPAN_KIND_*`` / ``STATUS_CODE_*`` values, ms buckets read from
  collector/otelcol-config.yaml) to the real spans of the workload, with trace_id exemplars
  as the exporter sends them over OpenMetrics.
- The Python exporter sends no exemplars at all; exemplars are checked on the emulated
  span metrics only.
"""

from __future__ import annotations

import json
import math
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from telemetry_helpers import free_port, terminate
from test_dashboards_promql import (
    LABEL_VALUES,
    collector_config,
    load_dashboards,
    match_all,
    project_metric_names,
    prometheus_targets,
    require_tool,
    selectors,
    substitute,
    variable_query,
    variables,
)

SERVICE = "otel-agentbus-demo"
BATCHES = 3
RUNS_PER_BATCH = 6
READY_TIMEOUT_S = 20.0
INGEST_TIMEOUT_S = 25.0

CHILD = r'''
import asyncio, json, math, sys
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar

from otel_agentbus import Event, EventBus, Scope, configure
from otel_agentbus.demo.workload import EventCounter, plan_runs, run_workload

service, batches, runs, buckets_ms, dimensions = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]),
    json.loads(sys.argv[5]))


def label_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class SpanMetricsEmulator:
    """The collector's span_metrics connector + prometheus exporter naming, fed by the real
    spans of this process (cumulative, like the connector's default)."""

    def __init__(self, exporter):
        self.exporter = exporter

    def collect(self):
        calls = Metric("traces_span_metrics_calls", "span calls", "counter")
        duration = Metric("traces_span_metrics_duration_milliseconds", "span duration",
                          "histogram")
        series = {}
        for span in self.exporter.get_finished_spans():
            attributes = span.attributes or {}
            labels = {
                "service_name": str(span.resource.attributes.get("service.name", "")),
                "span_name": span.name,
                "span_kind": "SPAN_KIND_" + span.kind.name,
                "status_code": "STATUS_CODE_" + span.status.status_code.name,
            }
            for name in dimensions:
                if name in attributes:
                    labels[name.replace(".", "_")] = label_value(attributes[name])
            key = tuple(sorted(labels.items()))
            entry = series.setdefault(key, {"labels": labels, "values": [], "last": None})
            ms = max(0, span.end_time - span.start_time) / 1e6
            entry["values"].append(ms)
            entry["last"] = (format(span.context.trace_id, "032x"),
                             format(span.context.span_id, "016x"), ms, span.end_time / 1e9)
        for entry in series.values():
            labels, values = entry["labels"], entry["values"]
            trace_id, span_id, last_ms, at = entry["last"]
            exemplar = Exemplar({"trace_id": trace_id, "span_id": span_id}, last_ms, at)
            calls.add_sample("traces_span_metrics_calls_total", labels, len(values))
            placed = False
            for bound in [*buckets_ms, math.inf]:
                count = sum(1 for v in values if v <= bound)
                here = not placed and last_ms <= bound
                placed = placed or here
                le = "+Inf" if bound == math.inf else str(float(bound))
                duration.add_sample(
                    "traces_span_metrics_duration_milliseconds_bucket", {**labels, "le": le},
                    count, exemplar=exemplar if here else None)
            duration.add_sample("traces_span_metrics_duration_milliseconds_sum", labels,
                                sum(values))
            duration.add_sample("traces_span_metrics_duration_milliseconds_count", labels,
                                len(values))
        yield calls
        yield duration


exporter = InMemorySpanExporter()
meter_provider = MeterProvider(resource=Resource.create({"service.name": service}),
                               metric_readers=[PrometheusMetricReader()])
telemetry = configure(service_name=service, span_exporter=exporter,
                      meter_provider=meter_provider)
REGISTRY.register(SpanMetricsEmulator(exporter))
server, _ = start_http_server(0, addr="127.0.0.1")
print("PORT", server.server_port, flush=True)


async def batches_of_runs(bus, seeds):
    for seed in seeds:
        await run_workload(bus, plan_runs(runs, seed))
        scope = Scope(run_id="run-guarded", agent="travel-planner")
        await bus.publish(Event("agent.constraint.violated", scope=scope))
        await bus.publish(Event("agent.doom_loop.detected", scope=scope))
        telemetry.tracer_provider.force_flush()
        await asyncio.sleep(1.2)


async def main():
    bus = telemetry.attach(EventBus())
    bus.subscribe(EventCounter(), name="dashboard-probe", buffer=10_000)
    seeds = [1000 + batch for batch in range(batches)]
    # Warm-up: every series (agent x status, tool x error type, model x token type...) exists
    # before Prometheus first scrapes, so increase() and rate() see the next batches in full
    # (a counter's first value is not an increase).
    await batches_of_runs(bus, seeds)
    # A run that never ends: the "Active runs" panel must count it.
    await bus.publish(Event("agent.run.started",
                            scope=Scope(run_id="run-still-going", agent="travel-planner")))
    telemetry.tracer_provider.force_flush()
    print("WARM", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent: "Prometheus has scraped us"
    await batches_of_runs(bus, seeds)
    print("DONE", flush=True)
    # Keep the bus open (its subscriber queue gauge needs subscribers) until killed.
    await asyncio.sleep(3600)


asyncio.run(main())
'''


def duration_ms(text: str | int | float) -> float:
    if isinstance(text, int | float):
        return float(text)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    assert match, f"bucket {text!r}"
    return float(match[1]) * {"ms": 1, "s": 1e3, "m": 60e3, "h": 3600e3}[match[2]]


class ChildOutput:
    """The child's stdout lines, read on a thread so waiting for one is bounded."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        stderr = ""
        if self.process.poll() is not None and self.process.stderr is not None:
            stderr = self.process.stderr.read()
        raise AssertionError(f"child never printed {prefix!r} within {timeout}s; "
                             f"stdout={self.seen!r} stderr={stderr[-3000:]!r}")


@dataclass
class Stack:
    url: str
    child: subprocess.Popen[str]

    def api(self, path: str, **params: str | list[str]) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [
            {"metric": {}, "value": data["result"]}]
        return result


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = require_tool("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    connector = collector_config()["connectors"]["span_metrics"]
    buckets = [duration_ms(b) for b in connector["histogram"]["explicit"]["buckets"]]
    dimensions = [d["name"] for d in connector["dimensions"]]
    script = tmp / "serve_workload.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), SERVICE, str(BATCHES), str(RUNS_PER_BATCH),
         json.dumps(buckets), json.dumps(dimensions)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp,
    )
    server: subprocess.Popen[bytes] | None = None
    output = ChildOutput(child)
    try:
        metrics_port = int(output.wait_for("PORT", READY_TIMEOUT_S).split()[1])
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "agentbus-demo",
                "honor_labels": True,
                "static_configs": [{
                    "targets": [f"127.0.0.1:{metrics_port}"],
                    # Stands in for the collector's resource_to_telemetry_conversion.
                    "labels": {"service_name": SERVICE},
                }],
            }],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp / "prometheus.log").open("wb")
        server = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--enable-feature=exemplar-storage"],
            stdout=log, stderr=subprocess.STDOUT, cwd=tmp,
        )
        result = Stack(f"http://127.0.0.1:{port}", child)
        output.wait_for("WARM", READY_TIMEOUT_S)
        wait_for_runs(result, server, tmp / "prometheus.log", BATCHES * RUNS_PER_BATCH)
        assert child.stdin is not None
        child.stdin.write("GO\n")
        child.stdin.flush()
        output.wait_for("DONE", READY_TIMEOUT_S)
        wait_for_runs(result, server, tmp / "prometheus.log", 2 * BATCHES * RUNS_PER_BATCH)
        yield result
    finally:
        if server is not None:
            terminate(server, timeout=5)
        terminate(child, timeout=5)


def wait_for_runs(stack: Stack, server: subprocess.Popen[bytes], log: Path,
                  expected: int) -> None:
    """Until Prometheus holds ``expected`` finished runs (the counter is read at a scrape),
    then two more scrapes so rate() has its samples; bounded."""
    deadline = time.monotonic() + INGEST_TIMEOUT_S
    runs = 0.0
    while time.monotonic() < deadline:
        assert server.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
        try:
            result = stack.query("sum(agentbus_runs_total)")
            runs = float(result[0]["value"][1]) if result else 0.0
        except OSError:
            runs = 0.0
        if runs >= expected:
            time.sleep(2.2)
            return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus ingested {runs} of {expected} runs in "
                         f"{INGEST_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(series["value"][1]) for series in result]


def dashboard_queries() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for name, dashboard in load_dashboards().items():
        for panel, target in prometheus_targets(dashboard):
            yield name, panel["title"], target["expr"], dashboard


# ================================================================= tests


def test_python_exporter_names_follow_the_documented_translation(stack: Stack) -> None:
    """The derived names (tests/test_dashboards_promql.py) are what Prometheus really got."""
    scraped = {name for name in stack.api("/api/v1/label/__name__/values")
               if name.startswith(("agentbus_", "gen_ai_"))}
    derived: set[str] = set()
    for series in project_metric_names().values():
        derived |= series
    assert scraped == derived
    # Resource attributes reach Prometheus through target_info only (Python exporter).
    # (service_name on the samples comes from the scrape config's target label here.)
    info = stack.query('target_info{telemetry_sdk_language="python"}')
    assert info, "no target_info carrying the resource attributes"
    runs = stack.query("agentbus_runs_total")
    assert runs
    assert not any("telemetry_sdk_language" in s["metric"] for s in runs)
    # The Python exporter adds the instrumentation scope as labels (releases that know them).
    import opentelemetry.exporter.prometheus as python_exporter

    if hasattr(python_exporter, "_OTEL_SCOPE_NAME_LABEL"):
        assert all(s["metric"].get("otel_scope_name") == "otel_agentbus" for s in runs)


def test_every_dashboard_query_returns_series(stack: Stack) -> None:
    checked = 0
    for name, title, expr, dashboard in dashboard_queries():
        concrete = substitute(expr, match_all(dashboard))
        assert stack.query(concrete), f"{name} / {title}: no series for {concrete}"
        for selector in selectors(concrete):
            assert stack.query(selector), f"{name} / {title}: selector {selector} matches nothing"
        checked += 1
    assert checked >= 30


def test_variable_queries_and_a_picked_service(stack: Stack) -> None:
    """Each label_values(...) variable has values; with the service the variable offers,
    every query still returns series."""
    for name, dashboard in load_dashboards().items():
        picked: dict[str, str] = match_all(dashboard)
        for var_name, variable in variables(dashboard).items():
            match = LABEL_VALUES.match(substitute(variable_query(variable), picked))
            assert match, var_name
            found = stack.api(f"/api/v1/label/{match['label']}/values",
                              **{"match[]": match["selector"]})
            assert found, f"{name}: variable ${var_name} has no values"
            if var_name == "service":
                assert found == [SERVICE]
                picked["service"] = found[0]
        for panel, target in prometheus_targets(dashboard):
            concrete = substitute(target["expr"], picked)
            assert stack.query(concrete), f"{name} / {panel['title']}: nothing for {concrete}"


POSITIVE = {
    "Runs ended", "Success ratio", "Failed runs", "Decisions",
    "Constraint violations + doom loops", "Runs per minute by agent and status",
    "Run duration p50 / p95 / p99", "Run duration p95 by agent",
    "Run span latency p95 by agent (span_metrics)", "Tool calls per second by tool",
    "Tool error ratio by tool", "Tool latency p95 by tool", "Tool errors by type (range)",
    "Tool span latency p95 (span_metrics)", "LLM latency p50 / p95 by model",
    "LLM calls per second by model and provider", "Tokens per second by model and token type",
    "Mean tokens per call by model and token type", "Tokens by model and token type (range)",
    "Published (range)",
    "Spans exported per second by outcome",
}
"""Panels whose every query must show a positive number after the workload, not just a
series (drops, failures and queue depth are rightly 0 here)."""


def test_key_panels_show_positive_values(stack: Stack) -> None:
    titles = {title for _, title, _, _ in dashboard_queries()}
    assert titles >= POSITIVE, POSITIVE - titles
    for name, title, expr, dashboard in dashboard_queries():
        if title not in POSITIVE:
            continue
        found = values(stack.query(substitute(expr, match_all(dashboard))))
        assert any(math.isfinite(v) and v > 0 for v in found), f"{name} / {title}: {found}"


def test_active_runs_counts_the_run_left_open(stack: Stack) -> None:
    overview = load_dashboards()["agent-overview.json"]
    expr = next(t["expr"] for p, t in prometheus_targets(overview) if p["title"] == "Active runs")
    assert values(stack.query(substitute(expr, match_all(overview)))) == [1.0]


def test_queue_depth_and_bus_labels(stack: Stack) -> None:
    depth = stack.query("agentbus_subscriber_queue_depth")
    subscribers = {s["metric"].get("agentbus_subscriber") for s in depth}
    assert "dashboard-probe" in subscribers
    assert {s["metric"].get("agentbus_bus") for s in depth} == {"default"}


def test_span_metric_exemplars_carry_trace_ids(stack: Stack) -> None:
    now = time.time()
    data = stack.api("/api/v1/query_exemplars",
                     query="traces_span_metrics_duration_milliseconds_bucket",
                     start=str(now - 300), end=str(now + 5))
    exemplars = [e for series in data for e in series["exemplars"]]
    assert exemplars, "Prometheus stored no exemplars"
    assert all(re.fullmatch(r"[0-9a-f]{32}", e["labels"]["trace_id"]) for e in exemplars)
    # The Python exporter sends none for its own histograms.
    data = stack.api("/api/v1/query_exemplars", query="agentbus_run_duration_seconds_bucket",
                     start=str(now - 300), end=str(now + 5))
    assert not [e for series in data for e in series["exemplars"]]
