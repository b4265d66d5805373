"""The receiver's web view: runs list, trace waterfall, decisions timeline, live updates.

Served on the receiver's OTLP/HTTP listener (``Receiver(web=True)``, the default) or alone
over a database file (``otel-agentbus web --db PATH``). See ``docs/viewing-runs.md``.
"""

from __future__ import annotations

from .app import WebView
from .links import WebLinks

__all__ = ["WebLinks", "WebView"]
