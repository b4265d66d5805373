"""The webhook server: HTTP requests on a path trigger an entry point.

Plain ``asyncio`` streams on the runtime's own loop, so there is no thread hand-off and
no dependency. One request per connection (``Connection: close``). Checks, in order:
unknown path 404, wrong method 405, bearer token 401, no ``Content-Length`` 411, a body
over ``max_body_bytes`` 413 (answered from the header, the body is never read), a body
shorter than announced 408 (after ``read_timeout``), HMAC signature 401, malformed JSON
400; then the entry point is triggered and the answer is 202 ``{"execution_id": ...}`` at
once, without waiting for the run. A full entry point queue answers 429, a stopped
runtime 503.

Secrets stay out: credentials, cookies, signatures and anything secret-looking in header
or query names are dropped before the request reaches an event, a run input or a span.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from ..bus import EventBus
from ..events import Event, Scope, Source
from ..kinds import WEBHOOK_RECEIVED
from ..payload import is_secret_key
from ..tracecontext import traceparent_from
from .execution import ExecutionRejectedError, RuntimeNotRunningError

logger = logging.getLogger("otel_agentbus.runtime.webhooks")

DEFAULT_MAX_BODY: Final = 1024 * 1024
DEFAULT_MAX_HEADER: Final = 64 * 1024
SIGNATURE_HEADER: Final = "x-hub-signature-256"
IDEMPOTENCY_HEADER: Final = "idempotency-key"
MAX_SAFE_HEADERS: Final = 64
MAX_HEADER_VALUE: Final = 1024

_SENSITIVE_NAMES: Final = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
    "x-hub-signature", "x-hub-signature-256",
})
_SENSITIVE_PARTS: Final = (
    "auth", "cookie", "signature", "secret", "token", "password", "passwd", "credential",
    "session", "apikey", "api-key", "api_key", "private", "csrf", "xsrf", "hmac",
)
_SECRET_VALUE_PREFIXES: Final = ("bearer ", "basic ", "digest ", "token ")


def is_sensitive_header(name: str, value: str = "") -> bool:
    """True when a header (or query parameter) must never leave the request handler.

    A deny list wide enough to catch custom names (``X-Api-Key``, ``X-Auth-Token``,
    ``X-Shopify-Hmac-Signature``...) plus any value that looks like a credential.
    """
    lowered = name.strip().lower()
    if lowered in _SENSITIVE_NAMES or is_secret_key(lowered):
        return True
    if is_secret_key(lowered.replace("-", "_")):
        return True
    if any(part in lowered for part in _SENSITIVE_PARTS):
        return True
    if lowered.endswith(("-key", "_key")) and lowered != IDEMPOTENCY_HEADER:
        return True
    return value.strip().lower().startswith(_SECRET_VALUE_PREFIXES)


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers that may reach events and telemetry (names lower-cased, values capped)."""
    safe: dict[str, str] = {}
    for name, value in headers.items():
        if len(safe) >= MAX_SAFE_HEADERS:
            break
        if not is_sensitive_header(name, value):
            safe[name.lower()] = value[:MAX_HEADER_VALUE]
    return safe


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of an ``X-Hub-Signature-256`` header against ``body``."""
    if not header:
        return False
    expected = sign(secret, body).encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    """``path`` triggers ``entry_point``. Secrets are kept out of ``repr``."""

    path: str
    entry_point: str
    methods: tuple[str, ...] = ("POST",)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A checked request, already scrubbed: only safe headers and query parameters."""

    route: WebhookRoute
    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    payload: Any
    body_bytes: int
    idempotency_key: str | None = None
    traceparent: str | None = None
    correlation_id: str | None = None

    def as_input(self) -> dict[str, Any]:
        """The run's input: what the agent sees of the request."""
        return {"path": self.path, "method": self.method, "headers": self.headers,
                "query": self.query, "payload": self.payload}


Dispatch = Callable[[WebhookRequest], Awaitable[tuple[str, bool]]]
"""Triggers the run; returns ``(execution_id, replayed)``."""


