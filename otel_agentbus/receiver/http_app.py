"""The OTLP/HTTP endpoint as a Starlette application.

Serves ``POST /v1/traces|metrics|logs`` with binary protobuf or OTLP/JSON bodies
(optionally gzip/deflate encoded) and answers in the request's encoding, errors included
(a ``google.rpc.Status``, as the OTLP spec asks). Decoding and storing run on a small
thread pool, so the event loop keeps reading other connections meanwhile; a client gone
before its answer is one counted debug line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Executor
from http import HTTPStatus
from typing import Final

from google.protobuf.message import Message  # type: ignore[import-untyped]
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message as ASGIMessage
from starlette.types import Receive, Scope, Send

from .auth import bearer_matches
from .convert import MalformedRequest
from .decompress import (
    BadEncoding,
    DecompressLimits,
    TooLarge,
    UnsupportedEncoding,
    check_encoding,
    decompress,
)
from .ingest import SIGNAL_BY_PATH, Ingest, Signal
from .limits import HTTPLimits, LimitExceeded
from .otlp_json import parse_json, to_json
from .store import STORAGE_FULL_MESSAGE, StorageFull

log = logging.getLogger(__name__)

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
DRAIN_LIMIT: Final = 64 * 1024 * 1024
"""Unread bodies of rejected requests up to this size are read and dropped by the server
to keep the connection; a larger (or chunked) one closes it."""
_METHODS: Final = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]

# gRPC status codes carried in the error body, by HTTP status.
_GRPC_CODES: Final[dict[int, int]] = {
    400: 3,
    401: 16,
    404: 5,
    405: 12,
    408: 4,
    411: 3,
    413: 8,
    507: 8,  # RESOURCE_EXHAUSTED: the database or the disk is full
    415: 3,
    500: 13,
}


class HTTPError(Exception):
    """A request refused with ``status``; ``close`` drops the connection after answering
    (the body is unread and too large to drain, or unreadable)."""

    def __init__(self, status: HTTPStatus, message: str, *, close: bool = False,
                 over_limit: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.over_limit = over_limit


def _disconnected(watch: asyncio.Future[ASGIMessage]) -> bool:
    """Whether a pending ``receive()`` ended with the client's disconnect."""
    if not watch.done() or watch.cancelled() or watch.exception() is not None:
        return False
    return bool(watch.result().get("type") == "http.disconnect")


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


