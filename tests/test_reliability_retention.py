"""A receiver left running for weeks: retention by age and size, and a full disk.

The pruner deletes whole traces (with their log records) past the retention period or
when the database nears its cap; a request that finds the database full anyway is refused
with HTTP 507 / gRPC RESOURCE_EXHAUSTED and counted, nothing stored before is damaged, and
ingest resumes by itself once there is room. A full disk is simulated with SQLite's
``max_page_count``. Timeouts are hang guards only.
"""

from __future__ import annotations

import http.client
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from google.rpc.status_pb2 import Status as RpcStatus  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from reliability_helpers import SERVICES, report, start_receiver_at, wait_until

from otel_agentbus.cli import main
from otel_agentbus.receiver import Receiver
from otel_agentbus.receiver.retention import (
    MIN_DB_SIZE,
    RetentionPolicy,
    parse_duration,
    parse_size,
    prune,
    used_bytes,
)
from otel_agentbus.receiver.store import SCHEMA_VERSION, Store

pytestmark = pytest.mark.timeout(180)

SPANS_PER_TRACE = 10
DAY_MS = 86_400_000


def trace_request(seed: int, padding: int = 2_000) -> bytes:
    """One whole trace of ten spans, each with ``padding`` bytes of attribute."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(SPANS_PER_TRACE):
        span = Span(trace_id=(seed + 1).to_bytes(16, "big"),
                    span_id=(seed * 100 + i + 1).to_bytes(8, "big"),
                    name=f"span {i}", start_time_unix_nano=1, end_time_unix_nano=2)
        span.attributes.append(KeyValue(key="pad", value={"string_value": f"{seed}-{i}-"
                                                          + "x" * padding}))
        scope.spans.append(span)
    return bytes(request.SerializeToString())


def trace_hex(seed: int) -> str:
    return (seed + 1).to_bytes(16, "big").hex()


def spans_per_trace(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return dict(conn.execute("SELECT trace_id, COUNT(*) FROM spans GROUP BY trace_id"))


def integrity(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def http_export(port: int, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/traces", body=body,
                     headers={"Content-Type": "application/x-protobuf"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Exporter:
    """Sends trace requests alternately over gRPC and HTTP; ``True`` when stored, ``False``
    when refused as full (any other answer fails the test)."""

    def __init__(self, grpc_address: str, http_port: int) -> None:
        self.channel = grpc.insecure_channel(grpc_address)
        self.export = self.channel.unary_unary(f"/{SERVICES['traces']}/Export",
                                               request_serializer=None,
                                               response_deserializer=None)
        self.http_port = http_port
        self.sent = 0
        self.refusal_s: list[float] = []

    def send(self, body: bytes) -> bool:
        self.sent += 1
        started = time.perf_counter()
        if self.sent % 2:
            try:
                self.export(body, timeout=30)
                return True
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                assert "full" in error.details()
        else:
            status, data = http_export(self.http_port, body)
            if status == 200:
                return True
            assert status == 507, (status, data)
            assert RpcStatus.FromString(data).code == 8  # RESOURCE_EXHAUSTED
        self.refusal_s.append(time.perf_counter() - started)
        return False

    def close(self) -> None:
        self.channel.close()


def test_at_the_size_cap_exports_are_refused_then_resume_after_pruning(tmp_path: Path) -> None:
    """A 512 KiB cap, no age limit, pruning only when woken: the cap is reached, requests
    are refused (counted), the pruner frees the oldest traces and ingest resumes by itself.
    Every trace left is whole, no refused trace was stored, the file stays under the cap."""
    cap = 512 * 1024
    receiver = start_receiver_at(tmp_path, extra=(
        "--max-db-size", "512KiB", "--retention", "off", "--prune-interval", "3600"))
    exporter = Exporter(receiver.ready["grpc"], int(receiver.ready["http"].rsplit(":")[1]))
    outcomes: dict[int, bool] = {}
    try:
        for seed in range(120):
            outcomes[seed] = exporter.send(trace_request(seed))
    finally:
        exporter.close()
        receiver.stop()
    stderr = sorted(tmp_path.glob("receiver-*.stderr"))[-1].read_text()
    refused = [seed for seed, ok in outcomes.items() if not ok]
    assert refused, "the cap was never reached"
    assert any(outcomes[seed] for seed in range(refused[0] + 1, 120)), \
        "ingest did not resume after the first refusal"
    assert f"{len(refused)} requests refused for lack of space" in stderr
    assert integrity(receiver.db) == "ok"
    stored = spans_per_trace(receiver.db)
    assert set(stored.values()) == {SPANS_PER_TRACE}, "a trace was stored or pruned in part"
    assert not {trace_hex(seed) for seed in refused} & set(stored)
    assert trace_hex(max(s for s, ok in outcomes.items() if ok)) in stored
    assert receiver.db.stat().st_size <= cap
    report("retention_cap", requests=len(outcomes), refused=len(refused),
           refuse_ms_max=round(max(exporter.refusal_s) * 1000, 1))


@pytest.fixture
def full_disk_receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(tmp_path / "r.db", retention=None, max_db_size=None) as receiver:
        yield receiver


def test_a_full_disk_refuses_damages_nothing_and_resumes(full_disk_receiver: Receiver) -> None:
    """No retention at all: the disk fills (SQLite's page cap on the receiver's own
    connection, set to the pages in use), every export is refused over both transports and
    counted, what was stored stays intact, and once space returns ingest resumes."""
    receiver = full_disk_receiver
    exporter = Exporter(receiver.grpc_address, receiver.http_port)
    try:
        assert all(exporter.send(trace_request(seed)) for seed in range(4))
        before = spans_per_trace(receiver.db_path)
        store = receiver._store
        assert store is not None
        store.set_max_db_size(1)  # SQLite keeps it at the pages in use: nothing more fits
        refused = [exporter.send(trace_request(seed, padding=20_000)) for seed in range(4, 10)]
        assert refused == [False] * 6
        stats = receiver.stats()
        assert (stats.refused_full, stats.rejected, stats.spans) == (6, 6, 4 * SPANS_PER_TRACE)
        assert spans_per_trace(receiver.db_path) == before
        assert integrity(receiver.db_path) == "ok"
        store.set_max_db_size(None)  # space returns
        assert exporter.send(trace_request(10, padding=20_000))
        assert exporter.send(trace_request(11, padding=20_000))
        assert receiver.stats().refused_full == 6
        assert len(spans_per_trace(receiver.db_path)) == 6
    finally:
        exporter.close()
    report("retention_full_disk", refuse_ms_max=round(max(exporter.refusal_s) * 1000, 1))


def test_age_prunes_whole_traces_and_their_logs_by_arrival_time(tmp_path: Path) -> None:
    """Arrival times are moved back (as if days had passed); a trace is deleted only when
    every span of it is older than the retention, its logs go with it, untraced logs and
    metric points go by their own arrival time. Span timestamps (1970 here) play no part."""
    db = tmp_path / "r.db"
    with Store(db) as store:
        from otel_agentbus.receiver.ingest import Ingest, Signal

        ingest = Ingest(store)
        for seed in range(3):
            ingest.export_protobuf(Signal.TRACES, trace_request(seed, padding=10))
        logs = ExportLogsServiceRequest()
        records = logs.resource_logs.add().scope_logs.add().log_records
        for seed in (0, 1, None, None):
            record = records.add(body={"string_value": f"log of {seed}"})
            if seed is not None:
                record.trace_id = (seed + 1).to_bytes(16, "big")
        ingest.export_protobuf(Signal.LOGS, logs.SerializeToString())
        metrics = ExportMetricsServiceRequest()
        gauge = metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="g").gauge
        for value in range(4):
            gauge.data_points.add(as_int=value, time_unix_nano=1)
        ingest.export_protobuf(Signal.METRICS, metrics.SerializeToString())
    now = time.time_ns() // 1_000_000
    with sqlite3.connect(db, isolation_level=None) as conn:
        old = now - 8 * DAY_MS
        conn.execute("UPDATE spans SET received_ms = ? WHERE trace_id = ?", (old, trace_hex(0)))
        # Trace 1: all but one span old; the recent one keeps the whole trace.
        conn.execute("UPDATE spans SET received_ms = ? WHERE trace_id = ? AND name != 'span 9'",
                     (old, trace_hex(1)))
        conn.execute("UPDATE logs SET received_ms = ? WHERE body != '\"log of None\"' "
                     "OR id = (SELECT MIN(id) FROM logs WHERE trace_id IS NULL)", (old,))
        conn.execute("UPDATE metrics SET received_ms = ? WHERE value < 2", (old,))
        deleted = prune(conn, RetentionPolicy(max_age_s=7 * 86_400, max_db_size=None),
                        now_ms=now)
        assert (deleted.traces, deleted.spans) == (1, SPANS_PER_TRACE)
        assert (deleted.log_records, deleted.metric_points) == (2, 2)
        assert sorted(spans_per_trace(db)) == [trace_hex(1), trace_hex(2)]
        assert sorted(json.loads(b) for (b,) in conn.execute("SELECT body FROM logs")) == [
            "log of 1", "log of None"]
        assert sorted(v for (v,) in conn.execute("SELECT value FROM metrics")) == [2, 3]
        again = prune(conn, RetentionPolicy(max_age_s=7 * 86_400, max_db_size=None),
                      now_ms=now)
        assert (again.traces, again.log_records, again.metric_points) == (0, 0, 0)


def test_the_running_pruner_deletes_expired_traces(tmp_path: Path) -> None:
    with Receiver(tmp_path / "r.db", retention=1.0, prune_interval=0.2) as receiver:
        exporter = Exporter(receiver.grpc_address, receiver.http_port)
        try:
            assert exporter.send(trace_request(0))
            assert spans_per_trace(receiver.db_path) == {trace_hex(0): SPANS_PER_TRACE}
            assert wait_until(lambda: not spans_per_trace(receiver.db_path), 60)
            assert exporter.send(trace_request(1))
        finally:
            exporter.close()
        pruned = receiver.prune_stats()
    assert (pruned.traces, pruned.spans) == (1, SPANS_PER_TRACE)


def test_size_pruning_keeps_the_database_under_its_low_water_mark(tmp_path: Path) -> None:
    """Four times the cap is written through the store while pruning runs between writes
    (as the pruner thread would); the pages in use never stay above the cap and the
    newest traces survive whole."""
    cap = MIN_DB_SIZE * 2
    db = tmp_path / "r.db"
    from otel_agentbus.receiver.ingest import Ingest, Signal

    policy = RetentionPolicy(max_age_s=None, max_db_size=cap)
    with Store(db, max_db_size=cap) as store, sqlite3.connect(db, isolation_level=None) as conn:
        ingest = Ingest(store)
        written = 0
        seed = 0
        started = time.perf_counter()
        deleted_spans = 0
        while written < 4 * cap:
            body = trace_request(seed)
            ingest.export_protobuf(Signal.TRACES, body)
            written += len(body)
            seed += 1
            deleted_spans += prune(conn, policy).spans
            assert used_bytes(conn) <= cap
        elapsed = time.perf_counter() - started
        assert ingest.stats().refused_full == 0
        stored = spans_per_trace(db)
        assert set(stored.values()) == {SPANS_PER_TRACE}
        assert trace_hex(seed - 1) in stored and trace_hex(0) not in stored
        assert used_bytes(conn) <= cap
    report("retention_size_prune", traces=seed, spans_pruned=deleted_spans,
           spans_per_s=round(deleted_spans / elapsed))


def test_a_version_1_database_gets_arrival_times(tmp_path: Path) -> None:
    """A file written before ``received_ms`` existed: its rows count as received at the
    upgrade, and rows stored afterwards are stamped by the trigger."""
    db = tmp_path / "old.db"
    with Store(db) as store:
        from otel_agentbus.receiver.ingest import Ingest, Signal

        Ingest(store).export_protobuf(Signal.TRACES, trace_request(0, padding=10))
    with sqlite3.connect(db, isolation_level=None) as conn:
        for table in ("spans", "metrics", "logs"):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN received_ms")
        conn.execute("PRAGMA user_version=1")
    before = time.time_ns() // 1_000_000
    with Store(db) as store:
        from otel_agentbus.receiver.ingest import Ingest, Signal

        Ingest(store).export_protobuf(Signal.TRACES, trace_request(1, padding=10))
    with sqlite3.connect(db) as conn:
        stamps = [r for (r,) in conn.execute("SELECT received_ms FROM spans")]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert len(stamps) == 2 * SPANS_PER_TRACE
    assert all(s is not None and before - 5_000 <= s <= time.time_ns() // 1_000_000 + 5_000
               for s in stamps)


@pytest.mark.parametrize(("text", "seconds"), [
    ("7d", 7 * 86_400.0), ("12h", 43_200.0), ("30m", 1_800.0), ("90s", 90.0), ("45", 45.0),
    ("2w", 14 * 86_400.0), ("off", None), ("none", None)])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "size"), [
    ("2GB", 2_000_000_000), ("2GiB", 2 * 1024**3), ("500MB", 500_000_000),
    ("512KiB", 512 * 1024), ("1048576", 1_048_576), ("1.5GiB", 3 * 1024**3 // 2),
    ("off", None)])
def test_parse_size(text: str, size: int | None) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--retention", "7x", "bad duration '7x'"),
    ("--retention", "0d", "must be positive"),
    ("--max-db-size", "2XB", "bad size '2XB'"),
    ("--max-db-size", "10KB", "below the minimum"),
    ("--prune-interval", "0", "must be positive"),
])
def test_bad_retention_options_are_named(option: str, value: str, message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["receiver", option, value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
