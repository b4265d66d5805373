"""The Grafana dashboards in dashboards/*.json: valid layout, provisioned datasources, PromQL
that Prometheus parses (promtool), and only metric names the project really produces.

The helpers at the top are shared with tests/test_prometheus_e2e.py, which runs every query
against a real Prometheus fed by the demo workload.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_agentbus import semconv as sc
from otel_agentbus.telemetry.metrics import MirrorMetrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
DATASOURCES = ROOT / "collector/grafana/provisioning/datasources/datasources.yaml"
COLLECTOR_CONFIG = ROOT / "collector/otelcol-config.yaml"
PROMETHEUS_CONFIG = ROOT / "collector/prometheus/prometheus.yml"
EXPECTED_FILES = ("agent-overview.json", "tools-llm.json", "bus-health.json")

GRAFANA_BUILTINS = {"__rate_interval": "1m", "__range": "1h", "__interval": "1m"}
"""What promtool and the e2e test put in place of Grafana's interval variables."""

PROMQL_WORDS = frozenset({
    # aggregation operators and keywords
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset",
    # functions the dashboards may use
    "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile",
    "label_replace", "label_join", "vector", "scalar", "abs", "ceil", "floor", "round",
    "clamp", "clamp_min", "clamp_max", "time", "timestamp", "absent", "absent_over_time",
    "sum_over_time", "avg_over_time", "max_over_time", "min_over_time", "count_over_time",
    "last_over_time", "sort", "sort_desc", "changes", "resets", "inf", "nan",
})

SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
"""A metric name with its label matchers: the dashboards always write selectors this way."""


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_tool(name: str) -> str:
    """The path of a Prometheus binary. Missing: skip locally, fail under CI (.ci/test
    installs Debian's prometheus package, so absence there is a broken set-up)."""
    path = shutil.which(name)
    if path is None:
        message = (f"`{name}` not found: install Debian's prometheus package "
                   "(apt-get install prometheus), as .ci/test does")
        if is_ci():
            pytest.fail(f"{message}; CI=true, so this check may not be skipped")
        pytest.skip(message)
    return path


# ---------------------------------------------------------------- dashboards


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels inside a collapsed row


def prometheus_targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any],
                                                                    dict[str, Any]]]:
    """(panel, target) for every Prometheus query of the dashboard."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            source = target.get("datasource") or panel.get("datasource") or {}
            if source.get("type") == "prometheus":
                yield panel, target


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query["query"] if isinstance(query, dict) else query)


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\)$")


def all_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, where, PromQL) for every panel query and every variable query's
    selector, before variable substitution."""
    found: list[tuple[str, str, str]] = []
    for name, dashboard in load_dashboards().items():
        for panel, target in prometheus_targets(dashboard):
            found.append((name, f"panel {panel['title']!r} {target['refId']}", target["expr"]))
        for var_name, variable in variables(dashboard).items():
            match = LABEL_VALUES.match(variable_query(variable))
            if match:
                found.append((name, f"variable ${var_name}", match["selector"]))
    return found


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's variables replaced: ``$__rate_interval`` etc. by fixed durations, every other
    ``$var`` / ``${var}`` / ``[[var]]`` by ``values[var]``; an unknown variable raises."""
    merged = {**GRAFANA_BUILTINS, **values}

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in merged:
            raise KeyError(f"no value for Grafana variable ${name} in {expr!r}")
        return merged[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", repl, expr)


def match_all(dashboard: dict[str, Any]) -> dict[str, str]:
    """Every dashboard variable set to match anything (Grafana's All with allValue .*)."""
    return {name: ".*" for name in variables(dashboard)}


def selectors(expr: str) -> list[str]:
    """The vector selectors ``name{...}`` of a PromQL expression (after substitution)."""
    found = []
    for match in SELECTOR.finditer(expr):
        depth, index = 0, match.end() - 1
        while index < len(expr):
            depth += {"{": 1, "}": -1}.get(expr[index], 0)
            if depth == 0:
                break
            index += 1
        found.append(expr[match.start():index + 1])
    return found


def metric_names(expr: str) -> set[str]:
    return {m.group(1) for m in SELECTOR.finditer(expr)} - PROMQL_WORDS


# ---------------------------------------------------------------- names the project produces


class _Instrument:
    def add(self, *args: Any, **kwargs: Any) -> None: ...

    def record(self, *args: Any, **kwargs: Any) -> None: ...

    def set(self, *args: Any, **kwargs: Any) -> None: ...


class RecordingMeter:
    """Stands in for an SDK Meter: notes (name, unit, kind) of every instrument created."""

    def __init__(self) -> None:
        self.instruments: list[tuple[str, str, str]] = []

    def __getattr__(self, method: str) -> Any:
        if not method.startswith("create_"):
            raise AttributeError(method)
        kind = method.removeprefix("create_")

        def create(name: str, *args: Any, unit: str = "", **kwargs: Any) -> _Instrument:
            self.instruments.append((name, unit, kind))
            return _Instrument()
        return create


def project_instruments() -> list[tuple[str, str, str]]:
    """Every instrument the mirror creates, read from the code (MirrorMetrics and its bus
    and export observers), not from a hand-kept list."""
    meter = RecordingMeter()
    mirror_metrics = MirrorMetrics(meter)  # type: ignore[arg-type]
    mirror_metrics.observe_export(lambda: (0, 0))
    mirror_metrics.observe_bus(None)  # type: ignore[arg-type]  # callbacks are not called
    return meter.instruments


UNIT_SUFFIXES = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}


