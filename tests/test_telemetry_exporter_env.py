"""``configure()`` and the ``OTEL_*`` exporter variables: per-signal exporters, endpoints,
headers, protocols and TLS as the OTLP exporter specification says, read back from what
``configure()`` built, and real exports into the embedded receiver."""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from telemetry_helpers import forget, fresh_global_tracer_provider

from otel_agentbus import Event, EventBus, Scope
from otel_agentbus.receiver.queries import list_runs
from otel_agentbus.receiver.server import Receiver
from otel_agentbus.telemetry import ConfigurationError, Telemetry, configure
from otel_agentbus.telemetry import config as config_module

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


class Owned:
    def __init__(self) -> None:
        self.made: list[Telemetry] = []

    def __call__(self, **options: Any) -> Telemetry:
        options.setdefault("signal_handlers", False)
        options.setdefault("metric_export_interval_ms", 60_000)
        telemetry = configure(**options)
        forget(telemetry)
        self.made.append(telemetry)
        return telemetry


@pytest.fixture
def owned() -> Iterator[Owned]:
    factory = Owned()
    with fresh_global_tracer_provider():
        yield factory
        for telemetry in factory.made:
            telemetry.shutdown(timeout=0.5)


def _set(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _target(telemetry: Telemetry, signal: str) -> tuple[str, str, bool, dict[str, str]] | None:
    export = telemetry.exports[signal]
    if export.otlp is None:
        return None
    target = export.otlp
    return target.protocol, target.endpoint, target.insecure, target.headers


# ====================================================================== endpoints
HTTP = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}


