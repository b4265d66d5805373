"""Where the web view of a receiver database is served, for the CLI's links.

A running receiver records its web view's base URL in the database (``receiver_meta``)
and removes it when it stops; ``otel-agentbus runs`` and ``trace`` read it to print links.
A receiver killed without stopping leaves the entry behind, so a reader also checks that
something still listens there before trusting it.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit

DEFAULT_WEB_ADDR: Final = "127.0.0.1:8318"
"""Where ``otel-agentbus web`` and ``demo --serve`` listen unless told otherwise."""
WEB_URL_KEY: Final = "web_url"
WEB_URL_ENV: Final = "OTEL_AGENTBUS_WEB_URL"
_PROBE_TIMEOUT_S: Final = 0.3


def recorded_web_url(db_path: str | Path) -> str | None:
    """The base URL a live receiver recorded for ``db_path``; ``None`` if there is none,
    or nothing answers there any more."""
    path = Path(db_path).absolute()
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2.0)
        try:
            row = conn.execute("SELECT value FROM receiver_meta WHERE key = ?",
                               (WEB_URL_KEY,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:  # no such table (an older file), or not readable
        return None
    if row is None:
        return None
    url = str(row[0])
    return url if _listening(url) else None


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    if parts.hostname is None:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def run_link(base: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/runs/{quote(run_id, safe='')}"


def trace_link(base: str, trace_id: str) -> str:
    return f"{base.rstrip('/')}/traces/{trace_id}"
