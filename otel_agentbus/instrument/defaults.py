"""The bus instrumented code publishes to when it is given none: the explicit ``bus=``,
else the current run's, else the process default set with :func:`set_default_bus`."""

from __future__ import annotations

from ..bus import EventBus
from ..runs import current_run

_default_bus: EventBus | None = None


class NoBusError(RuntimeError):
    """Instrumented code ran with no bus to publish to."""


def set_default_bus(bus: EventBus | None) -> None:
    """The bus instrumented code publishes to when it is given none and runs in no run.

    Call it once at start-up (``None`` clears it); inside a run, children use the run's bus.
    """
    global _default_bus
    if bus is not None and not isinstance(bus, EventBus):
        raise TypeError(f"set_default_bus() takes an otel_agentbus.EventBus, got {bus!r}")
    _default_bus = bus


def get_default_bus() -> EventBus | None:
    """The bus set with :func:`set_default_bus`, if any."""
    return _default_bus


def _resolve_bus(explicit: EventBus | None, what: str) -> EventBus:
    if explicit is not None:
        return explicit
    run = current_run()
    if run is not None:
        return run.bus
    if _default_bus is not None:
        return _default_bus
    raise NoBusError(
        f"{what} has no EventBus to publish to: pass bus=... or call "
        "otel_agentbus.instrument.set_default_bus(bus) once at start-up"
    )
