"""Guards that stop an agent wasting a run: a doom-loop detector and a compaction breaker.

Seed 002 has the events (``DoomLoopDetected``, ``CompactionCircuitOpened``) but not the
logic. Both guards here are bus subscribers keyed per run, publish their event once per
occurrence (not once per further repetition), and can stop the run through a stopper:
a :class:`~otel_agentbus.runtime.invocation.Control` or callable registered for the run,
or a global ``stop(run_id, reason)`` such as ``Invocation.cancel_run``.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..bus import BusClosedError, EventBus
from ..events import Event, Scope, Severity, Source, thaw_json
from ..kinds import (
    COMPACTION_CIRCUIT_OPENED,
    CONTEXT_COMPRESSED,
    DOOM_LOOP_DETECTED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    TOOL_CALL_STARTED,
)
from ..runs import current_run
from ..subscription import Subscription
from .invocation import Control

logger = logging.getLogger("otel_agentbus.runtime.guards")

RUN_END_KINDS: Final = (RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED)
DOOM_LOOP_REASON: Final = "doom_loop"
COMPACTION_REASON: Final = "compaction_circuit_open"

Stopper = Control | Callable[[str], object]
"""What stops one run: a Control (cancelled with the reason) or ``fn(reason)``."""
GlobalStopper = Callable[[str, str], object]
"""``stop(run_id, reason)``, e.g. ``Invocation.cancel_run``."""


class _Guard:
    """Per-run stoppers, the optional global one, and the subscription's lifecycle."""

    def __init__(self, bus: EventBus, name: str, stop_run: bool,
                 stop: GlobalStopper | None, max_runs: int) -> None:
        if not isinstance(max_runs, int) or max_runs < 1:
            raise ValueError(f"max_runs must be an int >= 1, got {max_runs!r}")
        self.bus = bus
        self.stop_run = stop_run
        self._global_stop = stop
        self._stoppers: dict[str, Stopper] = {}
        self._max_runs = max_runs
        self._lock = threading.RLock()
        self._source = Source("guard", name)
        self.subscription: Subscription | None = None

    def register(self, run_id: str, stopper: Stopper) -> Callable[[], None]:
        """Use ``stopper`` to stop ``run_id``; returns a function that unregisters it."""
        with self._lock:
            self._stoppers[run_id] = stopper

        def unregister() -> None:
            with self._lock:
                if self._stoppers.get(run_id) is stopper:
                    del self._stoppers[run_id]

        return unregister

    def _stop(self, run_id: str | None, reason: str) -> bool:
        """Stop the run if asked to and something can; True when a stopper was called."""
        if not self.stop_run or not run_id:
            return False
        with self._lock:
            stopper = self._stoppers.get(run_id)
        try:
            if isinstance(stopper, Control):
                stopper.cancel(reason)
            elif stopper is not None:
                stopper(reason)
            elif self._global_stop is not None:
                self._global_stop(run_id, reason)
            else:
                logger.warning("%s: cannot stop run %s (no stopper registered)",
                               self._source.name, run_id)
                return False
        except Exception:
            logger.exception("%s: stopping run %s failed", self._source.name, run_id)
            return False
        return True

    def _publish(self, kind: str, payload: Mapping[str, Any], scope: Scope) -> Event | None:
        event = Event(kind, payload, scope=scope, source=self._source, severity=Severity.WARN)
        try:
            self.bus.publish_nowait(event)
        except BusClosedError:
            logger.warning("%s: bus closed, %s not published", self._source.name, kind)
            return None
        return event

    def _forget_run(self, run_id: str) -> None:
        with self._lock:
            self._stoppers.pop(run_id, None)

    def close(self) -> None:
        """Stop watching the bus."""
        if self.subscription is not None:
            self.subscription.close()


def _canonical_arguments(payload: Mapping[str, Any]) -> str:
    """The arguments of a tool call as canonical JSON (key order does not matter)."""
    for key in ("arguments", "tool_input", "args", "input"):
        if key in payload:
            value = thaw_json(payload[key])
            break
    else:
        return "null"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return json.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


_Signature = tuple[str, str]


@dataclass(slots=True)
class _LoopState:
    history: deque[_Signature]
    active: tuple[_Signature, ...] | None = None
    phase: int = 0
    detections: int = 0


