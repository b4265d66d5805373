"""The ``langgraph`` OpenTelemetry instrumentor: ``opentelemetry-instrument python app.py``
instruments an unchanged LangGraph app (entry point group ``opentelemetry_instrumentor``).

When nothing called ``configure()``, it sets up our telemetry on the global providers the
OpenTelemetry distro configured (``use_global=True``), or from the ``OTEL_*`` variables when
there are none, so the agent spans go wherever the app's other spans go.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from . import langgraph


class LangGraphInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """``LangGraphInstrumentor().instrument(bus=...)``; ``uninstrument()`` undoes it."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return (f"langgraph >= {langgraph.MINIMUM}, < {langgraph.SUPPORTED_BELOW}",
                f"langchain-core >= {langgraph.MINIMUM}, < {langgraph.SUPPORTED_BELOW}")

    def _instrument(self, **kwargs: Any) -> None:
        from ..default_mirror import default_mirror

        if default_mirror() is None and kwargs.get("bus") is None:
            _configure_telemetry()
        langgraph.install(bus=kwargs.get("bus"))

    def _uninstrument(self, **kwargs: Any) -> None:
        langgraph.uninstall()


def _configure_telemetry() -> None:
    from ..telemetry import ConfigurationError, configure

    try:
        configure(use_global=True)  # the distro's providers: one pipeline for every span
    except ConfigurationError:  # no SDK provider set: ours, from the OTEL_* variables
        configure()
