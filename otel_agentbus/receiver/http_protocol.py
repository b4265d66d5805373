"""Uvicorn's h11 protocol with the limits the OTLP/HTTP listener needs on every connection.

Uvicorn times out idle keep-alive connections, but not a client that connects and never
finishes its request line and headers, and its ``limit_concurrency`` accepts each extra
connection (holding a descriptor) to answer 503 only once a request arrives. Here, per
connection: a cap on open connections checked on arrival (past it, a short 503 and
close), a deadline for the headers of each request, and uvicorn's own 400 for a malformed
request answered as a ``google.rpc.Status`` like every other error of the receiver.

Built on uvicorn's ``H11Protocol`` hooks (``connection_made``, ``on_response_complete``,
``send_400_response``), which the pinned range keeps.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from uvicorn.protocols.http.h11_impl import H11Protocol

from .ingest import Ingest
from .limits import HTTPLimits
from .otlp_json import to_json

log = logging.getLogger(__name__)

_UNAVAILABLE: Final = 14  # gRPC code for 503
_INVALID: Final = 3  # gRPC code for 400


def _raw_response(status: int, reason: str, code: int, message: str) -> bytes:
    """A whole HTTP/1.1 response closing the connection, with a JSON Status body."""
    body = to_json(Status(code=code, message=message))
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode("ascii") + b"\r\n" + body


def protocol_class(limits: HTTPLimits, ingest: Ingest) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass bound to one listener's limits and counters."""
    refusal = _raw_response(
        503, "Service Unavailable", _UNAVAILABLE,
        f"connection limit of {limits.max_connections} reached; retry later",
    )

    class LimitedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _refused = False

        def connection_made(self, transport: Any) -> None:
            # ``connections`` is the server's set of open connections, this one not yet in.
            if len(self.connections) >= limits.max_connections:
                ingest.refused_connection()
                log.debug("connection refused: %d open", len(self.connections))
                transport.write(refusal)
                transport.close()
                self.transport = transport
                self._refused = True
                return
            self._refused = False
            super().connection_made(transport)
            self._arm_header_timer(limits.header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            if self._refused:
                return
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # The next request's headers are due within the idle time plus the header time
            # (unless a pipelined request already started).
            if not self.transport.is_closing() and self.cycle.response_complete:
                self._arm_header_timer(limits.idle_timeout + limits.header_timeout)

        def send_400_response(self, msg: str) -> None:
            ingest.rejected()
            log.debug("malformed HTTP request: %s", msg)
            self.transport.write(_raw_response(400, "Bad Request", _INVALID, msg))
            self.transport.close()

        def shutdown(self) -> None:
            if self._refused:
                return
            super().shutdown()

        # ---- the header deadline ---------------------------------------------------

        def _arm_header_timer(self, delay: float) -> None:
            self._cancel_header_timer()
            waiting_for = self.cycle  # a new request replaces the cycle
            self._header_timer = self.loop.call_later(delay, self._header_deadline, waiting_for)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline(self, waiting_for: Any) -> None:
            self._header_timer = None
            idle = waiting_for is None or waiting_for.response_complete
            if self.cycle is waiting_for and idle and not self.transport.is_closing():
                log.debug("closing a connection: no request headers in time")
                self.transport.close()

    return LimitedH11Protocol
