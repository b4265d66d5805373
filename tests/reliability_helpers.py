"""Shared helpers of the reliability tests (tests/test_reliability_*.py).

Real processes: the embedded receiver as a subprocess (on a chosen port, so it can be
killed and restarted), agent workloads as child interpreters driven line by line
(``tests/reliability_child.py``), and an in-process OTLP/gRPC endpoint that records every
raw request, optionally answers slowly, and optionally forwards to the receiver.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from telemetry_helpers import REPO_ROOT, Receiver, child_env, start_receiver

CHILD = Path(__file__).with_name("reliability_child.py")
SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


# ------------------------------------------------------------------ the receiver process
def start_receiver_at(tmp: Path, *, grpc_port: int = 0, http_port: int = 0,
                      db: Path | None = None, extra: Sequence[str] = (),
                      env: dict[str, str] | None = None, umask: int = -1) -> Receiver:
    """``otel-agentbus receiver`` as a subprocess, on the given ports (0: free ones); a
    stderr file of its own per start (a test may restart it), 30 s to report ready."""
    return start_receiver(tmp, grpc_port=grpc_port, http_port=http_port, db=db, extra=extra,
                          env=env, umask=umask,
                          stderr_name=f"receiver-{time.monotonic_ns()}.stderr",
                          ready_timeout=30)


def kill9(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def db_counts(db: Path) -> dict[str, int]:
    """Rows per table, read through a separate connection (as the CLI does)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return {table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("spans", "metrics", "logs")}


def stored_bytes(db: Path) -> bytes:
    """Every byte the receiver stored: the database file and its -wal and -shm files."""
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"))
                    if p.exists())


# ------------------------------------------------------------------ child processes
@dataclass
class Child:
    """``python tests/reliability_child.py SCENARIO ...``, driven one line at a time.

    The child answers each command with one JSON line; ``call`` waits for it, bounded.
    """

    proc: subprocess.Popen[str]
    stderr_path: Path
    ready: dict[str, Any] = field(default_factory=dict)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"child gave no answer in {timeout}s\n{self.stderr()}")
            readable, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if not readable:
                continue
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=10)
                pytest.fail(f"child exited ({self.proc.returncode})\n{self.stderr()}")
            if line.startswith("{"):
                answer: dict[str, Any] = json.loads(line)
                return answer

    def call(self, command: str, timeout: float = 60) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text()[-4000:] if self.stderr_path.exists() else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@contextmanager
def child(tmp: Path, scenario: str, *args: str, env: dict[str, str] | None = None,
          ready_timeout: float = 30) -> Iterator[Child]:
    """Start the child, wait for its ready line, and kill it afterwards whatever happens."""
    stderr_path = tmp / f"child-{scenario}-{time.monotonic_ns()}.stderr"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), scenario, *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env or child_env(),
            cwd=REPO_ROOT, bufsize=1,
        )
    handle = Child(proc, stderr_path)
    try:
        handle.ready = handle._read(ready_timeout)
        yield handle
    finally:
        handle.kill()


# ------------------------------------------------------------------ a raw OTLP endpoint
@dataclass
class Recorded:
    service: str
    body: bytes
    at: float


class RawCollector:
    """An OTLP/gRPC endpoint in this process: records each request's raw bytes, waits
    ``delay`` seconds before answering, and forwards to ``upstream`` if one is given
    (so the receiver still stores what went over the wire)."""

    def __init__(self, *, delay: float = 0.0, upstream: str | None = None) -> None:
        self.delay = delay
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._upstream = grpc.insecure_channel(upstream) if upstream else None
        self._server = grpc.server(ThreadPoolExecutor(max_workers=8),
                                   options=[("grpc.max_receive_message_length", 64 << 20)])
        handlers = []
        for signal_name, service in SERVICES.items():
            handlers.append(grpc.method_handlers_generic_handler(service, {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._handler(signal_name, f"/{service}/Export"),
                    request_deserializer=None, response_serializer=None),
            }))
        self._server.add_generic_rpc_handlers(tuple(handlers))
        self.port = int(self._server.add_insecure_port("127.0.0.1:0"))
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handler(self, signal_name: str, method: str) -> Callable[[bytes, Any], bytes]:
        forward = (self._upstream.unary_unary(method, request_serializer=None,
                                              response_deserializer=None)
                   if self._upstream is not None else None)

        def export(body: bytes, context: Any) -> bytes:
            with self._lock:
                self.requests.append(Recorded(signal_name, bytes(body), time.monotonic()))
            if self.delay:
                self._stopping.wait(self.delay)
            if forward is not None:
                metadata = tuple((k, v) for k, v in context.invocation_metadata() or ()
                                 if k == "authorization")
                try:
                    answer: bytes = forward(body, timeout=30, metadata=metadata)
                except grpc.RpcError as error:
                    context.abort(error.code(), error.details() or "upstream failed")
                return answer
            return b""  # an empty Export*ServiceResponse
        return export

    def wire(self) -> bytes:
        with self._lock:
            return b"".join(r.body for r in self.requests)

    def spans_received(self) -> int:
        with self._lock:
            bodies = [r.body for r in self.requests if r.service == "traces"]
        total = 0
        for body in bodies:
            request = ExportTraceServiceRequest.FromString(body)
            total += sum(len(s.spans) for rs in request.resource_spans for s in rs.scope_spans)
        return total

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop(grace=None).wait(10)
        if self._upstream is not None:
            self._upstream.close()


def report(test: str, **figures: Any) -> None:
    """Append a test's figures (for docs/reliability.md) to $RELIABILITY_FIGURES, if set."""
    path = os.environ.get("RELIABILITY_FIGURES")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"test": test, **figures}) + "\n")
