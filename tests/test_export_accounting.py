"""Export accounting that is exact: what ``export_stats()`` and ``demo --json`` call lost is
what the backend lacks, and a backend slow to acknowledge loses nothing.

The demo runs as a real subprocess against real gRPC receivers (the embedded receiver's
server and store, with an ingest that is slow to answer or refuses some requests) and
the embedded receiver itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from telemetry_helpers import child_env, forget, free_port, fresh_global_tracer_provider

from otel_agentbus import Event, EventBus, Scope
from otel_agentbus.receiver.grpc_server import create_grpc_server
from otel_agentbus.receiver.ingest import Ingest, Signal
from otel_agentbus.receiver.queries import list_runs
from otel_agentbus.receiver.server import Receiver
from otel_agentbus.receiver.store import Store
from otel_agentbus.telemetry import Telemetry, configure
from otel_agentbus.telemetry.config import _span_exporter
from otel_agentbus.telemetry.exporter_env import resolve_target
from otel_agentbus.telemetry.otlp import _EncodedTraceServiceStub

pytestmark = pytest.mark.timeout(90)

SUBPROCESS_TIMEOUT = 60


# ====================================================================== in-process
class _HeldExporter(SpanExporter):
    """A backend that holds each export until released, then says it failed or not."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.release.wait(30)
        return SpanExportResult.FAILURE if self.fail else SpanExportResult.SUCCESS


@pytest.fixture
def held() -> Iterator[_HeldExporter]:
    exporter = _HeldExporter()
    yield exporter
    exporter.release.set()


@pytest.fixture
def made() -> Iterator[list[Telemetry]]:
    telemetries: list[Telemetry] = []
    with fresh_global_tracer_provider():
        yield telemetries
        for telemetry in telemetries:
            telemetry.shutdown(timeout=1)


async def _publish_run(bus: EventBus, run_id: str) -> None:
    scope = Scope(run_id=run_id, agent="a")
    await bus.publish(Event("agent.run.started", scope=scope))
    await bus.publish(Event("agent.run.completed", scope=scope))


