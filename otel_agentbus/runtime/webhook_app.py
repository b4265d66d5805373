"""The webhook ASGI app: HTTP requests on a path trigger an entry point.

A Starlette application, so it runs on the runtime's own Uvicorn listener
(:class:`~otel_agentbus.runtime.webhooks.WebhookServer`) or mounted into an existing
ASGI application (``app.mount("/hooks", runtime.webhook_app())``). Routes match the
path below the mount point first, then the full path, so a route ``/hooks/tickets`` is
reached at the same URL whether served alone or mounted at ``/hooks``.

Checks, in order: unknown path 404, wrong method 405, bearer token 401, no
``Content-Length`` 411, a body over ``max_body_bytes`` 413 (answered from the header, the
body is never read), a body not received within ``read_timeout`` 408, signature 401
(a Standard Webhooks timestamp outside the tolerance too), a Standard Webhooks id already
received 409, malformed JSON 400; then the entry point is triggered and the answer is 202
``{"execution_id": ...}`` at once, without waiting for the run. A full entry point queue
answers 429, a stopped runtime 503.

Secrets stay out: credentials, cookies, signatures and anything secret-looking in header
or query names are dropped before the request reaches an event, a run input or a span.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..bus import EventBus
from ..events import Event, Source
from ..events import Scope as EventScope
from ..kinds import WEBHOOK_RECEIVED
from ..payload import is_secret_key
from ..tracecontext import traceparent_from
from .execution import ExecutionRejectedError, RuntimeNotRunningError
from .webhook_signatures import (
    DEFAULT_MAX_REMEMBERED,
    DEFAULT_TOLERANCE,
    GITHUB_HEADER,
    SCHEMES,
    Refusal,
    ReplayGuard,
    Scheme,
    Signed,
    is_standard_secret,
    secret_key,
    verify_signature,
    verify_standard,
)

logger = logging.getLogger("otel_agentbus.runtime.webhooks")

DEFAULT_MAX_BODY: Final = 1024 * 1024
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
_ALL_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


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


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    """``path`` triggers ``entry_point``. Secrets are kept out of ``repr``.

    ``signature`` picks the scheme a ``secret`` is checked with: ``"standard"`` (Standard
    Webhooks: id, timestamp and body signed, replays refused) or ``"github"``
    (``X-Hub-Signature-256``, body only: cannot stop a replay). Left ``None``, a
    ``whsec_`` secret means ``"standard"`` and any other secret ``"github"`` (what every
    route did before Standard Webhooks support, so existing configurations keep working).
    """

    path: str
    entry_point: str
    methods: tuple[str, ...] = ("POST",)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    signature: Scheme | None = None
    tolerance: float = DEFAULT_TOLERANCE
    """Standard Webhooks: how far ``webhook-timestamp`` may be from now, in seconds."""

    @property
    def scheme(self) -> Scheme | None:
        """The signature scheme in force (``None``: the route is not signed)."""
        if self.secret is None:
            return None
        if self.signature is not None:
            return self.signature
        return "standard" if is_standard_secret(self.secret) else "github"

    def check(self) -> None:
        """A clear error for a route that cannot work."""
        if self.signature is not None and self.signature not in SCHEMES:
            raise ValueError(f"webhook route {self.path!r}: signature must be one of "
                             f"{list(SCHEMES)}, got {self.signature!r}")
        if self.signature is not None and self.secret is None:
            raise ValueError(f"webhook route {self.path!r}: signature={self.signature!r} "
                             "needs a secret")
        if not self.tolerance > 0:
            raise ValueError(f"webhook route {self.path!r}: tolerance must be > 0 seconds")
        if self.scheme == "standard" and self.secret is not None:
            try:
                secret_key(self.secret)
            except ValueError as error:
                raise ValueError(f"webhook route {self.path!r}: {error}") from None


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


@dataclass(slots=True)
class _Guarded:
    """A route's replay memory and its HMAC key, made once per route."""

    key: bytes
    guard: ReplayGuard


