"""Span handles: publish a start event, make its span current from any callback, end it.

Framework adapters see an operation as two callbacks (``on_chain_start`` /
``on_chain_end``, ``on_tool_start`` / ``on_tool_end``) that may run on different threads
or tasks, so a ``with`` block cannot hold the span. :func:`publish_start` publishes the
start event and returns a :class:`SpanHandle`; ``attach()`` makes its span the current
OpenTelemetry span on the calling thread or task (a span a library opens inside a tool then
joins our trace), ``detach()`` restores what was current, and ``end()`` publishes the
matching end event (``completed`` or ``failed`` with its cause).

``attach`` and ``detach`` do not pair OpenTelemetry tokens: a token detached in another
context than it was made in is what logs "Failed to detach context". ``detach`` instead
puts back what was current before this handle's ``attach`` on the same thread, and only
while this handle is still the innermost one there; it is a no-op anywhere else.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanContext

from .bus import EventBus
from .events import Event, Scope, Severity, Source
from .kinds import (
    LLM_FAILED,
    LLM_REQUEST,
    LLM_RESPONSE,
    NODE_LOOP_COMPLETED,
    NODE_LOOP_FAILED,
    NODE_LOOP_STARTED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_STARTED,
    TOOL_CALL_COMPLETED,
    TOOL_CALL_STARTED,
)
from .runs import _CURRENT_RUN, RunHandle, error_payload, json_safe
from .tracecontext import context_of, span_context_of

__all__ = ["SpanHandle", "current_handle", "publish_start"]

_CURRENT_HANDLE: contextvars.ContextVar[SpanHandle | None] = contextvars.ContextVar(
    "otel_agentbus_current_handle", default=None)

_ENDS: Final[dict[str, tuple[str, str]]] = {
    RUN_STARTED: (RUN_COMPLETED, RUN_FAILED),
    NODE_LOOP_STARTED: (NODE_LOOP_COMPLETED, NODE_LOOP_FAILED),
    LLM_REQUEST: (LLM_RESPONSE, LLM_FAILED),
    TOOL_CALL_STARTED: (TOOL_CALL_COMPLETED, TOOL_CALL_COMPLETED),
}
"""Start kind -> (end kind on success, end kind on failure)."""

_IDS: Final = ("tool_call_id", "call_id", "tool_name", "model")
"""Start-payload keys the end event repeats, so the mirror finds the span it closes."""

_PLAIN: Final = frozenset({str, int, bool, float, type(None)})
"""Payload values that need no conversion (``Event`` rejects a non-finite float)."""

_CANCELLED: Final = frozenset({"CancelledError", "KeyboardInterrupt", "SystemExit",
                               "GeneratorExit"})


def current_handle() -> SpanHandle | None:
    """The handle attached innermost on this thread or task, if any."""
    return _CURRENT_HANDLE.get()


class SpanHandle:
    """The span of one published start event (``agent.run.started``,
    ``agent.node.loop.started``, ``agent.llm.request``, ``agent.tool.call.started``)."""

    __slots__ = ("_context", "_lock", "_previous", "bus", "ended", "event", "run")

    def __init__(self, bus: EventBus, event: Event) -> None:
        self.bus = bus
        self.event = event
        """The start event, stamped with its span's ids by the mirror (if one is attached)."""
        self.ended = False
        self._context: otel_context.Context | None = None
        self.run: RunHandle | None = None
        """The run this span belongs to (its own for a run's handle), current
        (``current_run()``) while the handle is attached."""
        if event.kind == RUN_STARTED:
            self.run = RunHandle(bus, event.scope)
            self.run.started = event
        self._previous: dict[int, list[tuple[otel_context.Context, SpanHandle | None,
                                             RunHandle | None]]] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- context
    @property
    def span_context(self) -> SpanContext | None:
        """The span's ids, once the mirror has stamped the start event."""
        return span_context_of(self.event)

    @property
    def context(self) -> otel_context.Context:
        """An OpenTelemetry Context whose current span is this one (``context_of``)."""
        context = self._context
        if context is None:
            context = context_of(self.event)
            if self.event._span_context is not None:  # stamped: it will not change
                self._context = context
        return context

    @property
    def scope(self) -> Scope:
        return self.event.scope

    def attach(self) -> None:
        """Make this span current on the calling thread or task until :meth:`detach`.

        Spans started meanwhile (ours or a library's) become its children; for a run's
        handle ``current_run()`` is the run, so decorated code inside joins it.
        """
        record = (otel_context.get_current(), _CURRENT_HANDLE.get(), _CURRENT_RUN.get())
        with self._lock:
            self._previous.setdefault(threading.get_ident(), []).append(record)
        otel_context.attach(self.context)
        _CURRENT_HANDLE.set(self)
        if self.run is not None:
            _CURRENT_RUN.set(self.run)

    def detach(self) -> None:
        """Put back what was current before the last :meth:`attach` on this thread, if
        this handle is still the innermost one here; otherwise do nothing."""
        with self._lock:
            stack = self._previous.get(threading.get_ident())
            if not stack:
                return
            previous_context, previous_handle, previous_run = stack.pop()
            if not stack:
                del self._previous[threading.get_ident()]
        if _CURRENT_HANDLE.get() is not self:
            return  # ended out of order, or in another task: leave the newer state alone
        otel_context.attach(previous_context)
        _CURRENT_HANDLE.set(previous_handle)
        if self.run is not None:
            _CURRENT_RUN.set(previous_run)

    @contextmanager
    def current(self) -> Iterator[SpanHandle]:
        """``with handle.current():`` the span is current inside the block only."""
        token = otel_context.attach(self.context)
        handle_token = _CURRENT_HANDLE.set(self)
        run_token = _CURRENT_RUN.set(self.run) if self.run is not None else None
        try:
            yield self
        finally:
            if run_token is not None:
                _CURRENT_RUN.reset(run_token)
            _CURRENT_HANDLE.reset(handle_token)
            otel_context.detach(token)

    # ----------------------------------------------------------------- events
    def publish(self, kind: str, payload: Mapping[str, Any] | None = None, *,
                node_id: str | None = None, source: Source | None = None,
                severity: Severity | str = Severity.INFO) -> Event:
        """Publish another event of this span's run (a decision, a delta, usage)."""
        scope = self.event.scope if node_id is None else self.event.scope._replace(
            node_id=node_id)
        event = Event(kind, payload, scope=scope, source=source or self.event.source,
                      severity=severity)
        if kind not in _ENDS:  # only a span's start needs its parent current
            self.bus.publish_nowait(event)
            return event
        token = otel_context.attach(self.context)
        try:
            self.bus.publish_nowait(event)
        finally:
            otel_context.detach(token)
        return event

    def start_child(self, kind: str, payload: Mapping[str, Any] | None = None, *,
                    node_id: str | None = None, source: Source | None = None) -> SpanHandle:
        """Publish a start event in this span's run, with this span current (a tool called
        inside a tool, a run inside a node becomes its child); returns the child's handle,
        whose ``run`` is this handle's run (current while the child is attached)."""
        child = SpanHandle(self.bus, self.publish(kind, payload, node_id=node_id,
                                                  source=source))
        if child.run is None:
            child.run = self.run
        return child

    def end(self, payload: Mapping[str, Any] | None = None, *,
            error: BaseException | None = None, kind: str | None = None,
            severity: Severity | str | None = None) -> Event | None:
        """Publish the end event matching the start (``completed``, or with ``error``
        ``failed`` and its cause; a cancelled run ``cancelled``); only the first call
        publishes. Detaches the span if it is still current on this thread."""
        with self._lock:
            if self.ended:
                return None
            self.ended = True
        self.detach()
        start = self.event
        body: dict[str, Any] = {key: start.payload[key] for key in _IDS
                                if key in start.payload}
        if payload:
            body.update(payload)
        if kind is None:
            kind = self._end_kind(error, body)
        if severity is None:
            severity = Severity.INFO if error is None else Severity.ERROR
        if error is not None and kind != RUN_CANCELLED:
            body.update(error_payload(error))
        event = Event(kind, {key: value if type(value) in _PLAIN else json_safe(value)
                             for key, value in body.items()},
                      scope=start.scope, source=start.source, severity=severity)
        self.bus.publish_nowait(event)
        if self.run is not None and start.kind == RUN_STARTED:
            self.run.status = kind.rsplit(".", 1)[-1]
        return event

    def _end_kind(self, error: BaseException | None, body: dict[str, Any]) -> str:
        start_kind = self.event.kind
        ends = _ENDS.get(start_kind)
        if ends is None:
            raise ValueError(f"{start_kind} starts no span; pass kind= to end()")
        if start_kind == TOOL_CALL_STARTED:
            body["is_error"] = error is not None
        if error is not None and start_kind == RUN_STARTED and \
                type(error).__name__ in _CANCELLED:
            body.setdefault("reason", type(error).__name__)
            return RUN_CANCELLED
        return ends[0] if error is None else ends[1]


def publish_start(bus: EventBus, event: Event, *, parent: SpanHandle | None = None
                  ) -> SpanHandle:
    """Publish a start event and return its :class:`SpanHandle`.

    ``parent``: a handle whose span the new one belongs under; a run started with a
    parent (a subgraph, a handoff, an agent called as a tool) becomes a child span in the
    parent's trace, with its own agent name. Without one, the current span is the parent,
    as for every run.
    """
    if event.kind not in _ENDS:
        raise ValueError(
            f"publish_start() takes a start event ({', '.join(sorted(_ENDS))}), "
            f"got {event.kind!r}")
    if parent is None:
        bus.publish_nowait(event)
    else:
        with parent.current():
            bus.publish_nowait(event)
    return SpanHandle(bus, event)
