"""The collector, compose, Prometheus, Tempo and Grafana provisioning configs in collector/.

No Docker engine on the build machines, so the stack cannot be started here: these tests
check what a collector or compose would otherwise only reject at start-up (undefined or
misspelt components, incoherent pipelines, unpinned images, missing mounts, hosts that are
not services) and what would silently go wrong (content leaving the collector, ports that
disagree with the SDK defaults).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from otel_agentbus import semconv as sc
from otel_agentbus.receiver import server as receiver_server

ROOT = Path(__file__).resolve().parents[1]
COLLECTOR = ROOT / "collector"
COMPONENTS = COLLECTOR / "components-0.159.0.yaml"
BASE = COLLECTOR / "otelcol-config.yaml"
TEMPO = COLLECTOR / "otelcol-config-tempo.yaml"
AGENT_LB = COLLECTOR / "otelcol-agent-lb.yaml"
GATEWAY = COLLECTOR / "otelcol-gateway.yaml"
CONFIGS = (BASE, TEMPO, AGENT_LB, GATEWAY)
COMPOSE = COLLECTOR / "compose.yaml"
COMPOSE_LGTM = COLLECTOR / "compose.lgtm.yaml"
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")
COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.159.0"

UNUSED_ON_PURPOSE = {
    BASE.name: {"exporters": {"debug"}},
    TEMPO.name: {"exporters": {"debug"}},
    AGENT_LB.name: {"exporters": {"debug"}},
    GATEWAY.name: {"exporters": {"otlp_grpc/tempo"}},
}
"""Defined but in no pipeline, documented in the file: debug output, an alternative backend."""


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def components() -> dict[str, Any]:
    return load(COMPONENTS)


def component_type(key: str) -> str:
    return key.split("/", 1)[0]


def pipelines(config: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    found: dict[str, dict[str, list[str]]] = config["service"]["pipelines"]
    return found


def signal(pipeline: str) -> str:
    return pipeline.split("/", 1)[0]


def host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
    assert parts.hostname and parts.port, endpoint
    return parts.hostname, parts.port


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port → host port of a compose service."""
    ports = {}
    for entry in service.get("ports", []):
        fields = str(entry).split("/")[0].split(":")
        ports[int(fields[-1])] = int(fields[-2])
    return ports


def compose() -> dict[str, Any]:
    return load(COMPOSE)


def interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` with the variables unset."""
    def repl(match: re.Match[str]) -> str:
        assert match["default"] is not None, f"{text}: ${{{match['var']}}} has no default"
        return match["default"]
    return re.sub(r"\$\{(?P<var>\w+)(?::-(?P<default>[^}]*))?\}", repl, text)


def volume_mounts(service: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(host path, container path) of the bind mounts of a service, variables at their
    defaults."""
    for entry in service.get("volumes", []):
        fields = interpolate(str(entry)).split(":")
        if fields[0].startswith((".", "/")):
            yield fields[0], fields[1]


def content_deletions(processor: dict[str, Any]) -> dict[str, set[str]]:
    """context → attribute keys a transform processor deletes."""
    deleted: dict[str, set[str]] = {}
    for group in processor.get("trace_statements", []):
        for statement in group["statements"]:
            match = re.fullmatch(r'delete_key\(attributes, "([^"]+)"\)', statement.strip())
            if match:
                deleted.setdefault(group["context"], set()).add(match[1])
    return deleted


# ================================================================= every collector config


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_pipelines_reference_defined_components(path: Path) -> None:
    config = load(path)
    defined = {kind: set(config.get(kind) or {}) for kind in KINDS}
    for name, pipeline in pipelines(config).items():
        assert signal(name) in {"traces", "metrics", "logs"}, name
        assert pipeline.get("receivers") and pipeline.get("exporters"), name
        for receiver in pipeline["receivers"]:
            assert receiver in defined["receivers"] | defined["connectors"], (name, receiver)
        for processor in pipeline.get("processors", []):
            assert processor in defined["processors"], (name, processor)
        for exporter in pipeline["exporters"]:
            assert exporter in defined["exporters"] | defined["connectors"], (name, exporter)
    for extension in config["service"].get("extensions", []):
        assert extension in defined["extensions"], extension


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_component_type_exists_in_contrib_0_159_0(path: Path) -> None:
    available = components()
    deprecated = available["deprecated"]
    for kind in KINDS:
        for key in load(path).get(kind) or {}:
            kind_type = component_type(key)
            assert kind_type in available[kind], f"{path.name}: {kind} {key} not in 0.159.0"
            assert kind_type not in deprecated.get(kind, []), f"{path.name}: deprecated {key}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_connectors_join_pipelines(path: Path) -> None:
    config = load(path)
    for connector in config.get("connectors") or {}:
        as_exporter = [n for n, p in pipelines(config).items() if connector in p["exporters"]]
        as_receiver = [n for n, p in pipelines(config).items() if connector in p["receivers"]]
        assert as_exporter and as_receiver, f"{path.name}: {connector} must join two pipelines"
        if component_type(connector) == "span_metrics":
            assert {signal(n) for n in as_exporter} == {"traces"}
            assert {signal(n) for n in as_receiver} == {"metrics"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_components_are_used_unless_documented(path: Path) -> None:
    config = load(path)
    used: set[str] = set()
    for pipeline in pipelines(config).values():
        for kind in ("receivers", "processors", "exporters"):
            used |= set(pipeline.get(kind, []))
    for kind in ("receivers", "processors", "exporters", "connectors"):
        unused = set(config.get(kind) or {}) - used
        assert unused == UNUSED_ON_PURPOSE[path.name].get(kind, set()), (path.name, kind, unused)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_memory_limiter_first_and_batch_last(path: Path) -> None:
    for name, pipeline in pipelines(load(path)).items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", (path.name, name)
        assert processors[-1] == "batch", (path.name, name)


@pytest.mark.parametrize("path", (BASE, TEMPO, AGENT_LB), ids=lambda p: p.name)
def test_content_attributes_are_deleted_in_the_traces_pipeline(path: Path) -> None:
    config = load(path)
    traces = pipelines(config)["traces"]
    deleting = [p for p in traces["processors"] if component_type(p) == "transform"
                and content_deletions(config["processors"][p])]
    assert deleting, f"{path.name}: no content-deleting processor in the traces pipeline"
    deleted = content_deletions(config["processors"][deleting[0]])
    assert len(sc.CONTENT_ATTRIBUTES) >= 5
    # Spans (SPAN_ONLY capture) and span events (EVENT_ONLY) both.
    for context in ("span", "spanevent"):
        assert deleted.get(context, set()) >= sc.CONTENT_ATTRIBUTES, (path.name, context)


def test_content_check_sees_a_missing_attribute() -> None:
    config = load(BASE)
    processor = config["processors"]["transform/drop_genai_content"]
    processor["trace_statements"][0]["statements"].pop()
    deleted = content_deletions(processor)
    assert not deleted["span"] >= sc.CONTENT_ATTRIBUTES


# ================================================================= the local collector


def test_otlp_ports_agree_with_the_sdk_defaults_and_compose(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import DEFAULT_ENDPOINT

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    exporter = OTLPSpanExporter()
    try:
        grpc_default = host_port(exporter._endpoint)[1]
    finally:
        exporter.shutdown()
    http_default = host_port(DEFAULT_ENDPOINT)[1]
    assert (grpc_default, http_default) == (4317, 4318)
    assert host_port(receiver_server.DEFAULT_GRPC_ADDR)[1] == grpc_default
    assert host_port(receiver_server.DEFAULT_HTTP_ADDR)[1] == http_default

    protocols = load(BASE)["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["grpc"]["endpoint"]) == ("0.0.0.0", grpc_default)
    assert host_port(protocols["http"]["endpoint"]) == ("0.0.0.0", http_default)
    ports = published_ports(compose()["services"]["otel-collector"])
    assert ports[grpc_default] == grpc_default
    assert ports[http_default] == http_default


def test_span_metrics_dimensions_and_exemplars() -> None:
    connector = load(BASE)["connectors"]["span_metrics"]
    dimensions = {d["name"] for d in connector["dimensions"]}
    assert dimensions >= {sc.GEN_AI_AGENT_NAME, sc.GEN_AI_TOOL_NAME, sc.GEN_AI_OPERATION_NAME,
                          sc.RUN_STATUS, sc.SPAN_PENDING}
    emitted = {v for k, v in vars(sc).items() if k.isupper() and isinstance(v, str)}
    assert dimensions <= emitted, dimensions - emitted
    assert connector["exemplars"]["enabled"] is True
    assert connector["namespace"] == "traces.span.metrics"


def test_exporters_feed_jaeger_and_prometheus() -> None:
    config = load(BASE)
    jaeger = config["exporters"]["otlp_grpc/jaeger"]
    assert host_port(jaeger["endpoint"]) == ("jaeger", 4317)
    assert jaeger["tls"]["insecure"] is True
    prom = config["exporters"]["prometheus"]
    assert host_port(prom["endpoint"]) == ("0.0.0.0", 8889)
    assert prom["resource_to_telemetry_conversion"]["enabled"] is True
    assert prom["enable_open_metrics"] is True
    traces, metrics = pipelines(config)["traces"], pipelines(config)["metrics"]
    assert traces["receivers"] == ["otlp"]
    assert set(traces["exporters"]) == {"otlp_grpc/jaeger", "span_metrics"}
    assert set(metrics["receivers"]) == {"otlp", "span_metrics"}
    assert metrics["exporters"] == ["prometheus"]
    assert "debug" in config["exporters"]


def test_tempo_config_is_the_base_config_plus_tempo() -> None:
    base, tempo = load(BASE), load(TEMPO)
    exporter = tempo["exporters"].pop("otlp_grpc/tempo")
    assert host_port(exporter["endpoint"]) == ("tempo", 4317)
    pipelines(tempo)["traces"]["exporters"].remove("otlp_grpc/tempo")
    assert tempo == base
    receiver = load(COLLECTOR / "tempo/tempo.yaml")["distributor"]["receivers"]["otlp"]
    assert host_port(receiver["protocols"]["grpc"]["endpoint"])[1] == 4317


# ================================================================= gateway tier


def test_agent_tier_load_balances_by_trace_id() -> None:
    config = load(AGENT_LB)
    lb = config["exporters"]["loadbalancing"]
    assert lb["routing_key"] == "traceID"
    assert "otlp" in lb["protocol"]
    resolver = lb["resolver"]
    assert set(resolver) & {"dns", "static", "k8s"}
    assert "loadbalancing" in pipelines(config)["traces"]["exporters"]
    # Span metrics on 100% of spans, before the gateway samples.
    assert "span_metrics" in pipelines(config)["traces"]["exporters"]
    gateway_port = host_port(load(GATEWAY)["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"])[1]
    assert resolver["dns"]["port"] == str(gateway_port)  # a string field in loadbalancing


def test_gateway_tail_samples_errors_slow_and_a_share_of_the_rest() -> None:
    config = load(GATEWAY)
    traces = pipelines(config)["traces"]
    assert "tail_sampling" in traces["processors"]
    policies = config["processors"]["tail_sampling"]["policies"]
    by_type = {p["type"]: p for p in policies}
    assert by_type["status_code"]["status_code"]["status_codes"] == ["ERROR"]
    assert by_type["latency"]["latency"]["threshold_ms"] > 0
    assert 0 < by_type["probabilistic"]["probabilistic"]["sampling_percentage"] < 100
    status = by_type["string_attribute"]["string_attribute"]
    assert status["key"] == sc.RUN_STATUS
    assert set(status["values"]) == {sc.STATUS_FAILED, sc.STATUS_CANCELLED}
    assert any(component_type(e) == "otlp_grpc" for e in traces["exporters"])
    assert "span_metrics" not in (config.get("connectors") or {})


# ================================================================= compose


def all_compose_files() -> list[tuple[Path, dict[str, Any]]]:
    return [(COMPOSE, compose()), (COMPOSE_LGTM, load(COMPOSE_LGTM))]


def test_every_image_is_pinned() -> None:
    for path, spec in all_compose_files():
        assert "latest" not in path.read_text(), path.name
        for name, service in spec["services"].items():
            image = service["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag and re.search(r"\d", tag), (name, image)
            assert tag != "latest", (name, image)
    images = {name: s["image"] for name, s in compose()["services"].items()}
    assert images["otel-collector"] == COLLECTOR_IMAGE
    assert images["jaeger"] == "jaegertracing/jaeger:2.20.0"
    assert images["otel-collector"].endswith(":" + str(components()["version"]))
    assert load(COMPOSE_LGTM)["services"]["lgtm"]["image"].startswith("grafana/otel-lgtm:")


def test_mounted_host_paths_exist() -> None:
    for path, spec in all_compose_files():
        for name, service in spec["services"].items():
            for host, _ in volume_mounts(service):
                resolved = (path.parent / host).resolve()
                assert resolved.exists(), f"{path.name}: {name} mounts missing {host}"
    # The alternative collector config the compose file documents exists too.
    for config in re.findall(r"OTELCOL_CONFIG=(\S+)", COMPOSE.read_text()):
        assert (COLLECTOR / config).is_file(), config


def test_collector_mounts_its_config_where_the_image_reads_it() -> None:
    service = compose()["services"]["otel-collector"]
    mounts = dict(volume_mounts(service))
    assert mounts == {"./otelcol-config.yaml": "/etc/otelcol-contrib/config.yaml"}


def test_hosts_in_configs_are_compose_services() -> None:
    services = set(compose()["services"])
    assert {"otel-collector", "jaeger", "prometheus", "grafana", "tempo"} <= services
    hosts: set[str] = set()
    for path in (BASE, TEMPO):
        for exporter in load(path)["exporters"].values():
            if isinstance(exporter, dict) and "endpoint" in exporter:
                host = host_port(exporter["endpoint"])[0]
                if host != "0.0.0.0":
                    hosts.add(host)
    prometheus = load(COLLECTOR / "prometheus/prometheus.yml")
    for job in prometheus["scrape_configs"]:
        for static in job["static_configs"]:
            hosts |= {host_port(t)[0] for t in static["targets"]}
    datasources = load(COLLECTOR / "grafana/provisioning/datasources/datasources.yaml")
    hosts |= {host_port(d["url"])[0] for d in datasources["datasources"]}
    assert hosts >= {"jaeger", "tempo", "otel-collector", "prometheus"}
    assert hosts <= services, hosts - services


def test_tempo_is_behind_its_profile() -> None:
    services = compose()["services"]
    assert services["tempo"]["profiles"] == ["tempo"]
    assert all("profiles" not in s for n, s in services.items() if n != "tempo")


def test_prometheus_service_keeps_exemplars_and_reads_the_mounted_config() -> None:
    service = compose()["services"]["prometheus"]
    command = service["command"]
    assert "--enable-feature=exemplar-storage" in command
    config_flag = next(c for c in command if c.startswith("--config.file="))
    mounts = {target: host for host, target in volume_mounts(service)}
    assert mounts[config_flag.split("=", 1)[1]] == "./prometheus/prometheus.yml"
    assert published_ports(service)[9090] == 9090


def test_grafana_is_anonymous_admin_with_the_overview_as_home() -> None:
    service = compose()["services"]["grafana"]
    env = service["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Admin"
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true"
    mounts = {host: target for host, target in volume_mounts(service)}
    dashboards_target = mounts["../dashboards"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_target}/agent-overview.json"
    assert (ROOT / "dashboards/agent-overview.json").is_file()
    provider = load(COLLECTOR / "grafana/provisioning/dashboards/dashboards.yaml")
    assert provider["providers"][0]["options"]["path"] == dashboards_target
    assert provider["providers"][0]["type"] == "file"
    assert published_ports(service)[3000] == 3000


def test_lgtm_path_provisions_the_dashboards() -> None:
    service = load(COMPOSE_LGTM)["services"]["lgtm"]
    assert {3000, 4317, 4318} <= set(published_ports(service))
    mounts = {host: target for host, target in volume_mounts(service)}
    provider_target = mounts["./grafana/lgtm-dashboards.yaml"]
    assert provider_target.startswith("/otel-lgtm/grafana/conf/provisioning/dashboards/")
    provider = load(COLLECTOR / "grafana/lgtm-dashboards.yaml")
    assert provider["providers"][0]["options"]["path"] == mounts["../dashboards"]


def test_components_list_says_where_it_came_from() -> None:
    text = COMPONENTS.read_text()
    assert "manifest" in text and "REFERENCE.md" in text
    listed = components()
    assert str(listed["version"]) == "0.159.0"
    for kind, names in (("exporters", {"otlp_grpc", "otlp_http", "loadbalancing", "debug",
                                       "prometheus", "prometheus_remote_write"}),
                        ("connectors", {"span_metrics", "service_graph"}),
                        ("processors", {"memory_limiter", "batch", "transform", "attributes",
                                        "tail_sampling"})):
        assert names <= set(listed[kind]), kind
