"""The receiver subprocess under the faults of issue 17, over real loopback sockets:
a burst of 1,000 half-sent HTTP requests closed at once while a gRPC and an HTTP exporter
keep exporting (their stall is measured), compressed bodies built to cost CPU, a request
built to cost memory, and connections held at the cap.

Each test measures the receiver process itself (CPU time and peak RSS from /proc) and
fails past a bound well above what a healthy receiver needs and well below what the
faults cost before (issue 17: 19-40 s stalls, 9.4 s of CPU per body, +252 MB per request).
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from reliability_helpers import SERVICES, report, start_receiver_at, wait_until
from telemetry_helpers import Receiver, child_env, terminate

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")]

CAP = 256  # HTTPLimits.max_connections, the receiver's default
TICK = os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver_at(tmp_path_factory.mktemp("limits"))
    try:
        yield started
    finally:
        started.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{key} not in /proc/{pid}/status")


def http_port(receiver: Receiver) -> int:
    return int(receiver.ready["http"].rsplit(":", 1)[1])


def valid_request(seed: int) -> bytes:
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(20):
        scope.spans.append(Span(trace_id=seed.to_bytes(16, "big"),
                                span_id=(seed * 32 + i + 1).to_bytes(8, "big"),
                                name=f"span {i}", start_time_unix_nano=1, end_time_unix_nano=2))
    return bytes(request.SerializeToString())


def post(port: int, body: bytes, headers: dict[str, str] | None = None,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/v1/traces", body=body,
                     headers={"Content-Type": "application/x-protobuf", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


class Exporters:
    """A gRPC and an HTTP (keep-alive) exporter exporting in a loop; each export's
    latency is kept, so a stall shows as its longest one."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.stop = threading.Event()
        self.latencies: dict[str, list[float]] = {"grpc": [], "http": []}
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._grpc, daemon=True),
                        threading.Thread(target=self._http, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _timed(self, name: str, export: object, seed: int) -> None:
        started = time.monotonic()
        try:
            export(seed)  # type: ignore[operator]
        except Exception as exc:
            self.errors.append(f"{name}: {exc!r}")
        self.latencies[name].append(time.monotonic() - started)

    def _grpc(self) -> None:
        with grpc.insecure_channel(self.receiver.ready["grpc"]) as channel:
            call = channel.unary_unary(f"/{SERVICES['traces']}/Export",
                                       request_serializer=None, response_deserializer=None)
            seed = 10**6
            while not self.stop.is_set():
                seed += 1
                self._timed("grpc", lambda s: call(valid_request(s), timeout=60), seed)
                time.sleep(0.02)

    def _http(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", http_port(self.receiver), timeout=60)

        def export(seed: int) -> None:
            status, data = post(0, valid_request(seed), conn=conn)
            assert status == 200, (status, data[:200])

        seed = 2 * 10**6
        while not self.stop.is_set():
            seed += 1
            self._timed("http", export, seed)
            time.sleep(0.02)
        conn.close()

    def finish(self) -> dict[str, float]:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)
        assert not self.errors, self.errors[:5]
        assert all(self.latencies.values()), self.latencies
        return {name: max(values) for name, values in self.latencies.items()}


def test_disconnect_burst_does_not_stall_exporters(receiver: Receiver) -> None:
    port, pid = http_port(receiver), receiver.proc.pid
    exporters = Exporters(receiver)
    assert wait_until(lambda: all(len(v) >= 5 for v in exporters.latencies.values()), 30)
    stderr_before = sum(p.stat().st_size for p in receiver.db.parent.glob("*.stderr"))
    cpu_before = cpu_seconds(pid)
    sockets = []
    head = (b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 100000\r\n\r\n" + b"\0" * 500)
    for _ in range(1000):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head)
        sockets.append(sock)
    for sock in sockets:  # all at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        sock.close()
    time.sleep(2.0)  # exporters keep going through the aftermath
    burst_cpu = cpu_seconds(pid) - cpu_before
    stalls = exporters.finish()
    stderr = "".join(p.read_text() for p in receiver.db.parent.glob("*.stderr"))
    stderr_growth = len(stderr.encode()) - stderr_before
    report("disconnect_burst", grpc_stall_s=round(stalls["grpc"], 3),
           http_stall_s=round(stalls["http"], 3), receiver_cpu_s=round(burst_cpu, 2),
           stderr_bytes=stderr_growth)
    assert stalls["grpc"] < 3.0 and stalls["http"] < 3.0, stalls
    assert burst_cpu < 10.0, burst_cpu
    assert "Traceback" not in stderr and stderr_growth < 20_000, stderr[-3000:]
    assert post(port, valid_request(7))[0] == 200


@pytest.mark.parametrize("kind", ["members", "ratio"])
def test_pathological_bodies_cost_little_cpu(receiver: Receiver, kind: str) -> None:
    port, pid = http_port(receiver), receiver.proc.pid
    if kind == "members":  # 250,000 empty gzip members (5 MB)
        body = gzip.compress(b"", mtime=0) * 250_000
    else:  # 16 MiB of zeros in 16 KB: a ratio of about 1,000
        body = gzip.compress(b"\0" * (16 << 20), mtime=0)
    before = cpu_seconds(pid)
    status, data = post(port, body, {"Content-Encoding": "gzip"})
    spent = cpu_seconds(pid) - before
    report(f"pathological_body_{kind}", body_bytes=len(body), receiver_cpu_s=round(spent, 3))
    assert status == 413, (status, data[:200])
    assert spent < 1.0, spent


def test_pathological_request_memory(receiver: Receiver) -> None:
    """A span with 1,000,000 attributes (about 15 MB): refused while decoding, and the
    receiver's peak RSS grows by a small multiple of the body, not 17x."""
    port, pid = http_port(receiver), receiver.proc.pid
    span = Span(trace_id=b"\1" * 16, span_id=b"\2" * 8, name="huge")
    span.attributes.extend(KeyValue(key=f"{i:x}", value=AnyValue(int_value=i))
                           for i in range(1_000_000))
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.append(span)
    body = request.SerializeToString()
    peak_before = status_kb(pid, "VmHWM")
    status, data = post(port, body)
    peak_growth_mb = (status_kb(pid, "VmHWM") - peak_before) / 1024
    report("pathological_request_rss", body_mb=round(len(body) / 2**20, 1),
           peak_rss_growth_mb=round(peak_growth_mb, 1),
           rss_after_mb=round(status_kb(pid, "VmRSS") / 1024, 1))
    assert status == 413 and b"attributes" in data, (status, data[:200])
    assert peak_growth_mb < 6 * len(body) / 2**20, peak_growth_mb
    assert post(port, valid_request(8))[0] == 200


def test_connections_held_at_the_cap(receiver: Receiver) -> None:
    port = http_port(receiver)
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CAP)]
    try:
        time.sleep(0.5)
        started = time.monotonic()
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        answer = extra.recv(4096)
        refused_in = time.monotonic() - started
        extra.close()
        with grpc.insecure_channel(receiver.ready["grpc"]) as channel:
            call = channel.unary_unary(f"/{SERVICES['traces']}/Export",
                                       request_serializer=None, response_deserializer=None)
            call(valid_request(9), timeout=10)
        body = valid_request(10)
        held[0].sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: "
                        b"application/x-protobuf\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)
        served = held[0].recv(4096)
    finally:
        for sock in held:
            sock.close()
    report("connections_at_cap", held=CAP, refused_in_s=round(refused_in, 3))
    assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
    assert refused_in < 1.0, refused_in
    assert served.startswith(b"HTTP/1.1 200"), served[:200]
    # Below the cap again, new connections are served.
    assert wait_until(lambda: post(port, valid_request(11))[0] == 200, 10)


