"""Helpers of tests/test_web_browser.py: the browser, receivers to look at, a bus to drive.

Playwright's sync API runs its own event loop on this thread, so whatever needs asyncio
(the demo, a bus publishing into the receiver) runs on a thread of its own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import pytest

from otel_agentbus import Event, EventBus, Scope, configure
from otel_agentbus.receiver import Receiver, list_runs
from otel_agentbus.receiver.web.links import WebLinks
from otel_agentbus.telemetry import Telemetry

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

CHROMIUM: Final = "/usr/bin/chromium"
"""Debian's chromium package; .ci/chromium installs it in CI."""
CHROMIUM_ARGS: Final = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        "--disable-quic"]
SCREENSHOTS_ENV: Final = "AGENTBUS_WEB_SCREENSHOTS"
VIEWPORT: Final[ViewportSize] = {"width": 1280, "height": 800}

_T = TypeVar("_T")


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_browser() -> str:
    """The Chromium binary, with Playwright importable. Missing: skip locally, fail under
    CI (.ci/test installs both, so their absence there is a broken set-up)."""
    problems = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("Playwright for Python is not installed (pip install playwright)")
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path is None:
        problems.append(f"no Chromium at {CHROMIUM} (apt-get install chromium, as .ci/chromium "
                        "does)")
    if problems:
        message = "no browser for the web view's tests: " + "; ".join(problems)
        if is_ci():
            pytest.fail(f"{message}; CI=true, so they may not be skipped")
        pytest.skip(message)
    assert path is not None
    return path


def in_thread(function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``function(*args, **kwargs)`` on a worker thread (its own asyncio loop if it wants)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args, **kwargs).result(timeout=120)


@contextmanager
def web_receiver(db: Path, token: str | None = None,
                 links: WebLinks | None = None) -> Iterator[Receiver]:
    """A receiver serving the web view over ``db``."""
    receiver = Receiver(db, token=token, web_links=links).start()
    try:
        yield receiver
    finally:
        receiver.stop()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.05)


def run_statuses(db: Path) -> dict[str, str]:
    return {run.run_id: run.status for run in list_runs(db)}


def stored_span_count(db: Path, trace_id: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (count,) = conn.execute("SELECT count(*) FROM spans WHERE trace_id = ?",
                                (trace_id,)).fetchone()
    return int(count)


@dataclass
class LiveBus:
    """A bus mirrored over OTLP/gRPC into a receiver, its loop on a thread of its own;
    pending-span records on, so an open run shows as running."""

    receiver: Receiver
    service_name: str = "web-browser-test"
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    telemetry: Telemetry | None = None
    bus: EventBus | None = None
    _thread: threading.Thread | None = None

    def __enter__(self) -> LiveBus:
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="web-test-bus")
        self._thread.start()
        self.telemetry = configure(
            service_name=self.service_name, endpoint=self.receiver.grpc_endpoint,
            protocol="grpc", metrics_enabled=False, pending_spans=True,
            signal_handlers=False, mirror_new_buses=False)
        telemetry = self.telemetry

        async def make_bus() -> EventBus:
            return telemetry.attach(EventBus())

        self.bus = self.call(make_bus())
        return self

    def __exit__(self, *exc: object) -> None:
        bus = self.bus
        if bus is not None:
            self.call(bus.close())
        if self.telemetry is not None:
            self.telemetry.shutdown(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.loop.close()

    def call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def publish(self, *events: Event) -> None:
        bus = self.bus
        assert bus is not None

        async def publish_all() -> None:
            for event in events:
                await bus.publish(event)

        self.call(publish_all())

    def flush(self) -> None:
        assert self.telemetry is not None
        assert self.telemetry.force_flush(10), "the spans did not reach the receiver"


def event(kind: str, payload: dict[str, Any] | None = None, /, **scope: str) -> Event:
    return Event(kind, payload, scope=Scope(**scope))