class _Reply(Exception):
    """Ends request handling with an HTTP answer."""

    def __init__(self, status: int, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


class WebhookServer:
    """Routes ``path -> entry point`` over HTTP/1.1 on ``host`` (loopback by default).

    ``port=0`` picks a free port; :attr:`port` is the bound one after :meth:`start`.
    """

    def __init__(self, dispatch: Dispatch, *, bus: EventBus | None = None,
                 host: str = "127.0.0.1", port: int = 0,
                 max_body_bytes: int = DEFAULT_MAX_BODY,
                 max_header_bytes: int = DEFAULT_MAX_HEADER, read_timeout: float = 10.0,
                 max_connections: int = 64) -> None:
        if max_body_bytes < 0 or max_header_bytes < 1024 or read_timeout <= 0:
            raise ValueError("max_body_bytes >= 0, max_header_bytes >= 1024 and "
                             "read_timeout > 0 are required")
        self._dispatch = dispatch
        self._bus = bus
        self.host = host
        self._requested_port = port
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._routes: dict[str, WebhookRoute] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._port: int | None = None
        self.requests = 0
        self.accepted = 0
        self.replayed = 0
        self.by_status: dict[int, int] = {}

    # ----------------------------------------------------------------- set-up
    def add_route(self, route: WebhookRoute) -> None:
        if route.path in self._routes:
            raise ValueError(f"webhook path {route.path!r} is already routed to "
                             f"{self._routes[route.path].entry_point!r}")
        self._routes[route.path] = route

    @property
    def routes(self) -> tuple[WebhookRoute, ...]:
        return tuple(self._routes.values())

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

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self._requested_port, limit=self.max_header_bytes)
        self._port = int(self._server.sockets[0].getsockname()[1])
        logger.info("webhook server listening on %s:%s", self.host, self._port)

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, end open connections, bounded by ``timeout``."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout)

    def stats(self) -> dict[str, Any]:
        return {"port": self._port, "routes": len(self._routes), "requests": self.requests,
                "accepted": self.accepted, "replayed": self.replayed,
                "by_status": dict(sorted(self.by_status.items()))}

    # --------------------------------------------------------------- serving
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            reply: _Reply | None
            if len(self._connections) > self.max_connections:
                reply = _Reply(503, {"error": "too many connections"}, {"Retry-After": "1"})
            else:
                reply = await self._handle(reader, writer)
            if reply is not None:
                await self._send(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            logger.exception("webhook request failed")
            with contextlib.suppress(Exception):
                await self._send(writer, _Reply(500, {"error": "internal error"}))
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            if task is not None:
                self._connections.discard(task)

    async def _send(self, writer: asyncio.StreamWriter, reply: _Reply) -> None:
        self.by_status[reply.status] = self.by_status.get(reply.status, 0) + 1
        body = json.dumps(reply.body).encode()
        phrase = http.HTTPStatus(reply.status).phrase
        lines = [f"HTTP/1.1 {reply.status} {phrase}", "Content-Type: application/json",
                 f"Content-Length: {len(body)}", "Connection: close",
                 *(f"{k}: {v}" for k, v in reply.headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await asyncio.wait_for(writer.drain(), self.read_timeout)

    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> _Reply | None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
        except asyncio.LimitOverrunError:
            return _Reply(431, {"error": "request headers too large"})
        except (TimeoutError, asyncio.IncompleteReadError, ValueError):
            return None  # the client went away or never sent a request: nothing to answer
        self.requests += 1
        try:
            return await self._handle_request(head, reader, writer)
        except _Reply as reply:
            return reply

    async def _handle_request(self, head: bytes, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> _Reply:
        method, target, headers = _parse_head(head)
        split = urlsplit(target)
        route = self._routes.get(split.path)
        if route is None:
            raise _Reply(404, {"error": f"no webhook at {split.path!r}"})
        if method not in route.methods:
            raise _Reply(405, {"error": f"method {method} not allowed"},
                         {"Allow": ", ".join(route.methods)})
        if route.token is not None:
            expected = f"Bearer {route.token}".encode()
            given = headers.get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(expected, given):
                raise _Reply(401, {"error": "missing or wrong bearer token"},
                             {"WWW-Authenticate": "Bearer"})
        if "transfer-encoding" in headers:
            raise _Reply(411, {"error": "send a Content-Length (chunked bodies not accepted)"})
        length_text = headers.get("content-length")
        if length_text is None:
            raise _Reply(411, {"error": "Content-Length required"})
        if not length_text.isdigit():
            raise _Reply(400, {"error": "malformed Content-Length"})
        length = int(length_text)
        if length > self.max_body_bytes:
            raise _Reply(413, {"error": f"body over {self.max_body_bytes} bytes"})
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = await asyncio.wait_for(reader.readexactly(length), self.read_timeout)
        except TimeoutError:  # fewer bytes than Content-Length said: a client error
            raise _Reply(408, {"error": f"body of {length} bytes not received within "
                                        f"{self.read_timeout}s"}) from None
        if route.secret is not None and not verify_signature(
                route.secret, body, headers.get(SIGNATURE_HEADER)):
            raise _Reply(401, {"error": "missing or invalid X-Hub-Signature-256"})
        payload = _parse_json(body)
        request = WebhookRequest(
            route=route, method=method, path=split.path, headers=safe_headers(headers),
            query={k: v for k, v in parse_qsl(split.query) if not is_sensitive_header(k, v)},
            payload=payload, body_bytes=length,
            idempotency_key=headers.get(IDEMPOTENCY_HEADER) or None,
            traceparent=traceparent_from(headers),
            correlation_id=headers.get("x-correlation-id") or headers.get("x-request-id"),
        )
        try:
            execution_id, replayed = await self._dispatch(request)
        except ExecutionRejectedError as error:
            raise _Reply(429, {"error": str(error)}, {"Retry-After": "1"}) from None
        except RuntimeNotRunningError as error:
            raise _Reply(503, {"error": str(error)}) from None
        self.accepted += 1
        self.replayed += replayed
        if self._bus is not None and not self._bus.closed:
            self._bus.publish_nowait(Event(
                WEBHOOK_RECEIVED,
                {"entry_point": route.entry_point, "path": split.path, "method": method,
                 "headers": request.headers, "query": request.query,
                 "execution_id": execution_id, "replayed": replayed, "body_bytes": length,
                 "idempotency_key": request.idempotency_key},
                scope=Scope(stream_id=route.entry_point),
                source=Source("webhook", route.entry_point),
            ))
        reply_headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return _Reply(202, {"execution_id": execution_id, "replayed": replayed}, reply_headers)


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Request line and headers (names lower-cased; repeated ones joined with ", ")."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _Reply(400, {"error": "malformed request line"})
    method, target, _ = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or " " in name:
            raise _Reply(400, {"error": "malformed header line"})
        value = value.strip()
        if name in headers:
            if name == "content-length" and headers[name] != value:
                raise _Reply(400, {"error": "conflicting Content-Length headers"})
            if name != "content-length":
                headers[name] = f"{headers[name]}, {value}"
            continue
        headers[name] = value
    return method.upper(), target, headers


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise _Reply(400, {"error": "a JSON body is required"})
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise _Reply(400, {"error": f"malformed JSON: {error}"[:200]}) from None
