"""The demo end to end: workload → bus → mirror → real OTLP export → receiver → terminal.

Without an endpoint it starts the embedded receiver in-process, so the demo shows a real
OTLP/gRPC round trip on a fresh machine. With one, it exports there and reports the trace
ids to look up in the backend.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from .. import semconv as sc
from ..bus import EventBus
from ..receiver.queries import RunRow, get_trace, list_runs
from ..receiver.render import format_duration_s, format_runs, format_trace
from ..receiver.web_url import DEFAULT_WEB_ADDR, run_link
from ..telemetry import Telemetry, configure
from ..telemetry.exporter_env import (
    OtlpTarget,
    Protocol,
    endpoint_setting,
    resolve_protocol,
    resolve_target,
)
from .workload import EventCounter, RunPlan, RunResult, plan_runs, run_workload

SERVICE_NAME: Final = "otel-agentbus-demo"
STORE_TIMEOUT_S: Final = 10.0
"""How long to wait for the receiver to hold every exported span of the demo's runs."""
DEFAULT_FLUSH_TIMEOUT_S: Final = 30.0
"""How long the demo waits at the end for the backend to acknowledge every span: longer
than the OTLP exporter's own 10 s export timeout, so that a dead backend's batches are
reported as failed rather than left unconfirmed."""


class SpanCounter(SpanProcessor):
    """Counts finished spans per trace, placeholders aside: what a backend must end up
    holding for each run (the receiver's ``span_count``)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or (span.attributes or {}).get(sc.SPAN_PENDING):
            return
        with self._lock:
            self._counts[format(context.trace_id, "032x")] += 1

    def count(self, trace_id: str | None) -> int:
        with self._lock:
            return self._counts[trace_id] if trace_id else 0


class Progress:
    """Run-by-run progress on stderr: a ``\\r`` counter on a terminal, else a line each."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.done: Counter[str] = Counter()

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run_done(self, result: RunResult) -> None:
        self.done[result.status] += 1
        finished = sum(self.done.values())
        if self.tty:
            detail = ", ".join(f"{n} {status}" for status, n in sorted(self.done.items()))
            self.stream.write(f"\r  runs finished: {finished}/{self.total} ({detail})  ")
            if finished == self.total:
                self.stream.write("\n")
            self.stream.flush()
            return
        plan = result.plan
        self.note(f"  [{finished}/{self.total}] {plan.run_id}  {plan.agent:<14}  "
                  f"{result.status:<9}  {result.events} events  "
                  f"{format_duration_s(result.duration_s)}")


@dataclass(frozen=True, slots=True)
class DemoRun:
    """One run as reported: from the receiver's database when there is one."""

    run_id: str
    agent: str
    status: str
    trace_id: str
    span_count: int
    duration_s: float | None
    start_ns: int
    span_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "agent": self.agent, "status": self.status,
                "trace_id": self.trace_id, "span_count": self.span_count,
                "duration_s": self.duration_s}

    def as_row(self) -> RunRow:
        return RunRow(run_id=self.run_id, agent=self.agent, status=self.status,
                      start_ns=self.start_ns, duration_s=self.duration_s,
                      span_count=self.span_count, trace_id=self.trace_id,
                      span_id=self.span_id, name=f"{sc.OP_INVOKE_AGENT} {self.agent}",
                      service_name=SERVICE_NAME)