class WebhookApp:
    """The ASGI application of a set of webhook routes (see the module docstring).

    ``clock`` is the wall clock Standard Webhooks timestamps are compared with.
    """

    def __init__(self, dispatch: Dispatch, *, bus: EventBus | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY, read_timeout: float = 10.0,
                 max_remembered_ids: int = DEFAULT_MAX_REMEMBERED,
                 clock: Callable[[], float] = time.time) -> None:
        if max_body_bytes < 0 or read_timeout <= 0 or max_remembered_ids < 1:
            raise ValueError("max_body_bytes >= 0, read_timeout > 0 and "
                             "max_remembered_ids >= 1 are required")
        self._dispatch = dispatch
        self._bus = bus
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.max_remembered_ids = max_remembered_ids
        self._clock = clock
        self._routes: dict[str, WebhookRoute] = {}
        self._guards: dict[str, _Guarded] = {}
        self.requests = 0
        self.accepted = 0
        self.replayed = 0
        self.disconnects = 0
        self.by_status: dict[int, int] = {}
        self.refused: dict[str, int] = {}
        self._asgi = Starlette(routes=[Route("/{path:path}", self._endpoint,
                                             methods=_ALL_METHODS)])

    # ----------------------------------------------------------------- set-up
    def add_route(self, route: WebhookRoute) -> None:
        if route.path in self._routes:
            raise ValueError(f"webhook path {route.path!r} is already routed to "
                             f"{self._routes[route.path].entry_point!r}")
        route.check()
        self._routes[route.path] = route
        if route.scheme == "standard" and route.secret is not None:
            self._guards[route.path] = _Guarded(
                secret_key(route.secret),
                ReplayGuard(route.tolerance, self.max_remembered_ids, self._clock))
        elif route.scheme == "github" and route.signature is None:
            logger.warning(
                "webhook %s: a plain secret means GitHub's X-Hub-Signature-256, which signs "
                "the body only and cannot stop a replay; use a whsec_ secret for Standard "
                "Webhooks, or signature='github' to choose it explicitly", route.path)

    def remove_entry_point(self, entry_point: str) -> None:
        """Drop the routes of an unregistered entry point."""
        for path, route in list(self._routes.items()):
            if route.entry_point == entry_point:
                del self._routes[path]
                self._guards.pop(path, None)

    @property
    def routes(self) -> tuple[WebhookRoute, ...]:
        return tuple(self._routes.values())

    def has_route(self, path: str) -> bool:
        return path in self._routes

    def remembered_ids(self, path: str) -> int:
        """How many Standard Webhooks ids the route at ``path`` remembers now."""
        guarded = self._guards.get(path)
        return len(guarded.guard) if guarded is not None else 0

    def stats(self) -> dict[str, Any]:
        return {"routes": len(self._routes), "requests": self.requests,
                "accepted": self.accepted, "replayed": self.replayed,
                "disconnects": self.disconnects, "refused": dict(sorted(self.refused.items())),
                "by_status": dict(sorted(self.by_status.items()))}

    def count_status(self, status: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def note_disconnect(self, when: str) -> None:
        """A client hung up: one counted debug line, never a traceback."""
        self.disconnects += 1
        logger.debug("webhook client disconnected %s (%d so far)", when, self.disconnects)

    # --------------------------------------------------------------- serving
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)

    async def _endpoint(self, request: Request) -> JSONResponse:
        self.requests += 1
        try:
            reply = await self._handle(request)
        except _Reply as raised:
            reply = raised
        except ClientDisconnect:
            self.note_disconnect("while sending the body")
            # Nobody reads this answer (the server drops it); Starlette wants one.
            return JSONResponse({"error": "client disconnected"}, 400,
                                {"Connection": "close"})
        except Exception:
            logger.exception("webhook request failed")
            reply = _Reply(500, {"error": "internal error"})
        self.count_status(reply.status)
        headers = dict(reply.headers)
        if reply.status >= 400:
            headers["Connection"] = "close"  # a body may be left unread: end the connection
        return JSONResponse(reply.body, reply.status, headers)

    def _route_of(self, scope: Scope) -> tuple[WebhookRoute | None, str]:
        full = str(scope["path"])
        root = str(scope.get("root_path", ""))
        below = full[len(root):] if root and full.startswith(root) else full
        for path in (below or "/", full):
            route = self._routes.get(path)
            if route is not None:
                return route, path
        return None, below or "/"

    async def _handle(self, request: Request) -> _Reply:
        route, path = self._route_of(request.scope)
        method = request.method.upper()
        if route is None:
            raise _Reply(404, {"error": f"no webhook at {path!r}"})
        if method not in route.methods:
            raise _Reply(405, {"error": f"method {method} not allowed"},
                         {"Allow": ", ".join(route.methods)})
        headers = {name.lower(): value for name, value in request.headers.items()}
        if route.token is not None:
            expected = f"Bearer {route.token}".encode()
            given = headers.get("authorization", "").encode("utf-8", "replace")
            if not hmac.compare_digest(expected, given):
                raise _Reply(401, {"error": "missing or wrong bearer token"},
                             {"WWW-Authenticate": "Bearer"})
        body = await self._read_body(headers, request)
        signed = self._check_signature(route, headers, body)
        try:
            return await self._accept(route, path, method, request, headers, body)
        except BaseException:
            if signed is not None:
                self._guards[route.path].guard.release(signed)
            raise

    async def _read_body(self, headers: Mapping[str, str], request: Request) -> bytes:
        if "transfer-encoding" in headers:
            raise _Reply(411, {"error": "send a Content-Length (chunked bodies not accepted)"})
        length_text = headers.get("content-length")
        if length_text is None:
            raise _Reply(411, {"error": "Content-Length required"})
        if not length_text.isascii() or not length_text.isdigit():
            raise _Reply(400, {"error": "malformed Content-Length"})
        length = int(length_text)
        if length > self.max_body_bytes:
            raise _Reply(413, {"error": f"body over {self.max_body_bytes} bytes"})
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(self.read_timeout):
                async for chunk in request.stream():
                    received += len(chunk)
                    if received > length:
                        raise _Reply(400, {"error": "body longer than Content-Length"})
                    chunks.append(chunk)
        except TimeoutError:  # fewer bytes than Content-Length said: a client error
            raise _Reply(408, {"error": f"body of {length} bytes not received within "
                                        f"{self.read_timeout}s"}) from None
        if received < length:
            raise ClientDisconnect()
        return b"".join(chunks)

    def _refuse(self, reason: str, status: int, message: str,
                headers: dict[str, str] | None = None) -> _Reply:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return _Reply(status, {"error": message}, headers)

    def _check_signature(self, route: WebhookRoute, headers: Mapping[str, str],
                         body: bytes) -> Signed | None:
        """The Standard Webhooks reservation to release if the request fails later."""
        scheme = route.scheme
        if scheme is None or route.secret is None:
            return None
        if scheme == "github":
            if not verify_signature(route.secret, body, headers.get(GITHUB_HEADER)):
                raise self._refuse("signature", 401,
                                   "missing or invalid X-Hub-Signature-256")
            return None
        guarded = self._guards[route.path]
        verdict = verify_standard(guarded.key, headers, body, now=self._clock(),
                                  tolerance=route.tolerance)
        if isinstance(verdict, Refusal):
            reason = "stale" if verdict is Refusal.STALE else "signature"
            raise self._refuse(reason, 401, verdict.value)
        refusal = guarded.guard.reserve(verdict)
        if refusal is Refusal.REPLAY:
            logger.info("webhook %s: refused a replay of id %r", route.path, verdict.msg_id)
            raise self._refuse("replay", 409, refusal.value)
        if refusal is not None:
            raise self._refuse("memory_full", 503, refusal.value, {"Retry-After": "1"})
        return verdict

    async def _accept(self, route: WebhookRoute, path: str, method: str, request: Request,
                      headers: dict[str, str], body: bytes) -> _Reply:
        payload = _parse_json(body)
        webhook_request = WebhookRequest(
            route=route, method=method, path=path, headers=safe_headers(headers),
            query={k: v for k, v in request.query_params.multi_items()
                   if not is_sensitive_header(k, v)},
            payload=payload, body_bytes=len(body),
            idempotency_key=headers.get(IDEMPOTENCY_HEADER) or None,
            traceparent=traceparent_from(headers),
            correlation_id=headers.get("x-correlation-id") or headers.get("x-request-id"),
        )
        try:
            execution_id, replayed = await self._dispatch(webhook_request)
        except ExecutionRejectedError as error:
            raise _Reply(429, {"error": str(error)}, {"Retry-After": "1"}) from None
        except RuntimeNotRunningError as error:
            raise _Reply(503, {"error": str(error)}) from None
        self.accepted += 1
        self.replayed += replayed
        if self._bus is not None and not self._bus.closed:
            self._bus.publish_nowait(Event(
                WEBHOOK_RECEIVED,
                {"entry_point": route.entry_point, "path": path, "method": method,
                 "headers": webhook_request.headers, "query": webhook_request.query,
                 "execution_id": execution_id, "replayed": replayed,
                 "body_bytes": len(body), "idempotency_key": webhook_request.idempotency_key},
                scope=EventScope(stream_id=route.entry_point),
                source=Source("webhook", route.entry_point),
            ))
        reply_headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return _Reply(202, {"execution_id": execution_id, "replayed": replayed}, reply_headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise _Reply(400, {"error": "a JSON body is required"})
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise _Reply(400, {"error": f"malformed JSON: {error}"[:200]}) from None
