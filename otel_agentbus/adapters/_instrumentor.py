"""What the adapters' ``BaseInstrumentor`` classes share: finding the bus to publish on.

``opentelemetry-instrument python app.py`` runs an app that never made a bus. The
instrumentor then makes one, makes it the default bus and mirrors it with ``configure()``,
which reads the standard ``OTEL_*`` variables (sharing the global SDK provider when a distro
set one), so the unchanged app's agent runs become traces, metrics and bus events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from ..bus import EventBus
from ..instrument import get_default_bus, set_default_bus
from ._common import AdapterError

if TYPE_CHECKING:
    class BaseInstrumentor:
        """The interface of ``opentelemetry.instrumentation``'s class, for mypy: that
        package is typed, but mypy does not resolve the class through its namespace."""

        def instrument(self, **kwargs: Any) -> None: ...
        def uninstrument(self, **kwargs: Any) -> None: ...
        def instrumentation_dependencies(self) -> Collection[str]: ...
        def _instrument(self, **kwargs: Any) -> None: ...
        def _uninstrument(self, **kwargs: Any) -> None: ...
else:
    try:
        from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
    except ImportError as missing:  # every adapter's extra installs it
        raise AdapterError(
            "opentelemetry-instrumentation is not installed: install the adapter's extra, "
            "e.g. pip install 'otel-agentbus[openai-agents]'"
        ) from missing

__all__ = ["BaseInstrumentor", "bus_for_instrumentor", "resolve_bus"]

logger = logging.getLogger("otel_agentbus.adapters")

_lock = threading.Lock()


def resolve_bus(bus: EventBus | None, adapter: str) -> EventBus:
    """``bus``, else the process's default bus; a clear error when there is neither."""
    if bus is not None:
        if not isinstance(bus, EventBus):
            raise TypeError(f"the {adapter} adapter publishes on an otel_agentbus.EventBus, "
                            f"got {bus!r}")
        return bus
    default = get_default_bus()
    if default is None:
        raise AdapterError(
            f"the {adapter} adapter has no bus to publish on: pass install(bus=...) or call "
            "otel_agentbus.instrument.set_default_bus(bus) first"
        )
    return default


def bus_for_instrumentor(bus: EventBus | None) -> EventBus:
    """The bus an auto-instrumented app publishes on: given, default, or made and mirrored."""
    if bus is not None or get_default_bus() is not None:
        return resolve_bus(bus, "instrumentor")
    with _lock:
        existing = get_default_bus()
        if existing is not None:
            return existing
        from ..telemetry import ConfigurationError, configure

        made = EventBus()
        try:
            configure(bus=made, use_global=True)
        except ConfigurationError:  # no SDK provider set by a distro: ours from OTEL_*
            configure(bus=made)
        set_default_bus(made)
        logger.info("otel-agentbus: made a default bus mirrored from the OTEL_* settings")
        return made