@pytest.mark.parametrize(
    ("env", "args", "traces", "metrics"),
    [
        # The generic endpoint is a base: OTLP/HTTP appends the signal's path.
        ({**HTTP, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/mycollector/"}, {},
         "http://c:4318/mycollector/v1/traces", "http://c:4318/mycollector/v1/metrics"),
        ({**HTTP, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, {},
         "http://c:4318/v1/traces", "http://c:4318/v1/metrics"),
        # A per-signal endpoint is used as it is, and only for its signal.
        ({**HTTP, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"}, {},
         "http://c:4318", None),
        ({**HTTP, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
          "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://m.example.com/v1/metrics/"}, {},
         "http://c:4318/v1/traces", "https://m.example.com/v1/metrics/"),
        ({**HTTP, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:6006/v1/traces"}, {},
         "http://t:6006/v1/traces", None),
        # The argument is the code form of OTEL_EXPORTER_OTLP_ENDPOINT and wins over both.
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://env:1/x"},
         {"endpoint": "http://arg:4318", "protocol": "http/protobuf"},
         "http://arg:4318/v1/traces", "http://arg:4318/v1/metrics"),
        # gRPC: the endpoint is a target, never given a path.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, {}, "http://c:4317", "http://c:4317"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4317",
          "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, {}, "http://t:4317", "http://c:4317"),
        # An empty value is the same as unset.
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
         {}, "http://c:4317", "http://c:4317"),
    ],
)
def test_endpoint_per_signal(owned: Owned, monkeypatch: pytest.MonkeyPatch,
                             env: dict[str, str], args: dict[str, Any], traces: str,
                             metrics: str | None) -> None:
    _set(monkeypatch, env)
    telemetry = owned(**args)
    traces_target = _target(telemetry, "traces")
    assert traces_target is not None and traces_target[1] == traces
    metrics_target = _target(telemetry, "metrics")
    assert (metrics_target[1] if metrics_target else None) == metrics
    if metrics is None:  # no endpoint for metrics: nothing exported, no reader
        assert telemetry.exports["metrics"].exporters == ()
        assert telemetry.meter_provider is None


def test_per_signal_protocol(owned: Owned, monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                       "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "HTTP/protobuf"})
    telemetry = owned(logs=True)
    assert _target(telemetry, "traces") == ("http/protobuf", "http://c:4317/v1/traces",
                                            False, {})
    assert _target(telemetry, "metrics") == ("grpc", "http://c:4317", True, {})
    assert _target(telemetry, "logs") == ("grpc", "http://c:4317", True, {})


def test_headers_per_signal_override_the_generic_ones(owned: Owned,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
                       "OTEL_EXPORTER_OTLP_HEADERS": "Api-Key=generic, x-team=a%20b",
                       "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "api-key=metrics"})
    telemetry = owned()
    assert _target(telemetry, "traces") == ("grpc", "http://c:4317", True,
                                            {"api-key": "generic", "x-team": "a b"})
    assert _target(telemetry, "metrics") == ("grpc", "http://c:4317", True,
                                             {"api-key": "metrics"})
    # The argument replaces both.
    assert _target(owned(headers={"k": "v"}), "metrics") == ("grpc", "http://c:4317", True,
                                                             {"k": "v"})


# ====================================================================== TLS for gRPC
@pytest.mark.parametrize(
    ("endpoint", "env", "insecure"),
    [
        ("http://c:4317", {}, True),
        ("https://c:4317", {}, False),
        # The scheme decides over the insecure setting.
        ("http://c:4317", {"OTEL_EXPORTER_OTLP_INSECURE": "false"}, True),
        ("https://c:4317", {"OTEL_EXPORTER_OTLP_INSECURE": "true"}, False),
        # Without a scheme the setting decides, and TLS is the default.
        ("c:4317", {}, False),
        ("c:4317", {"OTEL_EXPORTER_OTLP_INSECURE": "TRUE"}, True),
        ("c:4317", {"OTEL_EXPORTER_OTLP_INSECURE": "yes"}, False),  # only "true" is true
        ("c:4317", {"OTEL_EXPORTER_OTLP_INSECURE": "false",
                    "OTEL_EXPORTER_OTLP_TRACES_INSECURE": "true"}, True),
    ],
)
@pytest.mark.parametrize("given_as", ["variable", "argument"])
def test_grpc_tls_the_same_for_the_variable_and_the_argument(
    owned: Owned, monkeypatch: pytest.MonkeyPatch, endpoint: str, env: dict[str, str],
    insecure: bool, given_as: str,
) -> None:
    _set(monkeypatch, env)
    if given_as == "variable":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        telemetry = owned(metrics_enabled=False)
    else:
        telemetry = owned(metrics_enabled=False, endpoint=endpoint)
    assert _target(telemetry, "traces") == ("grpc", endpoint, insecure, {})


def test_schemeless_grpc_endpoint_warns_once_that_it_uses_tls(
    owned: Owned, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4999")
    with caplog.at_level(logging.WARNING, logger="otel_agentbus.telemetry"):
        owned()
        owned()
    warnings = [r.getMessage() for r in caplog.records if "has no scheme" in r.getMessage()]
    assert len(warnings) == 1
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in warnings[0]
    assert "http://127.0.0.1:4999" in warnings[0]


def test_the_argument_insecure_is_the_code_form_of_the_variable(owned: Owned) -> None:
    telemetry = owned(metrics_enabled=False, endpoint="127.0.0.1:4999", insecure=True)
    assert _target(telemetry, "traces") == ("grpc", "127.0.0.1:4999", True, {})


# ====================================================================== exporter selection
@pytest.mark.parametrize(
    ("env", "args", "traces", "metrics", "logs"),
    [
        ({}, {}, (), (), ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, {},
         ("otlp",), ("otlp",), ("otlp",)),
        # Turning metrics and logs off for a backend that takes traces only.
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_METRICS_EXPORTER": "none",
          "OTEL_LOGS_EXPORTER": "None"}, {}, ("otlp",), (), ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_METRICS_EXPORTER": "console"},
         {}, ("otlp",), ("console",), ("otlp",)),
        # Metrics and logs follow an explicit traces choice unless told otherwise.
        ({"OTEL_TRACES_EXPORTER": "console"}, {}, ("console",), ("console",), ("console",)),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_LOGS_EXPORTER": "none"}, {},
         ("console",), ("console",), ()),
        ({"OTEL_TRACES_EXPORTER": "otlp, console,otlp"}, {},
         ("otlp", "console"), ("otlp", "console"), ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "console"}, {"exporter": "none"}, (), (), ()),
        ({"OTEL_METRICS_EXPORTER": "console"}, {"metrics_exporter": "none",
                                                "logs_exporter": "console"},
         (), (), ("console",)),
    ],
)
def test_exporters_per_signal(owned: Owned, monkeypatch: pytest.MonkeyPatch,
                              env: dict[str, str], args: dict[str, Any],
                              traces: tuple[str, ...], metrics: tuple[str, ...],
                              logs: tuple[str, ...]) -> None:
    _set(monkeypatch, env)
    telemetry = owned(**args)
    assert telemetry.exports["traces"].exporters == traces
    assert telemetry.exports["metrics"].exporters == metrics
    assert telemetry.exports["logs"].exporters == logs
    assert (telemetry.exporter is not None) == bool(traces)
    assert (telemetry.meter_provider is not None) == bool(metrics)
    assert telemetry.logger_provider is None  # logs only with logs=True


def test_several_span_exporters_each_get_the_spans(owned: Owned,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console,otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    telemetry = owned(metrics_enabled=False)
    _counted, console = telemetry.tracer_provider._active_span_processor._span_processors
    assert isinstance(console.span_exporter, ConsoleSpanExporter)
    console.span_exporter.out = out = io.StringIO()
    with telemetry.tracer_provider.get_tracer("t").start_as_current_span("one-span"):
        pass
    console.force_flush(5000)
    assert '"name": "one-span"' in out.getvalue()
    # The OTLP one is the exporter the accounting follows; it was handed the span too.
    assert telemetry.exporter is not None
    assert type(telemetry.exporter.inner).__name__ == "OTLPSpanExporter"
    assert telemetry.export_stats()["spans_accepted"] == 1


# ====================================================================== refusals
@pytest.mark.parametrize(
    ("env", "args", "names"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
          "OTEL_EXPORTER_OTLP_ENDPOINT": "127.0.0.1:4318"}, {},
         r"OTEL_EXPORTER_OTLP_ENDPOINT='127.0.0.1:4318' has no scheme.*http://127.0.0.1:4318"),
        ({}, {"endpoint": "127.0.0.1:4318", "protocol": "http/protobuf"},
         r"endpoint='127.0.0.1:4318' has no scheme.*http://127.0.0.1:4318"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "ftp://c/v1/traces"}, {},
         "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.*http:// or https://"),
        ({"OTEL_METRICS_EXPORTER": "prometheus"}, {}, "OTEL_METRICS_EXPORTER"),
        ({"OTEL_LOGS_EXPORTER": "none,console"}, {}, "OTEL_LOGS_EXPORTER.*'none' cannot"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
          "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json"}, {}, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
          "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer secret-token,broken"}, {},
         "OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not key=value"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_them(
    owned: Owned, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
    args: dict[str, Any], names: str,
) -> None:
    _set(monkeypatch, env)
    with pytest.raises(ConfigurationError, match=names) as raised:
        owned(**args)
    assert "secret-token" not in str(raised.value)  # a header's value is never echoed
    assert "\n" not in str(raised.value)