def test_low_descriptor_limit_caps_http_and_keeps_grpc(tmp_path: Path) -> None:
    """The receiver under ``ulimit -n 160``: its HTTP cap drops to (160 - 64) / 2 = 48, so
    200 clients holding connections cannot take the descriptors gRPC needs; the receiver
    does not spin meanwhile, and a new gRPC client is served."""
    limit = 160

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_agentbus.cli", "receiver", "--grpc", "127.0.0.1:0",
         "--http", "127.0.0.1:0", "--db", str(tmp_path / "fd.db")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=child_env(),
        preexec_fn=low_limit)
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], 30)
        assert readable, "receiver did not start"
        ready = json.loads(proc.stdout.readline())
        port = int(ready["http"].rsplit(":", 1)[1])
        cap = (limit - 64) // 2
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setblocking(False)
            held.append(sock)
        answered: set[int] = set()

        def poll() -> bool:
            for index, sock in enumerate(held):
                if index in answered:
                    continue
                try:
                    answer = sock.recv(64)
                except BlockingIOError:
                    continue  # held open (or not yet seen by a busy receiver)
                except ConnectionResetError:
                    answer = b"reset"
                assert answer.startswith(b"HTTP/1.1 503") or answer == b"reset", answer
                answered.add(index)
            return len(answered) >= 200 - cap

        wait_until(poll, 20, step=0.1)
        time.sleep(0.5)
        poll()  # none past the cap once it settled
        refused = len(answered)
        before = cpu_seconds(proc.pid)
        time.sleep(2.0)
        idle_cpu = cpu_seconds(proc.pid) - before
        with grpc.insecure_channel(ready["grpc"]) as channel:
            call = channel.unary_unary(f"/{SERVICES['traces']}/Export",
                                       request_serializer=None, response_deserializer=None)
            call(valid_request(12), timeout=10)
        report("low_descriptor_limit", nofile=limit, held=200 - refused, refused=refused,
               idle_cpu_s=round(idle_cpu, 3))
        assert 200 - refused == cap, refused
        assert idle_cpu < 0.5, idle_cpu
    finally:
        for sock in held:
            sock.close()
        terminate(proc)
        if proc.stdout is not None:
            proc.stdout.close()