@dataclass(slots=True)
class DemoReport:
    runs: list[DemoRun]
    endpoint: str
    db: Path | None
    events_published: int
    bus_dropped: int
    subscriber_total: int
    subscriber_families: dict[str, int]
    export: dict[str, int]
    stored: bool
    """Every run and every span reached the receiver (always True without one)."""
    missing: list[str] = field(default_factory=list)

    @property
    def spans_exported(self) -> int:
        return self.export["spans_exported"]

    @property
    def spans_failed(self) -> int:
        """The exporter said they failed, with an answer (refused, unreachable)."""
        return self.export["spans_export_failed"] - self.export["spans_export_timed_out"]

    @property
    def spans_lost(self) -> int:
        """Spans the backend will never have: the exporter said they failed, the full
        queue dropped them, or they were still queued when the bounded flush gave up (the
        process then exits with them). Spans sent but not yet acknowledged are not lost."""
        export = self.export
        return self.spans_failed + export["spans_dropped"] + export["spans_unsent"]

    @property
    def spans_unconfirmed(self) -> int:
        """Sent, not acknowledged: still in flight when the demo stopped waiting, or past
        the exporter's own timeout. A slow backend may store them all the same."""
        return self.export["spans_in_flight"] + self.export["spans_export_timed_out"]

    @property
    def ok(self) -> bool:
        return self.stored and self.spans_lost == 0

    def export_summary(self) -> dict[str, int]:
        export = self.export
        return {"spans_emitted": export["spans_accepted"], "exported": self.spans_exported,
                "failed": self.spans_failed, "dropped": export["spans_dropped"],
                "unsent": export["spans_unsent"], "unconfirmed": self.spans_unconfirmed,
                "lost": self.spans_lost}

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [run.to_dict() for run in self.runs],
                "db": str(self.db) if self.db is not None else None,
                "endpoint": self.endpoint,
                "events_published": self.events_published,
                "spans_exported": self.spans_exported,
                "export": self.export_summary()}


def _host_port(target: OtlpTarget) -> tuple[str, int]:
    """Host and port the exporter connects to; a missing port is the scheme's (gRPC: 443,
    what the gRPC client uses for a target without one)."""
    endpoint = target.endpoint
    try:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        default_port = 443 if target.tls else 80
        host, port = parts.hostname, parts.port or default_port
    except ValueError as exc:
        raise OSError(f"bad OTLP endpoint {endpoint!r} ({target.endpoint_source}): {exc}"
                      ) from None
    if not host:
        raise OSError(f"bad OTLP endpoint {endpoint!r} ({target.endpoint_source}): no host")
    return host, port


def check_reachable(target: OtlpTarget, timeout: float = 2.0) -> None:
    """Fail fast (``OSError``) when nothing listens at the endpoint, or when it does not
    speak TLS although the exporter will: the exporters would otherwise retry quietly and
    the run would be lost."""
    host, port = _host_port(target)
    try:
        connection = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise OSError(f"cannot reach the OTLP endpoint {target.endpoint} ({host}:{port}): "
                      f"{exc.strerror or exc}") from None
    with connection:
        if target.tls:
            _check_tls(connection, host, target, timeout)


def _check_tls(connection: socket.socket, host: str, target: OtlpTarget,
               timeout: float) -> None:
    # Only "does it answer TLS at all": certificates are the exporter's business.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if target.protocol == "grpc":
        context.set_alpn_protocols(["h2"])
    connection.settimeout(timeout)
    try:
        context.wrap_socket(connection, server_hostname=host).close()
    except (OSError, ssl.SSLError) as exc:
        plain = target.endpoint.split("://", 1)[-1]
        raise OSError(
            f"the OTLP endpoint {target.endpoint} ({target.endpoint_source}) does not answer "
            f"TLS ({exc.__class__.__name__}); for plaintext use http://{plain}"
            + (" or set OTEL_EXPORTER_OTLP_INSECURE=true" if "://" not in target.endpoint
               else "")) from None


def _check_base_endpoint(endpoint: str, protocol: Protocol) -> None:
    """``--otlp-endpoint`` is a base URL: over OTLP/HTTP, one that already ends with a
    signal path would get another (``/v1/traces/v1/traces``)."""
    if protocol == "grpc":
        return
    path = urlsplit(endpoint).path.rstrip("/")
    for signal in ("traces", "metrics", "logs"):
        if path.endswith(f"/v1/{signal}"):
            base = endpoint.rstrip("/")[: -len(f"/v1/{signal}")]
            raise ValueError(
                f"--otlp-endpoint {endpoint} is a base URL (OTLP/HTTP appends /v1/traces): "
                f"pass --otlp-endpoint {base}, or set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="
                f"{endpoint} (used as it is) and no --otlp-endpoint")


