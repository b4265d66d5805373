"""The telemetry a new :class:`~otel_agentbus.EventBus` mirrors to unless told not to.

Like an OpenTelemetry tracer taken from the global provider, a bus created anywhere after
``configure()`` (a library's, the Hive facade's, an adapter's) feeds the application's
telemetry without being handed it. ``configure()`` registers its mirror here; shutting that
telemetry down unregisters it. Core code only sees a publish hook, so this module imports
no OpenTelemetry SDK.

Opt out per bus with ``EventBus(telemetry=False)``, or for the whole process with
``configure(mirror_new_buses=False)``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .bus import EventBus, PublishHook

__all__ = ["MirrorTarget", "default_mirror", "register_default_mirror",
           "unregister_default_mirror"]


class MirrorTarget(Protocol):
    """What an API that takes ``telemetry=`` needs of it: ``attach(bus)`` (a
    :class:`~otel_agentbus.telemetry.Telemetry` is one). Typing against this keeps the layers
    above the core free of any import of ``telemetry/``."""

    def attach(self, bus: EventBus, name: str = ..., /) -> EventBus: ...

_lock = threading.Lock()
_current: PublishHook | None = None


def register_default_mirror(hook: PublishHook) -> None:
    """Make ``hook`` the mirror every bus created from now on gets (the last call wins:
    a second ``configure()`` replaces the first, as it replaces its exporter)."""
    global _current
    if not callable(hook):
        raise TypeError(f"the default mirror must be a publish hook (callable), got {hook!r}")
    with _lock:
        _current = hook


def unregister_default_mirror(hook: PublishHook | None = None) -> bool:
    """Stop giving ``hook`` to new buses (any hook when None); False if it was not the
    registered one. Buses that already have it keep it until they close."""
    global _current
    with _lock:
        if _current is None or (hook is not None and _current is not hook):
            return False
        _current = None
        return True


def default_mirror() -> PublishHook | None:
    """The hook a new bus attaches, if telemetry was configured and is still running."""
    return _current
