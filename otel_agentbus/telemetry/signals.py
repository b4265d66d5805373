"""End open spans and flush telemetry when the process is told to stop (SIGTERM).

Python's default SIGTERM kills the process at once: no ``finally``, no ``atexit``, so the
spans of running agents would never end nor be exported. ``configure()`` therefore installs
a handler for SIGTERM (opt out with ``configure(signal_handlers=False)``), but only on the
main thread and only while SIGTERM still has its default disposition: an application's own
handler is never replaced.

On the signal, every live :class:`~otel_agentbus.telemetry.Telemetry` is shut down: open
spans end with status ERROR and ``agentbus.span.end_reason`` set to the signal's name
(``"SIGTERM"``), queued spans and metrics are flushed, each bounded by its
``shutdown_timeout``. Then the handler that was there before runs; when that was the
default, the signal is raised again with the default disposition, so the process ends as if
killed by it (``subprocess`` reports -15, a shell 143).

``install_signal_handlers()`` does the same explicitly: for other signals (``SIGHUP``), or
after the application installed its own handler, which is then chained (called after the
shutdown instead of re-raising).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import weakref
from collections.abc import Iterable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Telemetry

logger = logging.getLogger("otel_agentbus.telemetry")

_live: weakref.WeakValueDictionary[int, Telemetry] = weakref.WeakValueDictionary()
_previous: dict[int, Any] = {}
"""The handler each signal had before ours, by signal number."""
_lock = threading.Lock()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _handle(signum: int, frame: FrameType | None) -> None:
    name = _signal_name(signum)
    for telemetry in list(_live.values()):
        try:
            telemetry.mirror.shutdown(name)  # open spans say why they ended
            telemetry.shutdown()  # bounded by its shutdown_timeout
        except Exception:
            logger.exception("telemetry shutdown on %s failed", name)
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # The default disposition (or a handler installed outside Python): die of the signal.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def track(telemetry: Telemetry) -> None:
    """Shut ``telemetry`` down on the handled signals (held weakly)."""
    with _lock:
        _live[id(telemetry)] = telemetry


def install_signal_handlers(
    telemetry: Telemetry | None = None,
    signals: Iterable[int] = (signal.SIGTERM,),
    *,
    replace: bool = True,
) -> bool:
    """Shut telemetry down before the process dies of one of ``signals``.

    ``telemetry`` is added to the telemetries shut down on the signal (``configure()``
    adds each one it makes). With ``replace=False`` a signal that already has a handler
    other than the default is left alone. Returns False when called off the main thread
    (where Python cannot install handlers) or when a signal was left alone.
    """
    if telemetry is not None:
        track(telemetry)
    if threading.current_thread() is not threading.main_thread():
        logger.debug("signal handlers can only be installed from the main thread")
        return False
    installed_all = True
    with _lock:
        for signum in signals:
            current = signal.getsignal(signum)
            if current is _handle:
                continue
            if not replace and current not in (signal.SIG_DFL, None):
                installed_all = False
                continue
            _previous[signum] = current
            signal.signal(signum, _handle)
    return installed_all


def uninstall_signal_handlers() -> None:
    """Put back the handlers that were there before ours (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        for signum, previous in list(_previous.items()):
            if signal.getsignal(signum) is _handle:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            del _previous[signum]
