"""The webhook listener: the webhook ASGI app served alone, on Uvicorn.

Uvicorn (with h11, its pure-Python HTTP/1.1 parser, strict about framing) on the
runtime's own event loop: no thread hand-off, nothing parsed by our code. On top of
Uvicorn, per listener:

- ``max_connections``: past it a new connection gets a 503 (``Retry-After: 1``) at once
  and is closed, while the connections already open are served;
- ``read_timeout``: the request head must arrive within it (else the connection is
  closed without an answer) and so must the body (else 408);
- ``max_header_bytes``: a longer request head is answered 431;
- one request per connection (``Connection: close``), so no connection idles;
- a client that hangs up is one counted debug line, never a traceback.

The app itself (routes, signatures, idempotency, limits, header scrubbing) is
:mod:`otel_agentbus.runtime.webhook_app`; mount it into your own ASGI application instead
of starting this listener when you already serve HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any, Final

import h11
from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..bus import EventBus
from .webhook_app import (
    DEFAULT_MAX_BODY,
    IDEMPOTENCY_HEADER,
    MAX_HEADER_VALUE,
    MAX_SAFE_HEADERS,
    Dispatch,
    WebhookApp,
    WebhookRequest,
    WebhookRoute,
    is_sensitive_header,
    safe_headers,
)
from .webhook_signatures import GITHUB_HEADER, sign, verify_signature

logger = logging.getLogger("otel_agentbus.runtime.webhooks")

DEFAULT_MAX_HEADER: Final = 64 * 1024
SIGNATURE_HEADER: Final = GITHUB_HEADER
LINGER: Final = 1.0
"""Seconds a connection answered by the listener itself (503, 400, 431) is kept to drain."""

__all__ = [
    "DEFAULT_MAX_BODY", "DEFAULT_MAX_HEADER", "IDEMPOTENCY_HEADER", "MAX_HEADER_VALUE",
    "MAX_SAFE_HEADERS", "SIGNATURE_HEADER", "Dispatch", "WebhookApp", "WebhookRequest",
    "WebhookRoute", "WebhookServer", "is_sensitive_header", "safe_headers", "sign",
    "verify_signature",
]


class _QuietWarnings(logging.Filter):
    """Uvicorn's per-request warnings (an invalid request) become debug lines, kept only
    when debug is on for this module: a flood of garbage must not flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING:
            if not logger.isEnabledFor(logging.DEBUG):
                return False
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_uvicorn_logger = logging.getLogger("otel_agentbus.runtime.webhooks.uvicorn")
_uvicorn_logger.addFilter(_QuietWarnings())