class OTLPHTTPApp:
    """ASGI application of the OTLP/HTTP endpoint; mountable, or served by
    :class:`~.http_server.OTLPHTTPServer`."""

    def __init__(self, ingest: Ingest, *, token: str | None, max_body: int,
                 limits: HTTPLimits, executor: Executor) -> None:
        self.ingest = ingest
        self.token = token
        self.max_body = max_body
        self.limits = limits
        self.decompress_limits = DecompressLimits(max_output=max_body)
        self._executor = executor
        self._in_flight = 0
        self._idle = threading.Condition()
        self._app = Starlette(routes=[Route("/{path:path}", self._handle, methods=_METHODS)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    # ---- one request ---------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        content_type = _media_type(request.headers.get("content-type"))
        # Errors are answered in the request's encoding when it is one we speak.
        response_type = content_type if content_type == PROTOBUF else JSON
        consumed = False
        try:
            signal = self._signal(request)
            self._check_auth(request)
            if content_type not in (PROTOBUF, JSON):
                raise HTTPError(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    f"Content-Type must be {PROTOBUF} or {JSON}, got {content_type or 'none'!r}",
                )
            encoding = request.headers.get("content-encoding", "").strip().lower()
            try:
                check_encoding(encoding)
            except UnsupportedEncoding as exc:
                raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(exc)) from None
            body = await self._read_body(request)
            consumed = True
            # Waiting for the next message keeps the connection read while we store, so a
            # client that gives up meanwhile is seen (the server pauses reading otherwise).
            watch = asyncio.ensure_future(request.receive())
            try:
                answer = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._store, signal, content_type, encoding, body
                )
            finally:
                gone = _disconnected(watch)
                watch.cancel()
        except HTTPError as exc:
            return self._reject(request, exc, response_type, consumed)
        except ClientDisconnect:
            self._gone(request, "while sending its body")
            return Response(status_code=HTTPStatus.BAD_REQUEST)
        if gone:
            self._gone(request, "before its answer (the export was stored)")
        return self._respond(HTTPStatus.OK, answer, response_type)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for stores in progress, so the database is not closed
        under one; False if one is still running."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _store(self, signal: Signal, content_type: str, encoding: str, body: bytes) -> Message:
        """Decompress, decode and store (on the executor); errors become HTTPError."""
        with self._idle:
            self._in_flight += 1
        try:
            return self._decode_and_store(signal, content_type, encoding, body)
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def _decode_and_store(self, signal: Signal, content_type: str, encoding: str,
                          body: bytes) -> Message:
        try:
            data = decompress(body, encoding, self.decompress_limits)
            if content_type == PROTOBUF:
                return self.ingest.export_protobuf(signal, data)
            max_nodes = self.ingest.limits.max_json_nodes
            return self.ingest.export(signal, parse_json(signal, data, max_nodes))
        except (TooLarge, LimitExceeded) as exc:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc),
                            over_limit=True) from None
        except (BadEncoding, MalformedRequest) as exc:
            raise HTTPError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except StorageFull:
            raise HTTPError(HTTPStatus.INSUFFICIENT_STORAGE, STORAGE_FULL_MESSAGE) from None
        except Exception as exc:
            log.exception("failed to store OTLP/HTTP request")
            raise HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc}") from None

    # ---- steps ---------------------------------------------------------------------

    def _signal(self, request: Request) -> Signal:
        path = request.url.path
        signal = SIGNAL_BY_PATH.get(path)
        if signal is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"unknown path {path!r}")
        if request.method != "POST":
            raise HTTPError(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} not allowed; use POST"
            )
        return signal

    def _check_auth(self, request: Request) -> None:
        if self.token is None:
            return
        if not bearer_matches(request.headers.get("authorization", ""), self.token):
            raise HTTPError(HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token")

    async def _read_body(self, request: Request) -> bytes:
        """The whole body, within ``max_body`` bytes and ``body_timeout`` seconds."""
        limit = self.max_body
        raw_length = request.headers.get("content-length")
        chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
        if raw_length is None and not chunked:
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required", close=True)
        if raw_length is not None and int(raw_length) > limit:  # h11 checked it is a number
            raise HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {raw_length} bytes exceeds {limit}",
                close=int(raw_length) > DRAIN_LIMIT,
            )
        body = bytearray()
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        raise HTTPError(
                            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"body exceeds {limit} bytes",
                            close=True,
                        )
        except TimeoutError:
            raise HTTPError(
                HTTPStatus.REQUEST_TIMEOUT,
                f"body not received within {self.limits.body_timeout:g} s",
                close=True,
            ) from None
        return bytes(body)

    # ---- answers -------------------------------------------------------------------

    def _gone(self, request: Request, when: str) -> None:
        self.ingest.disconnected()
        client = request.client
        log.debug("client %s disconnected %s", client.host if client else "?", when)

    def _reject(self, request: Request, exc: HTTPError, response_type: str,
                consumed: bool) -> Response:
        if exc.over_limit:
            self.ingest.over_limit()
        else:
            self.ingest.rejected()
        log.info("rejected %s %s: %d %s", request.method, request.url.path, exc.status,
                 exc.message)
        headers: dict[str, str] = {}
        if exc.status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = 'Bearer realm="otel-agentbus"'
        if exc.status == HTTPStatus.METHOD_NOT_ALLOWED:
            headers["Allow"] = "POST"
        if exc.close or (not consumed and self._unread_too_large(request)):
            headers["Connection"] = "close"
        status = Status(code=_GRPC_CODES.get(exc.status, 2), message=exc.message)
        return self._respond(exc.status, status, response_type, headers)

    @staticmethod
    def _unread_too_large(request: Request) -> bool:
        """Whether the server would have to drain more than DRAIN_LIMIT (or an unknown
        amount) of unread body to keep the connection."""
        if "chunked" in request.headers.get("transfer-encoding", "").lower():
            return True
        try:
            return int(request.headers.get("content-length") or 0) > DRAIN_LIMIT
        except ValueError:
            return True

    @staticmethod
    def _respond(status: int, message: Message, response_type: str,
                 headers: dict[str, str] | None = None) -> Response:
        """Answer with ``message`` in ``response_type`` (binary protobuf or OTLP/JSON),
        the one encoding rule for successes and errors alike."""
        body = message.SerializeToString() if response_type == PROTOBUF else to_json(message)
        return Response(body, status_code=status, headers=headers, media_type=response_type)
