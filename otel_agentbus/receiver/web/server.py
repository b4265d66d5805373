"""The web view served alone over a receiver database (``otel-agentbus web``, and the
demo's ``--serve``), for when no receiver is running on it.

Uvicorn on a daemon thread, the socket bound in the constructor so a taken port fails at
once; the database is opened read-only per request, so a receiver (or the demo) may keep
writing to it meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Final

import uvicorn

from ..http_server import bind_listener
from ..queries import connect
from ..server import join_host_port
from .app import WebView
from .links import WebLinks

DEFAULT_WEB_ADDR: Final = "127.0.0.1:8318"


class WebServer:
    """Serves :class:`~.app.WebView` over ``db_path`` on ``address``; port 0 picks one."""

    def __init__(self, db_path: str | Path, address: tuple[str, int], *,
                 token: str | None = None, links: WebLinks | None = None) -> None:
        with connect(db_path):  # a missing or foreign file fails here, with its name
            pass
        self.view = WebView(db_path, token=token, links=links)
        self._socket = bind_listener(*address)
        host, port = self._socket.getsockname()[:2]
        self.url = f"http://{join_host_port(host, port)}"
        self._server = uvicorn.Server(uvicorn.Config(
            self.view, lifespan="off", log_config=None, access_log=False,
            server_header=False, timeout_graceful_shutdown=1))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> WebServer:
        thread = threading.Thread(target=self._run, name="agentbus-web", daemon=True)
        thread.start()
        self._thread = thread
        while not self._server.started:
            if not thread.is_alive():
                raise RuntimeError(f"web view failed to start: {self._error!r}")
            thread.join(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5.0)
        else:
            self._socket.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        except BaseException as exc:  # reported by start()
            self._error = exc
        finally:
            self._socket.close()
            loop.close()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