def _answer(status: int, reason: str, body: dict[str, Any],
            extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    payload = json.dumps(body).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
            f"content-length: {len(payload)}", "connection: close",
            *(f"{name}: {value}" for name, value in extra)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload


class _Connection(H11Protocol):
    """Uvicorn's h11 connection plus the listener's limits, timeouts and counters."""

    listener: WebhookServer  # set on the per-listener subclass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _uvicorn_logger
        self._head_timer: asyncio.TimerHandle | None = None
        self._received = False
        self._closed_by_us = False
        self._head_bytes = 0
        self._head_tail = b""
        self._head_done = False
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        listener = self.listener
        if len(self.connections) > listener.max_connections:
            listener.refused_connections += 1
            self._reply_and_close(503, "Service Unavailable", "too many connections",
                                  (("retry-after", "1"),))
            return
        self._head_timer = self.loop.call_later(listener.read_timeout, self._head_too_slow)

    def data_received(self, data: bytes) -> None:
        self._received = True
        if self._linger is not None:
            return  # answered already: the rest of the request is read and dropped
        if not self._head_done and self._head_too_long(data):
            self._reply_and_close(431, "Request Header Fields Too Large",
                                  "request headers too large")
            return
        super().data_received(data)
        if self.cycle is not None and self._head_timer is not None:
            self._head_timer.cancel()  # the head is in; the app times the body
            self._head_timer = None
            self.cycle.keep_alive = False  # one request per connection: closed after it

    def _head_too_long(self, data: bytes) -> bool:
        """Counts the head's bytes (h11 bounds only a head still incomplete)."""
        window = self._head_tail + data
        end = window.find(b"\r\n\r\n")
        if end < 0:
            self._head_bytes += len(data)
            self._head_tail = window[-3:]
        else:
            self._head_bytes += end + 4 - len(self._head_tail)
            self._head_done = True
        return self._head_bytes > self.listener.max_header_bytes

    def _reply_and_close(self, status: int, reason: str, error: str,
                         extra: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer, stop writing, and read (dropping it) what the client still sends for
        up to ``LINGER`` seconds: closing with unread input would reset the connection
        and the client might never see the answer."""
        self._closed_by_us = True
        self.listener.app.count_status(status)
        self.transport.write(_answer(status, reason, {"error": error}, extra))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER, self.transport.close)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.listener.header_timeouts += 1
            logger.debug("webhook connection closed: no request head within %ss",
                         self.listener.read_timeout)
            self._closed_by_us = True
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """An unparsable request (h11 says why only in its exception): 400, as JSON."""
        self._reply_and_close(400, "Bad Request", "malformed HTTP request")

    def shutdown(self) -> None:
        try:
            super().shutdown()
        except h11.LocalProtocolError:  # a connection answered by us above, h11 in ERROR
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger = None
        cycle = self.cycle
        if not self._closed_by_us and self._received:
            if cycle is None:
                self.listener.app.note_disconnect("before the request head was complete")
            elif not cycle.response_complete and not cycle.more_body:
                self.listener.app.note_disconnect("before the answer")
        with contextlib.suppress(h11.LocalProtocolError):
            super().connection_lost(exc)


class WebhookServer:
    """Serves a :class:`WebhookApp` on ``host`` (loopback by default) with Uvicorn.

    ``port=0`` picks a free port; :attr:`port` is the bound one after :meth:`start`.
    Give ``dispatch`` (a new app is made) or ``app`` (an app you also mount elsewhere).
    """

    def __init__(self, dispatch: Dispatch | None = None, *, app: WebhookApp | None = None,
                 bus: EventBus | None = None, host: str = "127.0.0.1", port: int = 0,
                 max_body_bytes: int = DEFAULT_MAX_BODY,
                 max_header_bytes: int = DEFAULT_MAX_HEADER, read_timeout: float = 10.0,
                 max_connections: int = 64) -> None:
        if max_body_bytes < 0 or max_header_bytes < 1024 or read_timeout <= 0:
            raise ValueError("max_body_bytes >= 0, max_header_bytes >= 1024 and "
                             "read_timeout > 0 are required")
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if app is None:
            if dispatch is None:
                raise ValueError("give dispatch= or app=")
            app = WebhookApp(dispatch, bus=bus, max_body_bytes=max_body_bytes,
                             read_timeout=read_timeout)
        self.app = app
        self.host = host
        self._requested_port = port
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.refused_connections = 0
        self.header_timeouts = 0
        self._server: Server | None = None
        self._socket: socket.socket | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- set-up
    def add_route(self, route: WebhookRoute) -> None:
        self.app.add_route(route)

    @property
    def routes(self) -> tuple[WebhookRoute, ...]:
        return self.app.routes

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the webhook server is not started")
        return self._port

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}{path}"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        return len(self._server.server_state.connections) if self._server else 0

    async def start(self) -> None:
        """Bind and serve. Uvicorn's ``startup``/``shutdown`` are called directly (not
        ``serve()``), so the host process keeps its own signal handlers and logging."""
        if self._server is not None:
            return
        connection = type("WebhookConnection", (_Connection,), {"listener": self})
        config = Config(self.app, http=connection, ws="none", lifespan="off",
                        log_config=None, access_log=False, proxy_headers=False,
                        server_header=False, date_header=False,
                        h11_max_incomplete_event_size=self.max_header_bytes,
                        backlog=max(128, self.max_connections * 2))
        config.load()
        server = Server(config)
        server.lifespan = config.lifespan_class(config)
        sock = _bind(self.host, self._requested_port)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._socket = server, sock
        self._port = int(sock.getsockname()[1])
        logger.info("webhook server listening on %s:%s", self.host, self._port)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, let answers in progress finish, bounded by ``timeout``."""
        server, self._server = self._server, None
        sock, self._socket = self._socket, None
        if server is None:
            return
        server.config.timeout_graceful_shutdown = max(1, int(timeout))
        try:
            await asyncio.wait_for(server.shutdown(sockets=[sock] if sock else None),
                                   timeout + 1)
        except TimeoutError:
            logger.warning("webhook server did not stop within %ss; closing connections",
                           timeout)
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()

    def stats(self) -> dict[str, Any]:
        return {"port": self._port, **self.app.stats(),
                "connections": {"open": self.open_connections,
                                "refused": self.refused_connections,
                                "header_timeouts": self.header_timeouts}}


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket, so a busy port is an ``OSError`` here (Uvicorn would exit)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
