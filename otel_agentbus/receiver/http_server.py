"""OTLP/HTTP endpoint on the standard library's ThreadingHTTPServer.

Serves ``POST /v1/traces|metrics|logs`` with binary protobuf or OTLP/JSON
bodies (optionally gzip/deflate encoded) and answers in the request's encoding,
errors included (a ``google.rpc.Status``, as the OTLP spec asks).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, cast

from google.protobuf.message import Message  # type: ignore[import-untyped]
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]

from .auth import bearer_matches
from .convert import MalformedRequest
from .ingest import SIGNAL_BY_PATH, Ingest, Signal
from .otlp_json import parse_json, to_json
from .store import STORAGE_FULL_MESSAGE, StorageFull

log = logging.getLogger(__name__)

PROTOBUF: Final = "application/x-protobuf"
JSON: Final = "application/json"
_DRAIN_LIMIT: Final = 64 * 1024 * 1024
"""Bodies of rejected requests up to this size are read and dropped to keep the connection."""

# gRPC status codes carried in the error body, by HTTP status.
_GRPC_CODES: Final[dict[int, int]] = {
    400: 3,
    401: 16,
    404: 5,
    405: 12,
    411: 3,
    413: 8,
    415: 3,
    500: 13,
    507: 8,  # RESOURCE_EXHAUSTED: the database or the disk is full
}
_IDENTITY: Final = ("", "identity")
_WINDOW_BITS: Final = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}
"""zlib's ``wbits`` for each compressed Content-Encoding we accept."""


class _HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str, *, drain: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.drain = drain


class OTLPHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer carrying the receiver state its handlers need."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        ingest: Ingest,
        *,
        token: str | None,
        max_body: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.ingest = ingest
        self.token = token
        self.max_body = max_body
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)
        if ssl_context is not None:
            # The handshake runs on the connection's own thread (on its first read, under
            # the handler's timeout), so a slow client cannot stall accept().
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Drop idle keep-alive connections so stopping does not wait on clients."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _check_encoding(encoding: str) -> None:
    """Refuse a Content-Encoding we cannot undo; checked before the body is read, so the
    unread body is drained and the connection kept."""
    if encoding not in _IDENTITY and encoding not in _WINDOW_BITS:
        raise _HTTPError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Encoding {encoding!r}"
        )