def prometheus_names(name: str, unit: str, kind: str) -> set[str]:
    """The documented OTLP → Prometheus translation (collector prometheus exporter and the
    Python opentelemetry-exporter-prometheus alike): dots → ``_``, unit suffix added
    (``s`` → ``_seconds``), brace units like ``{token}`` dropped, counters get ``_total``,
    histograms become ``_bucket`` / ``_sum`` / ``_count``."""
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    if unit and not (unit.startswith("{") and unit.endswith("}")):
        if unit not in UNIT_SUFFIXES:
            raise ValueError(f"unit {unit!r} of {name}: add its Prometheus suffix here")
        suffix = UNIT_SUFFIXES[unit]
        if not base.endswith(f"_{suffix}"):
            base = f"{base}_{suffix}"
    if kind in {"counter", "observable_counter"}:
        return {base if base.endswith("_total") else f"{base}_total"}
    if kind == "histogram":
        return {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
    if kind in {"observable_gauge", "gauge", "up_down_counter", "observable_up_down_counter"}:
        return {base}
    raise ValueError(f"instrument kind {kind!r} of {name}: add its translation here")


def project_metric_names() -> dict[str, set[str]]:
    """OTel metric name → the Prometheus series names it becomes."""
    return {name: prometheus_names(name, unit, kind)
            for name, unit, kind in project_instruments()}


def collector_config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COLLECTOR_CONFIG.read_text())
    return loaded


def span_metrics_names() -> set[str]:
    """What the collector's span_metrics connector produces, from its configured namespace
    and histogram unit: ``traces_span_metrics_calls_total`` and
    ``traces_span_metrics_duration_milliseconds_{bucket,sum,count}``."""
    connector = collector_config()["connectors"]["span_metrics"]
    namespace = connector.get("namespace", "traces.span.metrics").replace(".", "_")
    unit = UNIT_SUFFIXES[connector.get("histogram", {}).get("unit", "ms")]
    return {f"{namespace}_calls_total"} | {
        f"{namespace}_duration_{unit}_{part}" for part in ("bucket", "sum", "count")}


def known_metric_names() -> set[str]:
    names = set(span_metrics_names())
    for series in project_metric_names().values():
        names |= series
    return names


def provisioned_datasources() -> dict[str, str]:
    """uid → type of every datasource Grafana is provisioned with."""
    loaded = yaml.safe_load(DATASOURCES.read_text())
    return {d["uid"]: d["type"] for d in loaded["datasources"]}


def datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "uid" in node and "type" in node and set(node) <= {"uid", "type"}:
            yield node
        for value in node.values():
            yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


# ================================================================= tests


def test_the_three_dashboards_exist() -> None:
    assert set(EXPECTED_FILES) <= {path.name for path in DASHBOARDS.glob("*.json")}