def _stats_once_answered(telemetry: Telemetry, timeout: float = 10.0) -> dict[str, int]:
    """export_stats() once no batch is in flight (or at the deadline)."""
    deadline = time.monotonic() + timeout
    while telemetry.export_stats()["spans_in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return telemetry.export_stats()


def _balanced(stats: dict[str, int]) -> bool:
    return stats["spans_accepted"] == (stats["spans_exported"] + stats["spans_export_failed"]
                                       + stats["spans_dropped"] + stats["spans_in_flight"]
                                       + stats["spans_unsent"])


async def test_in_flight_is_not_lost_and_unsent_is(made: list[Telemetry],
                                                   held: _HeldExporter) -> None:
    telemetry = configure(span_exporter=held, metrics_enabled=False, signal_handlers=False,
                          pending_spans=False)
    forget(telemetry)
    made.append(telemetry)
    bus = telemetry.attach(EventBus())
    await _publish_run(bus, "first")
    # Hand the batch over (the SDK may export on the flushing thread): it is held.
    threading.Thread(target=telemetry.tracer_provider.force_flush, daemon=True).start()
    assert held.entered.wait(10)
    stats = telemetry.export_stats()
    assert stats["spans_in_flight"] == stats["spans_accepted"] == 1
    assert stats["spans_unsent"] == stats["spans_export_failed"] == 0
    # More spans while the backend holds the first batch; shutdown gives up waiting.
    await _publish_run(bus, "second")
    await _publish_run(bus, "third")
    await bus.close()
    assert telemetry.shutdown(timeout=0.5) is False
    stats = telemetry.export_stats()
    assert stats["spans_in_flight"] == 1  # sent: the backend may still store it
    assert stats["spans_unsent"] == 2  # never left the process
    assert _balanced(stats)
    # The held batch is answered late: it counts as exported, and the rest stays unsent.
    held.release.set()
    stats = await asyncio.to_thread(_stats_once_answered, telemetry)
    assert (stats["spans_exported"], stats["spans_in_flight"], stats["spans_unsent"]) == (1, 0, 2)
    assert _balanced(stats)


async def test_a_failed_answer_is_counted_failed(made: list[Telemetry],
                                                 held: _HeldExporter) -> None:
    held.fail = True
    held.release.set()
    telemetry = configure(span_exporter=held, metrics_enabled=False, signal_handlers=False)
    forget(telemetry)
    made.append(telemetry)
    bus = telemetry.attach(EventBus())
    await _publish_run(bus, "r")
    await bus.close()
    assert telemetry.shutdown(timeout=5)
    stats = telemetry.export_stats()
    assert stats["spans_export_failed"] == stats["spans_accepted"] == 2  # pending + run
    assert stats["spans_unsent"] == stats["spans_in_flight"] == 0
    assert _balanced(stats)


# ====================================================================== real receivers
class _ScriptedIngest(Ingest):
    """The embedded receiver's ingest, answering trace exports late (``delay``) or
    refusing every ``fail_every``-th one (INTERNAL: the exporter does not retry it)."""

    def __init__(self, store: Store, *, delay: float = 0.0, fail_every: int = 0) -> None:
        super().__init__(store)
        self.delay = delay
        self.fail_every = fail_every
        self.trace_requests = 0
        self._requests_lock = threading.Lock()

    def export_protobuf(self, signal: Signal, data: bytes) -> Message:
        if signal is Signal.TRACES:
            with self._requests_lock:
                self.trace_requests += 1
                number = self.trace_requests
            if self.fail_every and number % self.fail_every == 0:
                raise RuntimeError("refused by the test backend")
            time.sleep(self.delay)
        return super().export_protobuf(signal, data)


class _Backend:
    def __init__(self, ingest: _ScriptedIngest, server: Any, port: int) -> None:
        self.ingest = ingest
        self.server = server
        self.endpoint = f"http://127.0.0.1:{port}"

    def spans_stored(self) -> int:
        return self.ingest.stats().spans

    def wait_for_spans(self, count: int, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.spans_stored() < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.spans_stored()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Callable[..., _Backend]]:
    started: list[tuple[Any, Store]] = []

    def start(**script: Any) -> _Backend:
        store = Store(tmp_path / f"backend{len(started)}.db")
        ingest = _ScriptedIngest(store, **script)
        server, port = create_grpc_server("127.0.0.1:0", ingest, max_body=16 << 20)
        server.start()
        started.append((server, store))
        return _Backend(ingest, server, port)

    yield start
    for server, store in started:
        server.stop(5).wait(10)  # lets a held request finish
        store.close()


def _demo(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_agentbus.cli", "demo", "--runs", "3", *args],
        capture_output=True, text=True, env=child_env(**env), timeout=SUBPROCESS_TIMEOUT,
    )


def _report(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_slow_backend_loses_nothing_and_the_demo_succeeds(
    backend: Callable[..., _Backend],
) -> None:
    slow = backend(delay=4.0)
    done = _demo("--otlp-endpoint", slow.endpoint, "--flush-timeout", "1", "--json")
    assert done.returncode == 0, done.stderr
    export = _report(done)["export"]
    assert export["lost"] == export["failed"] == export["dropped"] == export["unsent"] == 0
    assert export["unconfirmed"] == export["spans_emitted"] > 0
    assert "not acknowledged (within 1s" in done.stderr
    assert "spans lost" not in done.stderr
    # Every span the demo left unconfirmed reaches the backend.
    assert slow.wait_for_spans(export["spans_emitted"]) == export["spans_emitted"]


def test_backend_slower_than_the_exporter_timeout_is_unconfirmed_not_lost(
    backend: Callable[..., _Backend],
) -> None:
    # The exporter gives up on each request after 1 s (DEADLINE_EXCEEDED) and reports a
    # failure; the backend stores the request later all the same.
    probe = _span_exporter("otlp", resolve_target("traces", endpoint="http://127.0.0.1:9"))
    ours = type(getattr(probe, "_client", None)) is _EncodedTraceServiceStub
    probe.shutdown()
    if not ours:
        pytest.skip("the gRPC exporter keeps its own stub here (see sdk_internals.fast_paths)")
    slow = backend(delay=3.0)
    done = _demo("--otlp-endpoint", slow.endpoint, "--json",
                 OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="1")
    assert done.returncode == 0, done.stderr
    export = _report(done)["export"]
    assert export["unconfirmed"] == export["spans_emitted"] > 0
    assert export["lost"] == export["failed"] == export["exported"] == 0
    assert slow.wait_for_spans(export["spans_emitted"]) >= export["spans_emitted"]


def test_slow_backend_within_the_flush_timeout_is_all_exported(
    backend: Callable[..., _Backend],
) -> None:
    slow = backend(delay=1.5)
    done = _demo("--otlp-endpoint", slow.endpoint, "--flush-timeout", "20", "--json")
    assert done.returncode == 0, done.stderr
    export = _report(done)["export"]
    assert export["exported"] == export["spans_emitted"] == slow.spans_stored() > 0
    assert export["unconfirmed"] == export["lost"] == 0


@pytest.mark.parametrize("fail_every", [2, 1], ids=["every-other-request", "dead"])
def test_the_loss_reported_is_what_the_backend_lacks(
    backend: Callable[..., _Backend], fail_every: int,
) -> None:
    refusing = backend(fail_every=fail_every)
    done = _demo("--otlp-endpoint", refusing.endpoint, "--json",
                 OTEL_BSP_MAX_EXPORT_BATCH_SIZE="8")  # several requests
    assert done.returncode == 1, done.stderr
    export = _report(done)["export"]
    assert refusing.ingest.trace_requests >= 2
    lacking = export["spans_emitted"] - refusing.spans_stored()
    assert lacking > 0
    assert export["lost"] == export["failed"] == lacking
    assert export["exported"] == refusing.spans_stored()
    assert export["unconfirmed"] == export["unsent"] == export["dropped"] == 0
    assert f"{lacking} spans lost exporting to {refusing.endpoint}" in done.stderr


def test_nothing_listening_fails_fast_in_one_line() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    done = _demo("--otlp-endpoint", endpoint)
    assert done.returncode == 1
    (line,) = [line for line in done.stderr.splitlines() if "error" in line]
    assert f"cannot reach the OTLP endpoint {endpoint}" in line


# ====================================================================== endpoints, demo
@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "r.db") as running:
        yield running


def _stored_run_ids(receiver: Receiver) -> set[str]:
    return {row.run_id for row in list_runs(receiver.db_path)}


def test_per_signal_traces_endpoint_alone_is_where_the_demo_exports(
    receiver: Receiver,
) -> None:
    url = f"{receiver.http_endpoint}/v1/traces"
    done = _demo("--json", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=url,
                 OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf")
    assert done.returncode == 0, done.stderr
    report = _report(done)
    assert report["db"] is None  # not the demo's own receiver
    assert report["endpoint"] == url
    assert _stored_run_ids(receiver) == {run["run_id"] for run in report["runs"]}
    # No endpoint applies to metrics: none are sent anywhere.
    assert receiver.stats().metric_points == 0


def test_a_base_endpoint_with_a_signal_path_is_refused_with_the_fix(
    receiver: Receiver,
) -> None:
    url = f"{receiver.http_endpoint}/v1/traces"
    done = _demo("--otlp-endpoint", url, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert f"--otlp-endpoint {url} is a base URL" in line
    assert f"--otlp-endpoint {receiver.http_endpoint}," in line
    assert f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT={url}" in line
    assert _stored_run_ids(receiver) == set()


def test_the_base_endpoint_gets_the_signal_paths(receiver: Receiver) -> None:
    done = _demo("--otlp-endpoint", receiver.http_endpoint, "--json",
                 OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    assert done.returncode == 0, done.stderr
    assert _stored_run_ids(receiver) == {run["run_id"] for run in _report(done)["runs"]}


@pytest.mark.parametrize("given_as", ["variable", "argument"])
def test_schemeless_grpc_endpoint_is_refused_the_same_way(receiver: Receiver,
                                                          given_as: str) -> None:
    address = receiver.grpc_address
    if given_as == "variable":
        done = _demo(OTEL_EXPORTER_OTLP_ENDPOINT=address)
        source = "OTEL_EXPORTER_OTLP_ENDPOINT"
    else:
        done = _demo("--otlp-endpoint", address)
        source = "endpoint="
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert f"the OTLP endpoint {address} ({source}) does not answer TLS" in line
    assert f"http://{address} or set OTEL_EXPORTER_OTLP_INSECURE=true" in line
    assert _stored_run_ids(receiver) == set()


@pytest.mark.parametrize("given_as", ["variable", "argument"])
def test_schemeless_grpc_endpoint_with_insecure_works(receiver: Receiver,
                                                      given_as: str) -> None:
    address = receiver.grpc_address
    if given_as == "variable":
        done = _demo("--json", OTEL_EXPORTER_OTLP_ENDPOINT=address,
                     OTEL_EXPORTER_OTLP_INSECURE="true")
    else:
        done = _demo("--json", "--otlp-endpoint", address, OTEL_EXPORTER_OTLP_INSECURE="true")
    assert done.returncode == 0, done.stderr
    report = _report(done)
    assert _stored_run_ids(receiver) == {run["run_id"] for run in report["runs"]}
    assert report["export"]["exported"] == report["export"]["spans_emitted"]


@pytest.mark.parametrize("metrics_off", [False, True])
def test_metrics_can_be_turned_off_for_a_traces_only_backend(receiver: Receiver,
                                                             metrics_off: bool) -> None:
    env = {"OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"} if metrics_off else {}
    done = _demo("--otlp-endpoint", receiver.grpc_endpoint, "--json", **env)
    assert done.returncode == 0, done.stderr
    assert receiver.stats().spans > 0
    assert (receiver.stats().metric_points == 0) is metrics_off


def test_embedded_receiver_report_carries_the_export_figures(tmp_path: Path) -> None:
    done = _demo("--json", "--db", str(tmp_path / "demo.db"))
    assert done.returncode == 0, done.stderr
    report = _report(done)
    export = report["export"]
    assert export["exported"] == export["spans_emitted"] == report["spans_exported"] > 0
    assert export["failed"] == export["dropped"] == export["unsent"] == export["lost"] == 0
    assert export["unconfirmed"] == 0


def test_text_report_says_what_became_of_the_spans(tmp_path: Path) -> None:
    done = _demo("--db", str(tmp_path / "demo.db"))
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("spans: ")]
    emitted = int(line.split()[1])
    assert emitted > 0
    assert line.startswith(f"spans: {emitted} emitted, {emitted} exported, 0 failed, "
                           "0 dropped, 0 unsent, 0 unconfirmed, ")