class DoomLoopDetector(_Guard):
    """Publishes ``agent.doom_loop.detected`` when a run repeats itself.

    Two patterns, from each run's ``agent.tool.call.started`` events (tool name plus
    canonical arguments): the same call ``threshold`` times in a row (``"repeat"``), or a
    cycle of 2..``max_cycle`` different calls repeated ``threshold`` times (``"cycle"``,
    e.g. A,B,A,B,A,B). One event per loop: further turns of the same loop are not
    reported again until the run does something else. With ``stop_run`` the run is
    stopped with reason ``"doom_loop"``.
    """

    def __init__(self, bus: EventBus, *, threshold: int = 3, max_cycle: int = 4,
                 stop_run: bool = False, stop: GlobalStopper | None = None,
                 max_runs: int = 10_000, subscribe: bool = True) -> None:
        if not isinstance(threshold, int) or threshold < 2:
            raise ValueError(f"threshold must be an int >= 2, got {threshold!r}")
        if not isinstance(max_cycle, int) or max_cycle < 1:
            raise ValueError(f"max_cycle must be an int >= 1, got {max_cycle!r}")
        super().__init__(bus, "doom_loop", stop_run, stop, max_runs)
        self.threshold = threshold
        self.max_cycle = max_cycle
        self.detected = 0
        self._runs: OrderedDict[str, _LoopState] = OrderedDict()
        if subscribe:
            self.subscription = bus.subscribe(
                self._on_event, kinds=(TOOL_CALL_STARTED, *RUN_END_KINDS),
                name="doom-loop-detector", buffer=4096,
            )

    def _on_event(self, event: Event) -> None:
        if event.kind != TOOL_CALL_STARTED:
            self.forget(event.scope.run_id or "")
            return
        payload = event.payload
        tool = str(payload.get("tool_name") or event.source.name or "tool")
        call_id = payload.get("tool_call_id")
        self.observe(event.scope.run_id or event.scope.stream_id or "", tool,
                     _canonical_arguments(payload), scope=event.scope,
                     tool_call_id=call_id if isinstance(call_id, str) else None)

    def observe(self, run_id: str, tool_name: str, arguments: Any = None, *,
                scope: Scope | None = None, tool_call_id: str | None = None) -> Event | None:
        """Feed one tool call (without the bus); returns the detection event, if any.

        ``arguments`` is compared as canonical JSON (a str is taken to be JSON already).
        """
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, sort_keys=True, separators=(",", ":"),
                                   default=repr)
        signature = (tool_name, arguments)
        with self._lock:
            state = self._runs.get(run_id)
            if state is None:
                state = _LoopState(deque(maxlen=self.threshold * max(self.max_cycle, 1)))
                self._runs[run_id] = state
                if len(self._runs) > self._max_runs:
                    self._runs.popitem(last=False)
            else:
                self._runs.move_to_end(run_id)
            state.history.append(signature)
            if state.active is not None:
                if signature == state.active[state.phase % len(state.active)]:
                    state.phase += 1
                    return None  # the loop we reported goes on
                state.active = None  # the loop was broken; look afresh
            found = self._find(state.history)
            if found is None:
                return None
            state.active, state.phase = found, 0
            state.detections += 1
            self.detected += 1
        length = len(found)
        pattern = "repeat" if length == 1 else "cycle"
        names = [name for name, _ in found]
        stopping = self.stop_run and bool(scope.run_id if scope else run_id)
        payload: dict[str, Any] = {
            "pattern": pattern, "tool_name": names[0], "tool_names": names,
            "repetitions": self.threshold, "cycle_length": length,
            "action": "stop_run" if stopping else "report",
        }
        if tool_call_id:
            payload["tool_call_id"] = tool_call_id  # the call that completed the loop
        event = self._publish(DOOM_LOOP_DETECTED, payload,
                              scope or Scope(run_id=run_id or None))
        logger.warning("doom loop in run %s: %s of %s x%d", run_id, pattern, names,
                       self.threshold)
        if stopping:
            self._stop(scope.run_id if scope else run_id, DOOM_LOOP_REASON)
        return event

    def _find(self, history: deque[_Signature]) -> tuple[_Signature, ...] | None:
        """The shortest block that ends the history repeated ``threshold`` times."""
        items = list(history)
        n = self.threshold
        for length in range(1, self.max_cycle + 1):
            if length * n > len(items):
                return None
            block = items[-length:]
            if items[-length * n:] == block * n:
                return tuple(block)
        return None

    def forget(self, run_id: str) -> None:
        """Drop a run's state (done on its end event)."""
        with self._lock:
            self._runs.pop(run_id, None)
        self._forget_run(run_id)

    @property
    def tracked_runs(self) -> int:
        return len(self._runs)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _BreakerRun:
    scope: Scope
    failures: int = 0
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    openings: int = 0
    last_error: str | None = field(default=None)