def _decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding without ever inflating past ``limit`` bytes."""
    if encoding in _IDENTITY:
        return data
    _check_encoding(encoding)
    wbits = _WINDOW_BITS[encoding]
    out = bytearray()
    remaining = data
    try:
        while True:  # gzip allows several concatenated members
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(remaining, limit + 1 - len(out))
            if len(out) > limit:
                raise _HTTPError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"decompressed body exceeds {limit} bytes",
                )
            if not inflater.eof:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, f"truncated {encoding} body")
            remaining = inflater.unused_data
            if not remaining:
                return bytes(out)
    except zlib.error as exc:
        raise _HTTPError(HTTPStatus.BAD_REQUEST, f"invalid {encoding} body: {exc}") from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "otel-agentbus-receiver"
    timeout = 60  # idle keep-alive connections give up eventually

    @property
    def _server(self) -> OTLPHTTPServer:
        return cast(OTLPHTTPServer, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - " + format, self.address_string(), *args)

    # ---- dispatch -------------------------------------------------------

    _body_consumed = False

    def do_POST(self) -> None:
        self._body_consumed = False
        content_type = _media_type(self.headers.get("Content-Type"))
        # Errors are answered in the request's encoding when it is one we speak.
        response_type = content_type if content_type == PROTOBUF else JSON
        try:
            signal = self._signal()
            self._check_auth()
            if content_type not in (PROTOBUF, JSON):
                raise _HTTPError(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    f"Content-Type must be {PROTOBUF} or {JSON}, got {content_type or 'none'!r}",
                )
            encoding = self.headers.get("Content-Encoding", "").strip().lower()
            _check_encoding(encoding)
            body = self._read_body()
            self._body_consumed = True
            body = _decompress(body, encoding, self._server.max_body)
            try:
                if content_type == PROTOBUF:
                    response = self._server.ingest.export_protobuf(signal, body)
                else:
                    response = self._server.ingest.export(signal, parse_json(signal, body))
            except MalformedRequest as exc:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, str(exc)) from None
            except StorageFull:
                raise _HTTPError(HTTPStatus.INSUFFICIENT_STORAGE, STORAGE_FULL_MESSAGE) from None
        except _HTTPError as exc:
            self._reject(exc, response_type)
            return
        except Exception as exc:
            log.exception("failed to store OTLP/HTTP request")
            self._reject(
                _HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {exc}"),
                response_type,
            )
            return
        self._respond(HTTPStatus.OK, response, response_type)

    def _not_post(self) -> None:
        self._body_consumed = False
        try:
            self._signal()
            raise _HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} not allowed; use POST")
        except _HTTPError as exc:
            self._reject(exc, JSON)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _not_post

    # ---- steps ----------------------------------------------------------

    def _signal(self) -> Signal:
        path = self.path.split("?", 1)[0]
        signal = SIGNAL_BY_PATH.get(path)
        if signal is None:
            raise _HTTPError(HTTPStatus.NOT_FOUND, f"unknown path {path!r}")
        return signal

    def _check_auth(self) -> None:
        token = self._server.token
        if token is None:
            return
        if not bearer_matches(self.headers.get("Authorization", ""), token):
            raise _HTTPError(HTTPStatus.UNAUTHORIZED, "missing or invalid bearer token")

    def _chunked(self) -> bool:
        """A chunked body has no Content-Length: read it by chunks, or close to drop it."""
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _read_body(self) -> bytes:
        limit = self._server.max_body
        if self._chunked():
            return self._read_chunked(limit)
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise _HTTPError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required", drain=False)
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError(raw_length)
        except ValueError:
            raise _HTTPError(
                HTTPStatus.BAD_REQUEST, f"bad Content-Length {raw_length!r}", drain=False
            ) from None
        if length > limit:
            raise _HTTPError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes exceeds {limit}"
            )
        data = self.rfile.read(length)
        if len(data) != length:
            raise _HTTPError(HTTPStatus.BAD_REQUEST, "truncated body", drain=False)
        return data

    def _read_chunked(self, limit: int) -> bytes:
        out = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, "bad chunk size", drain=False) from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            if len(out) + size > limit:
                raise _HTTPError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body exceeds {limit} bytes", drain=False
                )
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise _HTTPError(HTTPStatus.BAD_REQUEST, "truncated chunk", drain=False)
            out += chunk
            self.rfile.readline(1024)

    # ---- responses ------------------------------------------------------

    def _drain(self, exc: _HTTPError) -> None:
        """Read and drop an unread body so the client sees our answer, or close."""
        if not exc.drain or self.command == "HEAD":
            self.close_connection = True
            return
        if self._chunked():
            self.close_connection = True
            return
        try:
            remaining = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            remaining = -1
        if remaining < 0 or remaining > _DRAIN_LIMIT:
            self.close_connection = True
            return
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            remaining -= len(chunk)

    def _reject(self, exc: _HTTPError, response_type: str) -> None:
        self._server.ingest.rejected()
        log.info("rejected %s %s: %d %s", self.command, self.path, exc.status, exc.message)
        if not self._body_consumed:
            self._drain(exc)
        status = Status(code=_GRPC_CODES.get(exc.status, 2), message=exc.message)
        headers: dict[str, str] = {}
        if exc.status == HTTPStatus.UNAUTHORIZED:
            headers["WWW-Authenticate"] = 'Bearer realm="otel-agentbus"'
        if exc.status == HTTPStatus.METHOD_NOT_ALLOWED:
            headers["Allow"] = "POST"
        self._respond(exc.status, status, response_type, headers)

    def _respond(
        self,
        status: HTTPStatus,
        message: Message,
        response_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer with ``message`` in ``response_type`` (binary protobuf or OTLP/JSON),
        the one encoding rule for successes and errors alike."""
        body = message.SerializeToString() if response_type == PROTOBUF else to_json(message)
        self._send(status, body, response_type, headers)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
