"""The OTLP/HTTP listener: :class:`~.http_app.OTLPHTTPApp` (and the web view) served by
Uvicorn on a thread (:class:`ServerThread`).

The socket is bound in the constructor (so a bind error surfaces in ``Receiver.start()``
and port 0 resolves at once); Uvicorn runs on its own event loop in a daemon thread of the
receiver's process. Stopping is bounded: in-flight requests get ``grace`` seconds, then
every connection still open is dropped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import resource
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from .http_app import OTLPHTTPApp
from .http_protocol import protocol_class
from .ingest import Ingest
from .limits import HTTPLimits
from .tls import TLSFiles

log = logging.getLogger(__name__)

_BACKLOG: Final = 1024
LOGIN_PATH: Final = "/login"
"""The web view's one POST route (it trades the token for a session cookie)."""
_STORE_THREADS: Final = 4
_RESERVED_FDS: Final = 64


def bind_listener(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def connection_cap(limits: HTTPLimits) -> HTTPLimits:
    """``limits`` with the connection cap lowered to half the descriptors this process may
    still open (less a reserve), so HTTP clients alone cannot exhaust them: gRPC, SQLite
    and the accept loop keep theirs."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits
    room = max(1, (soft - _RESERVED_FDS) // 2)
    if room >= limits.max_connections:
        return limits
    log.info("OTLP/HTTP: at most %d connections (descriptor limit %d)", room, soft)
    return dataclasses.replace(limits, max_connections=room)


def _loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Out of descriptors, asyncio stops accepting for a second and reports it: one line,
    not a traceback a second."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
        log.warning("OTLP/HTTP: %s (%s); accepting again in 1 s", context["message"], exc)
        return
    loop.default_exception_handler(context)


class _Listener:
    """One listener, two applications. The web view gets what a browser sends it: GET and
    HEAD outside ``/v1/``, and its login form; everything else is OTLP's, which answers
    an unknown path or method as the OTLP spec asks (404/405 with a ``google.rpc.Status``),
    with or without the web view."""

    def __init__(self, otlp: OTLPHTTPApp, web: ASGIApp | None) -> None:
        self.otlp = otlp
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.web is not None and _for_web(scope):
            await self.web(scope, receive, send)
        else:
            await self.otlp(scope, receive, send)


def _for_web(scope: Scope) -> bool:
    path, method = str(scope.get("path", "")), scope.get("method", "")
    if method in ("GET", "HEAD"):
        return not path.startswith("/v1/")
    return method == "POST" and path == LOGIN_PATH


class OTLPHTTPServer:
    """Binds ``address`` at once; :meth:`start` serves, :meth:`stop` ends it (bounded)."""

    def __init__(
        self,
        address: tuple[str, int],
        ingest: Ingest,
        *,
        token: str | None,
        max_body: int,
        limits: HTTPLimits | None = None,
        tls: TLSFiles | None = None,
        web: ASGIApp | None = None,
    ) -> None:
        self.limits = connection_cap(limits or HTTPLimits())
        self._socket = bind_listener(*address)
        self.server_address: tuple[str, int] = self._socket.getsockname()[:2]
        self._executor = ThreadPoolExecutor(_STORE_THREADS, thread_name_prefix="otlp-http")
        self.app = OTLPHTTPApp(ingest, token=token, max_body=max_body, limits=self.limits,
                               executor=self._executor)
        config = uvicorn.Config(
            _Listener(self.app, web),
            http=protocol_class(self.limits, ingest),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=max(1, math.ceil(self.limits.idle_timeout)),
            timeout_graceful_shutdown=1,
            h11_max_incomplete_event_size=self.limits.max_header_bytes,
            backlog=_BACKLOG,
            # Uvicorn wraps the socket we pass in with a context of its own from these files.
            ssl_certfile=None if tls is None else str(tls.cert_file),
            ssl_keyfile=None if tls is None else str(tls.key_file),
        )
        self._serving = ServerThread(uvicorn.Server(config), self._socket, "OTLP/HTTP server")

    def start(self) -> None:
        """Serve on a daemon thread; returns once connections are accepted."""
        self._serving.start()

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting; in-flight requests get ``grace`` s (None: 5 s), then every
        connection still open is dropped. Returns within about ``grace`` + 1 s."""
        self._serving.stop(5.0 if grace is None else max(0.0, grace))
        self._executor.shutdown(wait=False, cancel_futures=True)
        if not self.app.wait_idle(5.0):
            log.warning("OTLP/HTTP: a request was still being stored when the server stopped")


class ServerThread:
    """A Uvicorn server on a daemon thread and an event loop of its own, serving a socket
    bound beforehand (so a bind error surfaces in the caller, and port 0 resolves at
    once). Stopping is bounded: in-flight requests get a grace period, then every
    connection still open is dropped. The receiver's listener and ``otel-agentbus web``
    both run on it."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, label: str) -> None:
        self._server = server
        self._socket = sock
        self._label = label
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Serve; returns once connections are accepted."""
        thread = threading.Thread(target=self._run, name=self._label, daemon=True)
        thread.start()
        self._thread = thread
        while not self._server.started:
            if not thread.is_alive():
                raise RuntimeError(f"{self._label} failed to start: {self._error!r}")
            thread.join(0.01)

    def stop(self, grace: float) -> None:
        """Stop accepting; in-flight requests get ``grace`` s. Returns within about
        ``grace`` + 1 s (the thread is given up on after ``grace`` + 5 s)."""
        self._server.config.timeout_graceful_shutdown = math.ceil(grace)
        self._server.should_exit = True
        thread = self._thread
        if thread is not None:
            thread.join(grace + 5.0)
        else:
            self._socket.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_loop_exception)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported by start(), or logged after it
            self._error = exc
            if self._server.started:
                log.exception("%s stopped", self._label)
        finally:
            self._drop_connections(loop)
            self._socket.close()
            loop.close()

    def _drop_connections(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close what the graceful shutdown left open, and let the loop see it."""
        for connection in list(self._server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(asyncio.sleep(0))