class CompactionBreaker(_Guard):
    """A circuit breaker for context compaction, per run.

    Counts consecutive failures: ``agent.context.compressed`` events with
    ``success: false`` (or an ``error``), or :meth:`record_failure`. After ``threshold``
    the circuit opens: ``agent.compaction.circuit_opened`` is published once and
    :meth:`allow` says False, so the agent stops retrying a compaction that keeps failing
    (optionally the run is stopped, reason ``"compaction_circuit_open"``). After
    ``cooldown`` seconds it is half-open: one attempt is allowed; success closes it,
    failure opens it again (and publishes again).
    """

    def __init__(self, bus: EventBus, *, threshold: int = 3, cooldown: float = 60.0,
                 stop_run: bool = False, stop: GlobalStopper | None = None,
                 clock: Callable[[], float] = time.monotonic, max_runs: int = 10_000,
                 subscribe: bool = True) -> None:
        if not isinstance(threshold, int) or threshold < 1:
            raise ValueError(f"threshold must be an int >= 1, got {threshold!r}")
        if not isinstance(cooldown, int | float) or cooldown < 0:
            raise ValueError(f"cooldown must be a number >= 0, got {cooldown!r}")
        super().__init__(bus, "compaction_breaker", stop_run, stop, max_runs)
        self.threshold = threshold
        self.cooldown = float(cooldown)
        self._clock = clock
        self._runs: OrderedDict[str, _BreakerRun] = OrderedDict()
        self.opened = 0
        if subscribe:
            self.subscription = bus.subscribe(
                self._on_event, kinds=(CONTEXT_COMPRESSED, *RUN_END_KINDS),
                name="compaction-breaker", buffer=4096,
            )

    def _on_event(self, event: Event) -> None:
        run_id = event.scope.run_id or ""
        if event.kind != CONTEXT_COMPRESSED:
            self.forget(run_id)
            return
        payload = event.payload
        if payload.get("success") is False or payload.get("error"):
            self.record_failure(run_id, error=payload.get("error"), scope=event.scope)
        else:
            self.record_success(run_id)

    def _key(self, run_id: str | None) -> tuple[str, Scope]:
        if run_id is None:
            run = current_run()
            if run is not None:
                return run.run_id, run.scope
            return "", Scope()
        return run_id, Scope(run_id=run_id or None)

    def _state_of(self, key: str, scope: Scope) -> _BreakerRun:
        state = self._runs.get(key)
        if state is None:
            state = _BreakerRun(scope)
            self._runs[key] = state
            if len(self._runs) > self._max_runs:
                self._runs.popitem(last=False)
        else:
            self._runs.move_to_end(key)
        return state

    def _refresh(self, state: _BreakerRun) -> BreakerState:
        if (state.state is BreakerState.OPEN
                and self._clock() - state.opened_at >= self.cooldown):
            state.state = BreakerState.HALF_OPEN
        return state.state

    def record_failure(self, run_id: str | None = None, *, error: Any = None,
                       scope: Scope | None = None) -> bool:
        """Count a failed compaction (of the current run when ``run_id`` is None).

        Returns True when this failure opened the circuit.
        """
        key, default_scope = self._key(run_id)
        with self._lock:
            state = self._state_of(key, scope or default_scope)
            if scope is not None:
                state.scope = scope
            current = self._refresh(state)
            state.failures += 1
            if error is not None:
                state.last_error = str(error)
            if current is BreakerState.OPEN:
                return False  # already open: reported once
            if current is BreakerState.CLOSED and state.failures < self.threshold:
                return False
            state.state = BreakerState.OPEN
            state.opened_at = self._clock()
            state.openings += 1
            self.opened += 1
            failures, reported_scope, last_error = state.failures, state.scope, state.last_error
        stopping = self.stop_run and bool(reported_scope.run_id)
        payload: dict[str, Any] = {
            "failures": failures, "threshold": self.threshold, "cooldown_s": self.cooldown,
            "half_open_retry_failed": current is BreakerState.HALF_OPEN,
            "action": "stop_run" if stopping else "report",
        }
        if last_error is not None:
            payload["last_error"] = last_error
        self._publish(COMPACTION_CIRCUIT_OPENED, payload, reported_scope)
        logger.warning("compaction circuit opened for run %s after %d failures", key or "-",
                       failures)
        if stopping:
            self._stop(reported_scope.run_id, COMPACTION_REASON)
        return True

    def record_success(self, run_id: str | None = None) -> None:
        """A compaction worked: the count starts over and the circuit closes."""
        key, _ = self._key(run_id)
        with self._lock:
            state = self._runs.get(key)
            if state is not None:
                state.failures = 0
                state.state = BreakerState.CLOSED
                state.last_error = None

    def state(self, run_id: str | None = None) -> BreakerState:
        """closed, open, or half_open (open, and the cool-down has passed)."""
        key, _ = self._key(run_id)
        with self._lock:
            state = self._runs.get(key)
            return BreakerState.CLOSED if state is None else self._refresh(state)

    def allow(self, run_id: str | None = None) -> bool:
        """Should the agent attempt a compaction now? False while the circuit is open."""
        return self.state(run_id) is not BreakerState.OPEN

    def is_open(self, run_id: str | None = None) -> bool:
        return self.state(run_id) is BreakerState.OPEN

    def failures(self, run_id: str | None = None) -> int:
        """Consecutive failures counted so far."""
        key, _ = self._key(run_id)
        with self._lock:
            state = self._runs.get(key)
            return 0 if state is None else state.failures

    def reset(self, run_id: str | None = None) -> None:
        """Close the circuit now and forget the failures."""
        key, _ = self._key(run_id)
        with self._lock:
            self._runs.pop(key, None)

    def forget(self, run_id: str) -> None:
        """Drop a run's state (done on its end event)."""
        with self._lock:
            self._runs.pop(run_id, None)
        self._forget_run(run_id)