# ====================================================================== nothing exported
def test_no_exporter_at_all_is_logged_once(owned: Owned, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(config_module, "_said_nothing_exported", False)
    with caplog.at_level(logging.INFO, logger="otel_agentbus.telemetry"):
        owned()
        owned()
    said = [r for r in caplog.records if "not be exported" in r.getMessage()]
    assert len(said) == 1
    assert said[0].levelno == logging.WARNING
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in said[0].getMessage()


def test_exporter_none_on_purpose_is_only_noted(owned: Owned, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(config_module, "_said_nothing_exported", False)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    with caplog.at_level(logging.INFO, logger="otel_agentbus.telemetry"):
        owned()
    (said,) = [r for r in caplog.records if "not exported" in r.getMessage()]
    assert said.levelno == logging.INFO
    assert "OTEL_TRACES_EXPORTER" in said.getMessage()


# ====================================================================== real exports
@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "r.db") as running:
        yield running


async def _one_run(telemetry: Telemetry, run_id: str) -> None:
    bus = telemetry.attach(EventBus())
    scope = Scope(run_id=run_id, agent="a")
    await bus.publish(Event("agent.run.started", scope=scope))
    await bus.publish(Event("agent.run.completed", scope=scope))
    await bus.close()


def _stored_runs(receiver: Receiver, timeout: float = 5.0) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        runs = {row.run_id for row in list_runs(receiver.db_path) if row.status != "running"}
        if runs or time.monotonic() > deadline:
            return runs
        time.sleep(0.05)


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                                      "OTEL_EXPORTER_OTLP_ENDPOINT"])
async def test_http_endpoints_reach_the_receiver(owned: Owned, monkeypatch: pytest.MonkeyPatch,
                                                 receiver: Receiver, variable: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    url = receiver.http_endpoint + ("/v1/traces" if variable.endswith("TRACES_ENDPOINT") else "")
    monkeypatch.setenv(variable, url)
    telemetry = owned(metrics_enabled=False)
    await _one_run(telemetry, "http-run")
    assert telemetry.force_flush(10)
    assert _stored_runs(receiver) == {"http-run"}
    stats = telemetry.export_stats()
    assert stats["spans_exported"] == stats["spans_accepted"] > 0


async def test_a_per_signal_url_gets_no_path_appended(owned: Owned,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      receiver: Receiver) -> None:
    # As it is: the receiver's root is not an OTLP path, so the export fails (404).
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.http_endpoint)
    telemetry = owned(metrics_enabled=False)
    await _one_run(telemetry, "lost-run")
    telemetry.force_flush(10)
    stats = telemetry.export_stats()
    assert stats["spans_export_failed"] == stats["spans_accepted"] > 0
    assert _stored_runs(receiver, timeout=0.5) == set()


