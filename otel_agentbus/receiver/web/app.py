"""The web view as a Starlette application: pages, static assets and a read-only JSON API.

Pages are static HTML shells whose scripts fetch the JSON API, so every value reaches the
page through the DOM's text APIs, never as markup; a strict Content-Security-Policy (no
inline script or style) is the second wall. Nothing here writes: the only non-GET route,
``POST /login``, trades the token for a cookie.

The receiver serves this app on its OTLP/HTTP listener (``/v1/*`` stays OTLP's); ``otel-
agentbus web`` serves it alone over a database file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ... import __version__
from ..queries import connect
from ..run_list import BadRunQuery
from . import api
from .auth import COOKIE_NAME, Access
from .links import WebLinks
from .trace_view import trace_version

STATIC_DIR: Final = Path(__file__).parent / "static"
POLL_MS: Final = 1000
LOGIN_BODY_LIMIT: Final = 4096
SECURITY_HEADERS: Final = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_T = TypeVar("_T")


class _SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer (a plain ASGI wrapper: cheaper than
    Starlette's ``BaseHTTPMiddleware`` and leaves streaming alone)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


@cache
def _page(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status,
                        headers={"cache-control": "no-store", **(headers or {})})


def _error(status: HTTPStatus, message: str) -> Response:
    return _json({"error": message}, status.value)


def _safe_next(target: str) -> str:
    """Only a path on this server (``/runs?x``), never ``//host`` or ``https://host``."""
    local = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if local else "/runs"


class WebView:
    """The routes, over the database at ``db_path``."""

    def __init__(self, db_path: str | Path, *, token: str | None = None,
                 links: WebLinks | None = None, secure_cookies: bool = False,
                 poll_ms: int = POLL_MS) -> None:
        self.db_path = Path(db_path).absolute()
        self.access = Access(token)
        self.links = links or WebLinks()
        self.secure_cookies = secure_cookies
        self.poll_ms = poll_ms
        routes = [
            Route("/", self.home, methods=["GET", "HEAD"]),
            Route("/runs", self.page("runs.html"), methods=["GET", "HEAD"]),
            Route("/runs/{run_id:path}", self.page("run.html"), methods=["GET", "HEAD"]),
            Route("/traces/{trace_id}", self.page("run.html"), methods=["GET", "HEAD"]),
            Route("/login", self.login_page, methods=["GET", "HEAD"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/api/config", self.config, methods=["GET", "HEAD"]),
            Route("/api/runs", self.runs, methods=["GET", "HEAD"]),
            Route("/api/runs/{run_id:path}", self.run, methods=["GET", "HEAD"]),
            Route("/api/traces/{trace_id}", self.trace, methods=["GET", "HEAD"]),
            Route("/api/traces/{trace_id}/spans/{span_id}", self.span, methods=["GET", "HEAD"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False)),
        ]
        self.app: ASGIApp = _SecurityHeaders(Starlette(routes=routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # ---- pages -------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/runs", status_code=HTTPStatus.TEMPORARY_REDIRECT)

    def page(self, name: str) -> Callable[[Request], Any]:
        async def serve(request: Request) -> Response:
            if not self.access.allows(request):
                return HTMLResponse(_page("login.html"), status_code=HTTPStatus.UNAUTHORIZED,
                                    headers={"cache-control": "no-store"})
            return HTMLResponse(_page(name), headers={"cache-control": "no-store"})
        return serve

    async def login_page(self, request: Request) -> Response:
        return HTMLResponse(_page("login.html"), headers={"cache-control": "no-store"})

    async def login(self, request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > LOGIN_BODY_LIMIT:
                return _error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "login form too large")
        form = parse_qs(body.decode("utf-8", "replace"))
        target = _safe_next((form.get("next") or [""])[0])
        cookie = self.access.login((form.get("token") or [""])[0])
        if cookie is None:
            return RedirectResponse(f"/login?failed=1&next={quote(target, safe='')}",
                                    status_code=HTTPStatus.SEE_OTHER)
        response = RedirectResponse(target, status_code=HTTPStatus.SEE_OTHER)
        response.set_cookie(COOKIE_NAME, cookie, httponly=True, samesite="strict",
                            secure=self.secure_cookies, path="/")
        return response

    # ---- API ---------------------------------------------------------------------

    async def config(self, request: Request) -> Response:
        if not self.access.allows(request):
            return _error(HTTPStatus.UNAUTHORIZED, "missing or invalid token")
        return _json({
            "version": __version__,
            "title": "otel-agentbus",
            "jaeger_url": self.links.jaeger_url,
            "grafana_url": self.links.grafana_url,
            "poll_ms": self.poll_ms,
            "auth": not self.access.open,
        })

    async def runs(self, request: Request) -> Response:
        params = dict(request.query_params)
        return await self._answer(request, lambda conn: api.runs_answer(
            conn, api.run_query(params), self.links))

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return await self._trace(request, lambda conn: api.trace_id_for_run(conn, run_id))

    async def trace(self, request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        return await self._trace(request, lambda conn: api.checked_trace_id(trace_id))

    async def span(self, request: Request) -> Response:
        trace_id, span_id = request.path_params["trace_id"], request.path_params["span_id"]
        return await self._answer(request, lambda conn: api.span_answer(
            conn, api.checked_trace_id(trace_id), span_id))

    async def _trace(self, request: Request,
                     resolve: Callable[[sqlite3.Connection], str]) -> Response:
        """The trace document, or 304 when the browser's copy (``If-None-Match``) is
        current: polling an unchanged run costs one indexed count."""
        if not self.access.allows(request):
            return _error(HTTPStatus.UNAUTHORIZED, "missing or invalid token")
        seen = request.headers.get("if-none-match")

        def read(conn: sqlite3.Connection) -> tuple[str | None, dict[str, Any] | None]:
            trace_id = resolve(conn)
            version = trace_version(conn, trace_id)
            if version is None:
                raise api.NotFound(f"no span of trace {trace_id} is stored")
            etag = f'"{trace_id}-{version}"'
            if seen == etag:
                return etag, None
            return etag, api.trace_answer(conn, trace_id, self.links)

        result = await self._read(read)
        if isinstance(result, Response):
            return result
        etag, document = result
        headers = {"etag": etag or "", "cache-control": "no-cache"}
        if document is None:
            return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
        return JSONResponse(document, headers=headers)

    async def _answer(self, request: Request,
                      read: Callable[[sqlite3.Connection], dict[str, Any]]) -> Response:
        if not self.access.allows(request):
            return _error(HTTPStatus.UNAUTHORIZED, "missing or invalid token")
        result = await self._read(read)
        return result if isinstance(result, Response) else _json(result)

    async def _read(self, read: Callable[[sqlite3.Connection], _T]) -> _T | Response:
        """Run ``read`` on a read-only connection in a worker thread; known failures
        become JSON errors that say what is wrong."""
        def run() -> _T:
            with connect(self.db_path) as conn:
                return read(conn)

        try:
            return await run_in_threadpool(run)
        except BadRunQuery as exc:
            return _error(HTTPStatus.BAD_REQUEST, str(exc))
        except api.NotFound as exc:
            return _error(HTTPStatus.NOT_FOUND, str(exc))
        except FileNotFoundError:
            return _error(HTTPStatus.SERVICE_UNAVAILABLE,
                          f"the receiver database {self.db_path} does not exist (yet)")
        except sqlite3.OperationalError as exc:  # locked or busy past the timeout
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, f"database busy: {exc}")
