"""Security, end to end with real processes.

A child interpreter runs a demo-like workload (a signed webhook triggers an AgentRuntime
execution that makes an LLM call, a tool call, decisions, outcomes and problems through
the decision tracker) with the real OTLP/gRPC exporter. Its exports go through an
in-process OTLP endpoint that records every byte on the wire and forwards it to the
receiver subprocess. A canary string sits in every content-bearing place (LLM messages,
system prompt, completion and deltas, tool arguments and results, run input and output,
decision context, outcome result, problem details, node internal output, client output
deltas, the webhook body); secrets sit in headers, the query string and secret-looking
fields.

With content capture off the canary is in no byte on the wire and in no byte the receiver
stored (its SQLite file, -wal and -shm); with capture on it is (so the search can fail).
Secrets are in neither, nor in the tracker's database, nor in any event the library built.
The receiver and the webhook server bind to loopback by default and take a bearer token;
their files and the tracker's are created 0600 (-wal and -shm too) even under umask 000.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from reliability_helpers import SERVICES, RawCollector, child, start_receiver_at, stored_bytes
from telemetry_helpers import child_env

from otel_agentbus.cli import build_parser
from otel_agentbus.receiver import Receiver as InProcessReceiver
from otel_agentbus.runtime.agent_runtime import AgentRuntimeConfig
from otel_agentbus.runtime.webhooks import WebhookRequest, WebhookServer

pytestmark = pytest.mark.timeout(90)

CANARY = b"CANARY-5e1f0c9d"  # as in reliability_child.py
SECRET = b"SECRET-9b7d2a41"
TOKEN = "receiver-token-7c1e"
MARKER = b"visible-marker"


def modes(path: Path) -> dict[str, int]:
    return {suffix: stat.S_IMODE(os.stat(f"{path}{suffix}").st_mode)
            for suffix in ("", "-wal", "-shm") if os.path.exists(f"{path}{suffix}")}


@pytest.mark.parametrize("capture", ["off", "on"])
def test_canary_and_secrets_end_to_end(tmp_path: Path, capture: str) -> None:
    receiver = start_receiver_at(tmp_path, umask=0, env=child_env(
        OTEL_AGENTBUS_RECEIVER_TOKEN=TOKEN))
    wire = RawCollector(upstream=receiver.ready["grpc"])
    tracker_db = tmp_path / "tracker.db"
    try:
        env = child_env(RELIABILITY_UMASK="000",
                        OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer {TOKEN}")
        with child(tmp_path, "secrets", wire.endpoint, capture, str(tracker_db),
                   env=env, ready_timeout=60) as agent:
            result = agent.ready
        receiver_modes = modes(receiver.db)  # while it runs: -wal and -shm exist
        stored = stored_bytes(receiver.db)
        sent = wire.wire()
    finally:
        receiver.stop()
        wire.stop()
    tracker = stored_bytes(tracker_db)
    stats = result["stats"]
    assert result["finished"] is True
    assert stats["spans_exported"] == stats["spans_emitted"] > 0  # the token was accepted
    assert stats["spans_export_failed"] == 0
    # The search sees what was exported: the controls.
    assert MARKER in sent and MARKER in stored
    assert b"[redacted]" in sent and b"[redacted]" in stored
    assert b"execute_tool lookup" in stored and b"chat gpt-4o" in stored
    if capture == "off":
        assert CANARY not in sent, "content left the process on the wire"
        assert CANARY not in stored, "content reached the receiver's files"
    else:
        assert CANARY in sent and CANARY in stored
    # Secrets: nowhere, whatever the capture mode.
    for where, data in (("wire", sent), ("receiver db", stored), ("tracker db", tracker)):
        assert SECRET not in data, f"a secret reached the {where}"
    assert tracker and b"[redacted]" in tracker
    assert result["secret_in_events"] is False
    assert result["redacted_in_events"] is True
    assert result["direct"] == 2  # app-built events: delivered as built, redacted on export
    # Files: owner-only, -wal and -shm included, even with umask 000.
    assert set(receiver_modes) == {"", "-wal", "-shm"}
    assert set(receiver_modes.values()) == {0o600}, receiver_modes
    assert set(result["tracker_modes"]) == {"", "-wal", "-shm"}
    assert set(result["tracker_modes"].values()) == {"0o600"}, result["tracker_modes"]


def _outside_address() -> str | None:
    """An address of this host that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def test_loopback_by_default(tmp_path: Path) -> None:
    args = build_parser().parse_args(["receiver"])
    assert args.grpc.startswith("127.0.0.1:") and args.http.startswith("127.0.0.1:")
    assert AgentRuntimeConfig().webhook_host == "127.0.0.1"

    async def dispatch(request: WebhookRequest) -> tuple[str, bool]:
        return "x", False

    server = WebhookServer(dispatch)
    await server.start()
    outside = _outside_address()
    try:
        with InProcessReceiver(tmp_path / "r.db") as receiver:
            ports = (receiver.grpc_port, receiver.http_port, server.port)
            assert all(_reachable("127.0.0.1", port) for port in ports)
            if outside is not None:  # listening on loopback only: not reachable from there
                assert not any(_reachable(outside, port) for port in ports)
    finally:
        await server.stop()


def test_receiver_token_from_the_environment(tmp_path: Path) -> None:
    import http.client

    receiver = start_receiver_at(tmp_path, env=child_env(OTEL_AGENTBUS_RECEIVER_TOKEN=TOKEN))
    try:
        host, port = receiver.ready["http"].rsplit(":", 1)
        for headers, expected in (({}, 401), ({"Authorization": "Bearer nope"}, 401),
                                  ({"Authorization": f"Bearer {TOKEN}"}, 200)):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("POST", "/v1/traces", body=b"", headers={
                "Content-Type": "application/x-protobuf", **headers})
            assert conn.getresponse().status == expected
            conn.close()
        with grpc.insecure_channel(receiver.ready["grpc"]) as channel:
            export = channel.unary_unary(f"/{SERVICES['traces']}/Export",
                                         request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as info:
                export(b"", timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            export(b"", timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),))
        # The token never shows in the process list: it came from the environment.
        listed = subprocess.run(["ps", "-o", "args=", "-p", str(receiver.proc.pid)],
                                capture_output=True, text=True, check=False)
        assert TOKEN not in listed.stdout
    finally:
        receiver.stop()