@pytest.mark.parametrize("given_as", ["variable", "argument"])
async def test_schemeless_grpc_endpoint_with_insecure_reaches_the_receiver(
    owned: Owned, monkeypatch: pytest.MonkeyPatch, receiver: Receiver, given_as: str,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    if given_as == "variable":
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.grpc_address)
        telemetry = owned(metrics_enabled=False)
    else:
        telemetry = owned(metrics_enabled=False, endpoint=receiver.grpc_address)
    await _one_run(telemetry, f"grpc-{given_as}")
    assert telemetry.force_flush(10)
    assert _stored_runs(receiver) == {f"grpc-{given_as}"}


def test_console_span_exporter_by_name(owned: Owned, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "CONSOLE")
    telemetry = owned(metrics_enabled=False)
    assert telemetry.exporter is not None
    assert isinstance(telemetry.exporter.inner, ConsoleSpanExporter)


def test_header_values_stay_out_of_the_handles_repr(owned: Owned,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cr3t")
    telemetry = owned(metrics_enabled=False)
    assert _target(telemetry, "traces") == ("grpc", "http://c:4317", True,
                                            {"authorization": "Bearer s3cr3t"})
    assert "s3cr3t" not in repr(telemetry)


def test_a_base_endpoint_ending_in_a_signal_path_is_kept_and_warned_about(
    owned: Owned, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The specification says to append; the warning names the variable that takes a URL
    # as it is.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:6006/v1/traces")
    with caplog.at_level(logging.WARNING, logger="otel_agentbus.telemetry"):
        telemetry = owned(metrics_enabled=False)
    assert _target(telemetry, "traces") == ("http/protobuf", "http://c:6006/v1/traces/v1/traces",
                                            False, {})
    assert any("already ends with /v1/traces" in r.getMessage()
               and "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in r.getMessage()
               for r in caplog.records)
