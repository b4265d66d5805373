"""What every adapter needs: a clear error for a missing or unsupported framework, and a
guard so that a fault in our callback never breaks the user's agent."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import ParamSpec, TypeVar

from packaging.version import InvalidVersion, Version

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("otel_agentbus.adapters")


class AdapterError(RuntimeError):
    """The framework behind an adapter is missing or of a version the adapter does not support."""


def require(module: str, *, distribution: str, extra: str, minimum: str, below: str) -> ModuleType:
    """Import a framework module, refusing a missing one or a version outside
    ``[minimum, below)`` with a message that names the extra to install."""
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise AdapterError(
            f"{distribution} is not installed: pip install 'otel-agentbus[{extra}]'"
        ) from None
    try:
        supported = Version(minimum) <= Version(installed) < Version(below)
    except InvalidVersion:
        supported = False
    if not supported:
        raise AdapterError(
            f"{distribution} {installed} is not supported by the {extra} adapter "
            f"(supported: >={minimum},<{below}); pip install 'otel-agentbus[{extra}]'"
        )
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise AdapterError(
            f"{module} could not be imported ({error}): pip install 'otel-agentbus[{extra}]'"
        ) from error


class FaultCounter:
    """Counts exceptions raised inside an adapter's callbacks; logs the first of each adapter
    once with its traceback, so a broken adapter is visible without flooding the log."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self.count = 0
        self._lock = threading.Lock()

    def record(self, error: BaseException) -> None:
        with self._lock:
            self.count += 1
            first = self.count == 1
        if first:
            logger.warning("otel-agentbus %s adapter: a callback failed; the agent goes on "
                           "(further failures are only counted)", self.adapter, exc_info=error)
        else:
            logger.debug("otel-agentbus %s adapter: callback failed again (%d so far)",
                         self.adapter, self.count, exc_info=error)

    def guard(self, function: Callable[P, R | None]) -> Callable[P, R | None]:
        """Wrap a callback: an exception inside it is recorded and swallowed (returns None)."""

        @functools.wraps(function)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return function(*args, **kwargs)
            except Exception as error:  # the user's agent must never see our faults
                self.record(error)
                return None

        return guarded