def temp_db_path() -> Path:
    """A fresh database file that outlives the demo, for ``otel-agentbus runs``."""
    fd, name = tempfile.mkstemp(prefix="otel-agentbus-demo-", suffix=".db")
    os.close(fd)
    return Path(name)


async def _drive(
    telemetry: Telemetry, plans: Sequence[RunPlan], progress: Progress
) -> tuple[list[RunResult], EventBus, EventCounter]:
    bus = telemetry.attach(EventBus())
    counter = EventCounter()
    bus.subscribe(counter, name="demo-counter", buffer=100_000)
    try:
        results = await run_workload(bus, plans, progress.run_done)
    finally:
        await bus.close()
    return results, bus, counter


def _wait_until_stored(
    db: Path, expected: dict[str, int], timeout: float
) -> tuple[dict[str, RunRow], list[str]]:
    """Poll the receiver until each trace has its finished run span and every span;
    returns the runs found and the trace ids still incomplete at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {row.trace_id: row for row in list_runs(db) if row.trace_id in expected}
        missing = [trace_id for trace_id, count in expected.items()
                   if trace_id not in rows or rows[trace_id].status == "running"
                   or rows[trace_id].span_count < count]
        if not missing or time.monotonic() >= deadline:
            return rows, missing
        time.sleep(0.05)


def run_demo(
    runs: int, seed: int, *, endpoint: str | None = None, db: str | os.PathLike[str] | None = None,
    progress: Progress | None = None, flush_timeout: float = DEFAULT_FLUSH_TIMEOUT_S,
) -> DemoReport:
    """Run the workload with telemetry on. It exports to ``endpoint`` (a base URL, as
    ``OTEL_EXPORTER_OTLP_ENDPOINT``), else where ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``
    say, else (or with ``db``) through the embedded receiver at ``db`` (a kept temporary
    file when ``None``). At the end it waits up to ``flush_timeout`` seconds for the
    backend to acknowledge every span."""
    from ..receiver.server import Receiver

    if flush_timeout <= 0:
        raise ValueError(f"flush timeout must be > 0 seconds, got {flush_timeout!r}")
    plans = plan_runs(runs, seed)
    progress = progress or Progress(len(plans))
    receiver: Receiver | None = None
    db_path: Path | None = None
    external = endpoint is not None or (db is None
                                        and endpoint_setting("traces", None) is not None)
    if not external:
        db_path = Path(db) if db is not None else temp_db_path()
        receiver = Receiver(db_path).start()
        shown = receiver.grpc_endpoint
        progress.note(f"otel-agentbus demo: {len(plans)} runs (seed {seed}) → embedded OTLP "
                      f"receiver, gRPC {receiver.grpc_address}, db {receiver.db_path}")
    else:
        if endpoint is not None:
            _check_base_endpoint(endpoint, resolve_protocol("traces", None))
        target = resolve_target("traces", endpoint=endpoint)
        check_reachable(target)
        shown = target.endpoint
        security = "TLS" if target.tls else "plaintext"
        progress.note(f"otel-agentbus demo: {len(plans)} runs (seed {seed}) → {shown} "
                      f"(OTLP {target.protocol}, {security}; from {target.endpoint_source})")
    try:
        telemetry = configure(
            service_name=SERVICE_NAME,
            exporter="otlp" if receiver is not None else None,
            endpoint=receiver.grpc_endpoint if receiver is not None else endpoint,
            protocol="grpc" if receiver is not None else None,
            metric_export_interval_ms=1000, shutdown_timeout=flush_timeout,
        )
        spans = SpanCounter()
        telemetry.tracer_provider.add_span_processor(spans)
        try:
            results, bus, counter = asyncio.run(_drive(telemetry, plans, progress))
        finally:
            telemetry.shutdown()  # flushes every span and metric, within flush_timeout
        expected = {r.trace_id: spans.count(r.trace_id) for r in results if r.trace_id}
        stored_rows: dict[str, RunRow] = {}
        missing: list[str] = []
        if receiver is not None and db_path is not None:
            stored_rows, missing = _wait_until_stored(db_path, expected, STORE_TIMEOUT_S)
        export = telemetry.export_stats()  # after the wait: answers that came late count
    finally:
        if receiver is not None:
            receiver.stop()
    demo_runs = [_demo_run(result, stored_rows.get(result.trace_id or ""), spans)
                 for result in results]
    stats = bus.stats()
    return DemoReport(
        runs=demo_runs, endpoint=shown, db=receiver.db_path if receiver else None,
        events_published=stats.published, bus_dropped=stats.dropped,
        subscriber_total=counter.total, subscriber_families=counter.by_family(),
        export=export, stored=not missing, missing=missing,
    )


def _demo_run(result: RunResult, row: RunRow | None, spans: SpanCounter) -> DemoRun:
    plan = result.plan
    if row is not None:
        return DemoRun(plan.run_id, plan.agent, row.status, row.trace_id, row.span_count,
                       row.duration_s, row.start_ns, row.span_id)
    return DemoRun(plan.run_id, plan.agent, result.status, result.trace_id or "",
                   spans.count(result.trace_id), result.duration_s, result.start_ns,
                   result.root_span_id or "")


# ---- text output -----------------------------------------------------------------


def showcase_run(report: DemoReport) -> DemoRun | None:
    """The run whose tree is printed: a failed one shows the most, else the first."""
    for run in report.runs:
        if run.status == "failed":
            return run
    return report.runs[0] if report.runs else None


def format_report(report: DemoReport) -> str:
    """The demo's stdout in text mode: runs table, one span tree, summary, next steps."""
    lines: list[str] = []
    table = format_runs([run.as_row() for run in report.runs])
    run = showcase_run(report)
    if report.db is not None:
        lines += [f"Runs stored by the embedded receiver ({report.db}), newest first:", "",
                  table]
        if run is not None and run.trace_id:
            tree = get_trace(report.db, run.trace_id)
            lines += ["", f"Span tree of run {run.run_id} ({run.agent}, {run.status}), "
                      f"trace id {run.trace_id}:", "", format_trace(tree)]
    else:
        lines += [f"Runs exported to {report.endpoint}, newest first; look the trace ids up "
                  "there:", "", table]
    families = ", ".join(f"{name} {n}" for name, n in report.subscriber_families.items())
    export = report.export
    lines += [
        "",
        f"events published: {report.events_published} (in-process subscriber handled "
        f"{report.subscriber_total}: {families}; bus drops {report.bus_dropped})",
        f"spans: {export['spans_accepted']} emitted, {report.spans_exported} exported, "
        f"{report.spans_failed} failed, {export['spans_dropped']} dropped, "
        f"{export['spans_unsent']} unsent, {report.spans_unconfirmed} unconfirmed, "
        f"{export['spans_force_ended']} force-ended by the mirror",
    ]
    if report.db is not None:
        cli = cli_command()
        db = shlex.quote(str(report.db))
        lines += ["", "Explore it again:", f"  {cli} runs --db {db}"]
        if run is not None:
            lines.append(f"  {cli} trace {run.run_id} --db {db}")
        page = run_link(f"http://{DEFAULT_WEB_ADDR}", run.run_id) if run is not None else (
            f"http://{DEFAULT_WEB_ADDR}/runs")
        lines += [f"  {cli} web --db {db}    # then open {page}",
                  "  (or run the demo with --serve to open it right away)"]
    return "\n".join(lines)


def cli_command() -> str:
    """How to call the CLI from this shell: ``otel-agentbus`` when ``PATH`` finds it, else
    the console script of this interpreter's environment (``.venv/bin/otel-agentbus``),
    else ``python -m otel_agentbus``."""
    if shutil.which("otel-agentbus") is not None:
        return "otel-agentbus"
    script = Path(sys.executable).parent / "otel-agentbus"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(_relative_if_below_cwd(script))
    return f"{shlex.quote(sys.executable)} -m otel_agentbus"


def _relative_if_below_cwd(path: Path) -> str:
    """``.venv/bin/x`` rather than the absolute path, when the shell is at the checkout."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