def test_dashboards_are_valid_with_unique_uids() -> None:
    dashboards = load_dashboards()
    uids = [d["uid"] for d in dashboards.values()]
    assert len(uids) == len(set(uids)), uids
    assert dashboards["agent-overview.json"]["uid"] == "agentbus-overview"
    for name, dashboard in dashboards.items():
        assert dashboard.get("title"), name
        assert 36 <= dashboard["schemaVersion"] <= 41, name
        assert "__inputs" not in dashboard, f"{name}: __inputs only work in the UI import flow"
        assert "${DS_" not in json.dumps(dashboard), name
        ids = [panel["id"] for panel in iter_panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        assert all(panel.get("title") for panel in iter_panels(dashboard)), name


@pytest.mark.parametrize("name", EXPECTED_FILES)
def test_grid_layout_is_valid_and_panels_do_not_overlap(name: str) -> None:
    dashboard = load_dashboards()[name]
    boxes: list[tuple[str, int, int, int, int]] = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        x, y, w, h = grid["x"], grid["y"], grid["w"], grid["h"]
        assert all(isinstance(v, int) for v in (x, y, w, h)), panel["title"]
        assert x >= 0 and y >= 0 and w >= 1 and h >= 1, panel["title"]
        assert x + w <= 24, f"{panel['title']}: wider than Grafana's 24 columns"
        for other, ox, oy, ow, oh in boxes:
            overlap = x < ox + ow and ox < x + w and y < oy + oh and oy < y + h
            assert not overlap, f"{name}: {panel['title']!r} overlaps {other!r}"
        boxes.append((panel["title"], x, y, w, h))


def test_every_datasource_uid_is_provisioned() -> None:
    provisioned = provisioned_datasources()
    assert {"prometheus", "jaeger", "tempo"} <= set(provisioned)
    for name, dashboard in load_dashboards().items():
        refs = list(datasource_refs(dashboard))
        assert refs, name
        for ref in refs:
            if ref["uid"] == "-- Grafana --":
                continue
            assert ref["uid"] in provisioned, f"{name}: datasource uid {ref['uid']} not provisioned"
            assert provisioned[ref["uid"]] == ref["type"], f"{name}: {ref}"


def test_variables_are_prometheus_label_values_and_all_are_defined() -> None:
    for name, dashboard in load_dashboards().items():
        defined = variables(dashboard)
        assert "service" in defined, name
        for var_name, variable in defined.items():
            assert variable["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            assert LABEL_VALUES.match(variable_query(variable)), f"{name}: ${var_name}"
            assert variable.get("definition", variable_query(variable)) == variable_query(
                variable), f"{name}: ${var_name} shows a different query than it runs"
        # Every variable a query uses exists (substitute raises on an unknown one).
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                substitute(json.dumps(target), match_all(dashboard))
    overview = variables(load_dashboards()["agent-overview.json"])
    assert "agent" in overview
    assert "gen_ai_agent_name" in variable_query(overview["agent"])


def test_latency_panels_show_exemplars() -> None:
    latency_panels = 0
    for name, dashboard in load_dashboards().items():
        for panel, target in prometheus_targets(dashboard):
            if "histogram_quantile" in target["expr"]:
                latency_panels += 1
                assert target.get("exemplar") is True, f"{name}: {panel['title']}"
    assert latency_panels >= 6


def test_exemplars_link_to_jaeger_and_tempo_by_trace_id() -> None:
    loaded = yaml.safe_load(DATASOURCES.read_text())
    prom = next(d for d in loaded["datasources"] if d["uid"] == "prometheus")
    destinations = prom["jsonData"]["exemplarTraceIdDestinations"]
    assert {d["datasourceUid"] for d in destinations} == {"jaeger", "tempo"}
    assert {d["name"] for d in destinations} == {"trace_id"}


def test_failed_runs_table_links_traces_to_jaeger() -> None:
    overview = load_dashboards()["agent-overview.json"]
    tables = [p for p in iter_panels(overview) if p.get("datasource", {}).get("uid") == "jaeger"]
    assert tables, "no Jaeger panel for failed runs"
    target = tables[0]["targets"][0]
    assert target["queryType"] == "search"
    assert "agentbus.run.status=failed" in target["tags"]
    link = json.dumps(tables[0]["fieldConfig"])
    assert "http://localhost:16686/trace/${__value.raw}" in link


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def provisioned_trace_to_metrics_queries() -> list[str]:
    loaded = yaml.safe_load(DATASOURCES.read_text())
    return [query["query"] for source in loaded["datasources"]
            for query in source.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", [])]


def test_provisioning_yaml_escapes_dollar_signs() -> None:
    """Grafana expands $VAR in provisioning files: Grafana's own $__tags must be $$__tags."""
    values = list(_strings(yaml.safe_load(DATASOURCES.read_text())))
    assert any("$$__tags" in value for value in values)
    bad = [value for value in values if re.search(r"(?<!\$)\$(?!\$)", value.replace("$$", ""))]
    assert not bad, f"unescaped $ in datasources.yaml: {bad}"


def test_trace_to_metrics_queries_parse_with_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    queries = provisioned_trace_to_metrics_queries()
    assert queries
    known = known_metric_names()
    exprs = []
    for query in queries:
        # What Grafana sends: $$ unescaped to $, then $__tags filled from the span's tags.
        expr = query.replace("$$", "$").replace("$__tags", 'service_name="otel-agentbus-demo"')
        assert metric_names(expr) <= known, expr
        exprs.append(("tracesToMetrics", expr))
    errors = _check_rules(promtool, exprs, tmp_path)
    assert not errors, errors


def test_translation_rules_match_the_documented_examples() -> None:
    assert prometheus_names("gen_ai.client.operation.duration", "s", "histogram") == {
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_operation_duration_seconds_sum",
        "gen_ai_client_operation_duration_seconds_count"}
    assert prometheus_names("gen_ai.client.token.usage", "{token}", "histogram") == {
        "gen_ai_client_token_usage_bucket", "gen_ai_client_token_usage_sum",
        "gen_ai_client_token_usage_count"}
    assert prometheus_names("agentbus.runs", "{run}", "counter") == {"agentbus_runs_total"}
    assert prometheus_names("agentbus.subscriber.queue_depth", "{event}",
                            "observable_gauge") == {"agentbus_subscriber_queue_depth"}
    with pytest.raises(ValueError):
        prometheus_names("x.y", "furlongs", "counter")


def test_every_semconv_metric_is_an_instrument() -> None:
    declared = {v for k, v in vars(sc).items() if k.startswith("METRIC_") and isinstance(v, str)}
    assert declared == set(project_metric_names())


def test_query_metric_names_are_produced_by_the_project() -> None:
    known = known_metric_names()
    queries = all_queries()
    assert len(queries) >= 30
    for name, where, expr in queries:
        used = metric_names(expr)
        assert used, f"{name} {where}: no metric selector in {expr!r}"
        unknown = used - known
        assert not unknown, f"{name} {where}: metrics nobody produces: {sorted(unknown)}"


def test_queries_write_every_metric_as_a_selector() -> None:
    """Metric names are only recognised as ``name{...}``; a bare one would escape the name
    check above and the e2e test's per-selector check."""
    for name, where, expr in all_queries():
        text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        text = re.sub(r"\{[^}]*\}", "{}", text)
        text = re.sub(r"\[[^\]]*\]", "[]", text)
        text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)",
                      r"\1", text)
        for word in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\{)?", text):
            if word.group(1) in PROMQL_WORDS or word.group(2):
                continue
            raise AssertionError(f"{name} {where}: bare identifier {word.group(1)!r} in {expr!r}")


def test_every_project_metric_is_on_a_dashboard() -> None:
    used: set[str] = set()
    for _, _, expr in all_queries():
        used |= metric_names(expr)
    missing = [name for name, series in project_metric_names().items() if not series & used]
    assert not missing, f"metrics on no dashboard: {missing}"
    assert span_metrics_names() & used


# ---------------------------------------------------------------- promtool


def _check_rules(promtool: str, exprs: list[tuple[str, str]], tmp_path: Path) -> str:
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{index}", "expr": expr}
        for index, (_, expr) in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    return done.stdout + done.stderr if done.returncode else ""


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    dashboards = load_dashboards()
    exprs = []
    for name, where, expr in all_queries():
        exprs.append((f"{name} {where}", substitute(expr, match_all(dashboards[name]))))
    errors = _check_rules(promtool, exprs, tmp_path)
    assert not errors, errors
    # The variables set to one value each (what a user picks) parse too.
    one_value = {"service": "otel-agentbus-demo", "agent": "travel-planner", "tool": "run_tests",
                 "model": "gpt-4o-mini", "bus": "default"}
    exprs = [(f"{name} {where}", substitute(expr, one_value))
             for name, where, expr in all_queries()]
    errors = _check_rules(promtool, exprs, tmp_path)
    assert not errors, errors


def test_promtool_check_catches_a_broken_query(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    errors = _check_rules(promtool, [("broken", "sum by (le (rate(x{a=\"b\"}[1m]))")], tmp_path)
    assert errors


def test_prometheus_config_passes_promtool() -> None:
    promtool = require_tool("promtool")
    done = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    targets = [t for job in config["scrape_configs"] for sc_ in job["static_configs"]
               for t in sc_["targets"]]
    prom_exporter = collector_config()["exporters"]["prometheus"]["endpoint"]
    assert f"otel-collector:{prom_exporter.rsplit(':', 1)[1]}" in targets
    assert all(job.get("honor_labels") for job in config["scrape_configs"])
