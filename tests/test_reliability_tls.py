"""Who may reach the receiver: TLS on both endpoints, and no silent exposure.

A self-signed certificate is made in the test; the SDK's own OTLP exporters (gRPC and
HTTP) send a span over TLS to each endpoint and it is stored; a plaintext client gets no
answer a TLS port would not give. A non-loopback bind without a token refuses to start
with one line saying how to fix it, unless ``--insecure``.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.sdk.trace.export import SpanExportResult
from reliability_helpers import start_receiver_at
from telemetry_helpers import child_env, context, span

from otel_agentbus.cli import main
from otel_agentbus.receiver import Receiver, get_trace
from otel_agentbus.receiver.tls import TLSConfigError, is_loopback

pytestmark = pytest.mark.timeout(120)


def write_self_signed(directory: Path, name: str = "receiver") -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, valid for a day, and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_receiver(tmp_path: Path) -> Iterator[tuple[Receiver, Path]]:
    cert, key = write_self_signed(tmp_path)
    with Receiver(tmp_path / "r.db", tls_cert=cert, tls_key=key) as receiver:
        yield receiver, cert


def test_the_sdk_exporters_send_over_tls_to_both_endpoints(
        tls_receiver: tuple[Receiver, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, cert = tls_receiver
    # requests lets these override the exporter's certificate_file (the session's verify).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    assert receiver.grpc_endpoint.startswith("https://")
    assert receiver.http_endpoint.startswith("https://")
    ca = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    grpc_exporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, credentials=ca,
                                     timeout=20)
    http_exporter = HttpSpanExporter(endpoint=f"{receiver.http_endpoint}/v1/traces",
                                     certificate_file=str(cert), timeout=20)
    try:
        for exporter, name, span_id in ((grpc_exporter, "over grpc tls", 3),
                                        (http_exporter, "over http tls", 4)):
            result = exporter.export([span(name=name, context=context(span_id))])
            assert result == SpanExportResult.SUCCESS, name
    finally:
        grpc_exporter.shutdown()
        http_exporter.shutdown()
    tree = get_trace(receiver.db_path, f"{0x1234:032x}")
    assert sorted(s.name for s in tree.spans) == ["over grpc tls", "over http tls"]
    assert receiver.stats().spans == 2


def test_the_cli_receiver_serves_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``otel-agentbus receiver --tls-cert --tls-key`` as a subprocess, with a token."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    cert, key = write_self_signed(tmp_path)
    receiver = start_receiver_at(tmp_path, extra=(
        "--tls-cert", str(cert), "--tls-key", str(key), "--token", "s3cret"))
    try:
        exporter = HttpSpanExporter(endpoint=f"https://{receiver.ready['http']}/v1/traces",
                                    certificate_file=str(cert), timeout=20,
                                    headers={"Authorization": "Bearer s3cret"})
        try:
            result = exporter.export([span(name="cli tls", context=context(5))])
        finally:
            exporter.shutdown()
        assert result == SpanExportResult.SUCCESS
    finally:
        receiver.stop()
    assert [s.name for s in get_trace(receiver.db, f"{0x1234:032x}").spans] == ["cli tls"]


def test_plaintext_and_untrusted_clients_store_nothing(
        tls_receiver: tuple[Receiver, Path], tmp_path: Path) -> None:
    receiver, _ = tls_receiver
    # Plain HTTP to the TLS port: the server sees no TLS handshake and drops the connection.
    conn = http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=10)
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.request("POST", "/v1/traces", body=b"", headers={
            "Content-Type": "application/x-protobuf"})
        conn.getresponse().read()
    conn.close()
    # A client that does not trust the certificate refuses the handshake.
    other_cert, _ = write_self_signed(tmp_path, "other")
    context = ssl.create_default_context(cafile=str(other_cert))
    with socket.create_connection(("127.0.0.1", receiver.http_port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="localhost")
    # Plaintext gRPC to the TLS port fails rather than being stored.
    with grpc.insecure_channel(receiver.grpc_address) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as error:
            export(b"", timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert receiver.stats().spans == 0


def test_bad_certificate_files_are_named(tmp_path: Path) -> None:
    cert, _ = write_self_signed(tmp_path)
    _, other_key = write_self_signed(tmp_path, "other")
    with pytest.raises(TLSConfigError, match=r"cannot read TLS key .*missing\.key"):
        Receiver(tmp_path / "r.db", tls_cert=cert, tls_key=tmp_path / "missing.key")
    with pytest.raises(TLSConfigError, match="do not load as a PEM pair"):
        Receiver(tmp_path / "r.db", tls_cert=cert, tls_key=other_key)
    with pytest.raises(ValueError, match="both a certificate and its key"):
        Receiver(tmp_path / "r.db", tls_cert=cert)
    assert not (tmp_path / "r.db").exists()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("example.internal", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_an_exposed_bind_without_a_token_refuses_to_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "r.db"
    code = main(["receiver", "--grpc", "0.0.0.0:0", "--http", "127.0.0.1:0", "--db", str(db)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1, err
    assert "refusing to listen on 0.0.0.0:0 without a bearer token" in err
    assert "--token" in err and "--insecure" in err
    assert not db.exists()
    with pytest.raises(ValueError, match=r"\[::\]:0"):
        Receiver(db, http_addr="[::]:0")


def test_an_exposed_bind_starts_with_a_token_or_insecure(tmp_path: Path) -> None:
    """In a subprocess (a real bind on every interface), then stopped with SIGTERM."""
    for extra in (["--token", "s3cret"], ["--insecure"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "otel_agentbus.cli", "receiver", "--grpc", "0.0.0.0:0",
             "--http", "0.0.0.0:0", "--db", str(tmp_path / "r.db"), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("{") and '"0.0.0.0:' in line, proc.stderr
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
        assert proc.returncode == 0
