"""The web view served alone over a receiver database (``otel-agentbus web``, and the
demo's ``--serve``), for when no receiver is running on it.

On the receiver listener's ``ServerThread`` (``receiver/http_server.py``), the socket bound in the
constructor so a taken port fails at once; the database is opened read-only per request,
so a receiver (or the demo) may keep writing to it meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import uvicorn

from ..http_server import ServerThread, bind_listener
from ..queries import connect
from ..server import join_host_port
from .app import WebView
from .links import WebLinks


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
        self._serving = ServerThread(uvicorn.Server(uvicorn.Config(
            self.view, lifespan="off", log_config=None, access_log=False,
            server_header=False)), self._socket, "web view")

    def start(self) -> WebServer:
        self._serving.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        self._serving.stop(grace)

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
