"""The embedded receiver: OTLP/gRPC + OTLP/HTTP into one SQLite file.

Lets the demo and the tests run against a real OTLP endpoint without a
collector. Use it in-process (``with Receiver(path) as r: ...``) or as a
separate process through ``otel-agentbus receiver``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from .http_server import OTLPHTTPServer
from .ingest import Ingest, ReceiverStats
from .limits import DEFAULT_LIMITS, DecodeLimits, HTTPLimits
from .retention import (
    DEFAULT_INTERVAL_S,
    DEFAULT_MAX_DB_SIZE,
    DEFAULT_RETENTION_S,
    Pruner,
    PruneStats,
    RetentionPolicy,
)
from .store import StorageFull, Store
from .tls import TLSFiles, check_exposure
from .web_url import WEB_URL_KEY, run_link

if TYPE_CHECKING:
    from .web.links import WebLinks

log = logging.getLogger(__name__)

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


def _record_web_url(store: Store, url: str | None) -> None:
    """Say in the database where its web view is (``otel-agentbus runs`` prints links to
    it); a full or failing database must not stop the receiver over this."""
    try:
        store.set_meta(WEB_URL_KEY, url)
    except (sqlite3.Error, StorageFull) as exc:
        log.warning("could not record the web view's address in %s: %s", store.path, exc)


class Receiver:
    """An OTLP receiver (gRPC and HTTP) storing into SQLite at ``db_path``.

    ``retention`` (seconds since arrival) and ``max_db_size`` (bytes) bound what it keeps,
    ``None`` turning either off; a background pruner deletes whole traces past them (see
    ``receiver/retention.py``). A request that finds the database full anyway is refused
    (HTTP 507 / gRPC RESOURCE_EXHAUSTED) and counted in ``stats().refused_full``."""

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
        retention: float | None = DEFAULT_RETENTION_S,
        max_db_size: int | None = DEFAULT_MAX_DB_SIZE,
        prune_interval: float = DEFAULT_INTERVAL_S,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        insecure: bool = False,
        web: bool = True,
        web_links: WebLinks | None = None,
    ) -> None:
        if max_body <= 0:
            raise ValueError("max_body must be positive")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("TLS needs both a certificate and its key (tls_cert, tls_key)")
        self.tls = None if tls_cert is None or tls_key is None else TLSFiles.load(
            tls_cert, tls_key)
        self.retention = RetentionPolicy(retention, max_db_size, prune_interval)
        self.db_path = Path(db_path).absolute()
        self.token = token or None
        self.max_body = max_body
        self.http_limits = http_limits or HTTPLimits()
        self.decode_limits = decode_limits
        self._grpc_host, self._grpc_port = split_host_port(grpc_addr)
        self._http_host, self._http_port = split_host_port(http_addr)
        check_exposure([grpc_addr, http_addr], [self._grpc_host, self._http_host],
                       self.token, insecure)
        self.web = web
        self.web_links = web_links
        self._store: Store | None = None
        self._ingest: Ingest | None = None
        self._pruner: Pruner | None = None
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
            store = Store(self.db_path, max_db_size=self.retention.max_db_size)
            ingest = Ingest(store, self.decode_limits)
            pruner = Pruner(self.db_path, self.retention)
            store.add_full_listener(pruner.wake)
            try:
                grpc_server, grpc_port = create_grpc_server(
                    join_host_port(self._grpc_host, self._grpc_port),
                    ingest,
                    token=self.token,
                    max_body=self.max_body,
                    tls=self.tls,
                )
                web_view = None
                if self.web:
                    from .web import WebView  # Starlette's static files; import on use

                    web_view = WebView(self.db_path, token=self.token, links=self.web_links,
                                       secure_cookies=self.tls is not None)
                try:
                    http = OTLPHTTPServer(
                        (self._http_host, self._http_port),
                        ingest,
                        token=self.token,
                        max_body=self.max_body,
                        limits=self.http_limits,
                        tls=self.tls,
                        web=web_view,
                    )
                    http.start()
                except BaseException:
                    grpc_server.stop(None)
                    raise
            except BaseException:
                store.close()
                raise
            grpc_server.start()
            self._store, self._ingest, self._pruner = store, ingest, pruner.start()
            self._grpc, self._grpc_port = grpc_server, grpc_port
            self._http, self._http_port = http, int(http.server_address[1])
            _record_web_url(store, self.web_url)
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
            if self._pruner is not None:
                self._pruner.stop()
                self._pruner = None
            _record_web_url(self._store, None)
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
    def scheme(self) -> str:
        return "http" if self.tls is None else "https"

    @property
    def grpc_endpoint(self) -> str:
        """For ``OTLPSpanExporter(endpoint=..., insecure=True)`` (gRPC); ``https://`` with
        TLS."""
        return f"{self.scheme}://{self.grpc_address}"

    @property
    def http_endpoint(self) -> str:
        """Base URL; signal paths are ``/v1/traces``, ``/v1/metrics``, ``/v1/logs``."""
        return f"{self.scheme}://{self.http_address}"

    @property
    def web_url(self) -> str | None:
        """Base URL of the web view (``/runs``, ``/runs/<run id>``, ``/traces/<trace
        id>`` under it), on the HTTP listener; ``None`` when it is off."""
        return self.http_endpoint if self.web else None

    def run_url(self, run_id: str) -> str | None:
        """The web view's page of one run."""
        base = self.web_url
        return None if base is None else run_link(base, run_id)

    def stats(self) -> ReceiverStats:
        ingest = self._ingest
        return ingest.stats() if ingest is not None else ReceiverStats()

    def prune_stats(self) -> PruneStats:
        """What retention deleted since :meth:`start`."""
        pruner = self._pruner
        return pruner.stats() if pruner is not None else PruneStats()
