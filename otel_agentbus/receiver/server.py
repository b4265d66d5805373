"""The embedded receiver: OTLP/gRPC + OTLP/HTTP into one SQLite file.

Lets the demo and the tests run against a real OTLP endpoint without a
collector. Use it in-process (``with Receiver(path) as r: ...``) or as a
separate process through ``otel-agentbus receiver``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from .http_server import OTLPHTTPServer
from .ingest import Ingest, ReceiverStats
from .limits import DEFAULT_LIMITS, DecodeLimits, HTTPLimits
from .store import Store

DEFAULT_MAX_BODY: Final = 16 * 1024 * 1024
DEFAULT_GRPC_ADDR: Final = "127.0.0.1:4317"
DEFAULT_HTTP_ADDR: Final = "127.0.0.1:4318"
TOKEN_ENV: Final = "OTEL_AGENTBUS_RECEIVER_TOKEN"


def split_host_port(address: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6); port 0 means any free port."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in {address!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return host, port


def join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Receiver:
    """An OTLP receiver (gRPC and HTTP) storing into SQLite at ``db_path``."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        grpc_addr: str = "127.0.0.1:0",
        http_addr: str = "127.0.0.1:0",
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        *,
        http_limits: HTTPLimits | None = None,
        decode_limits: DecodeLimits = DEFAULT_LIMITS,
    ) -> None:
        if max_body <= 0:
            raise ValueError("max_body must be positive")
        self.db_path = Path(db_path).absolute()
        self.token = token or None
        self.max_body = max_body
        self.http_limits = http_limits or HTTPLimits()
        self.decode_limits = decode_limits
        self._grpc_host, self._grpc_port = split_host_port(grpc_addr)
        self._http_host, self._http_port = split_host_port(http_addr)
        self._store: Store | None = None
        self._ingest: Ingest | None = None
        self._grpc: Any = None
        self._http: OTLPHTTPServer | None = None
        self._lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------

    def start(self) -> Receiver:
        """Bind and start both servers; returns once both accept connections."""
        from .grpc_server import create_grpc_server  # grpc is heavy; import on use

        with self._lock:
            if self._store is not None:
                raise RuntimeError("receiver already started")
            store = Store(self.db_path)
            ingest = Ingest(store, self.decode_limits)
            try:
                grpc_server, grpc_port = create_grpc_server(
                    join_host_port(self._grpc_host, self._grpc_port),
                    ingest,
                    token=self.token,
                    max_body=self.max_body,
                )
                try:
                    http = OTLPHTTPServer(
                        (self._http_host, self._http_port),
                        ingest,
                        token=self.token,
                        max_body=self.max_body,
                        limits=self.http_limits,
                    )
                    http.start()
                except BaseException:
                    grpc_server.stop(None)
                    raise
            except BaseException:
                store.close()
                raise
            grpc_server.start()
            self._store, self._ingest = store, ingest
            self._grpc, self._grpc_port = grpc_server, grpc_port
            self._http, self._http_port = http, int(http.server_address[1])
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace`` s), close the DB."""
        with self._lock:
            if self._store is None:
                return
            grpc_server, http = self._grpc, self._http
            assert http is not None
            stopped = grpc_server.stop(grace)
            http.stop(grace)
            stopped.wait(None if grace is None else grace + 1.0)
            self._store.close()
            self._store = None
            self._grpc = self._http = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- addresses and counters -----------------------------------------

    @property
    def running(self) -> bool:
        return self._store is not None

    @property
    def grpc_host(self) -> str:
        return self._grpc_host

    @property
    def http_host(self) -> str:
        return self._http_host

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port (the requested one until :meth:`start`)."""
        return self._grpc_port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def grpc_address(self) -> str:
        return join_host_port(self._grpc_host, self._grpc_port)

    @property
    def http_address(self) -> str:
        return join_host_port(self._http_host, self._http_port)

    @property
    def grpc_endpoint(self) -> str:
        """For ``OTLPSpanExporter(endpoint=..., insecure=True)`` (gRPC)."""
        return f"http://{self.grpc_address}"

    @property
    def http_endpoint(self) -> str:
        """Base URL; signal paths are ``/v1/traces``, ``/v1/metrics``, ``/v1/logs``."""
        return f"http://{self.http_address}"

    def stats(self) -> ReceiverStats:
        ingest = self._ingest
        return ingest.stats() if ingest is not None else ReceiverStats()
