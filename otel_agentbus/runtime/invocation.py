"""The invocation API of seed 002: ``emit`` one agent run, ``on`` a kind of event, and a
``Control`` that really cancels, times out and limits concurrency.

In the seed, ``Control`` stores a timeout and a concurrency limit that nothing reads,
and ``cancel`` only sets a flag. Here all three are enforced:

- ``cancel()`` cancels every run emitted with the control (the run ends
  ``agent.run.cancelled`` with the reason; ``emit`` raises :class:`InvocationCancelled`)
  and stops every listener started with it (no handler call after the cancel).
- ``timeout`` is a deadline for each ``emit``: at the deadline the run's task is cancelled
  (``agent.run.cancelled``, reason ``"timeout"``) and ``emit`` raises
  :class:`InvocationTimeout`, a ``TimeoutError``.
- ``concurrency_limit`` bounds the emits running at once with that control, and the
  handler calls running at once in its listeners (one shared count).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, overload

from ..bus import EventBus
from ..events import Event
from ..runs import RunHandle, RunScope
from ..subscription import Subscription

logger = logging.getLogger("otel_agentbus.runtime.invocation")

ANY: Final = "*"
"""``on(ANY, handler)``: every event (seed 002's ``EventKind::Any``); ``None`` works too."""

T = TypeVar("T")


class InvocationCancelled(Exception):
    """``emit`` was cancelled through its :class:`Control` (or by a guard stopping the run).

    Not an ``asyncio.CancelledError``: the caller's task was not cancelled, only the run.
    """

    def __init__(self, reason: str, run_id: str | None = None) -> None:
        super().__init__(f"invocation cancelled ({reason})"
                         + (f": run {run_id}" if run_id else ""))
        self.reason = reason
        self.run_id = run_id


class InvocationTimeout(TimeoutError):
    """``emit`` passed its control's deadline; the run was cancelled with reason timeout."""

    def __init__(self, timeout: float, run_id: str | None = None) -> None:
        super().__init__(f"invocation timed out after {timeout}s"
                         + (f": run {run_id} cancelled" if run_id else ""))
        self.timeout = timeout
        self.run_id = run_id


@dataclass(frozen=True, slots=True)
class SessionContext:
    """Who an event or a run belongs to (seed 002's ``SessionContext``); ``run`` is the
    run's handle inside ``emit`` (publish events of the run with ``run.publish``)."""

    session_id: str | None = None
    run_id: str | None = None
    agent: str | None = None
    stream_id: str | None = None
    run: RunHandle | None = None

    @classmethod
    def of(cls, event: Event) -> SessionContext:
        scope = event.scope
        return cls(scope.session_id, scope.run_id, scope.agent, scope.stream_id)


_Callback = Callable[[str], None]


class Control:
    """Cancellation, a deadline and a concurrency limit, shared by emits and listeners.

    ``data`` is a dict every handler and agent function given this control sees. The
    control may be cancelled from any thread.
    """

    def __init__(self, *, timeout: float | None = None, concurrency_limit: int | None = None,
                 data: dict[str, Any] | None = None) -> None:
        self._timeout: float | None = None
        self._limit: int | None = None
        self.data: dict[str, Any] = data if data is not None else {}
        self._cancelled = False
        self.cancel_reason: str | None = None
        self._callbacks: dict[int, tuple[asyncio.AbstractEventLoop, _Callback]] = {}
        self._next_id = 0
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0
        """The most emits and handler calls that ever ran at once with this control."""
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.set_timeout(timeout)
        self.set_concurrency_limit(concurrency_limit)

    # --------------------------------------------------------------- settings
    @property
    def timeout(self) -> float | None:
        return self._timeout

    def set_timeout(self, timeout: float | None) -> None:
        """Seconds each later ``emit`` may take (None: no deadline)."""
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, int | float) or timeout < 0):
            raise ValueError(f"timeout must be a number >= 0 or None, got {timeout!r}")
        self._timeout = None if timeout is None else float(timeout)

    @property
    def concurrency_limit(self) -> int | None:
        return self._limit

    def set_concurrency_limit(self, limit: int | None) -> None:
        """Most emits plus handler calls running at once (None: no limit)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise ValueError(f"concurrency_limit must be an int >= 1 or None, got {limit!r}")
        self._limit = limit
        self._wake_waiters()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ------------------------------------------------------------ cancellation
    @property
    def is_cancelled(self) -> bool:
        return self._cancelled

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel the running emits and stop the listeners of this control; later emits
        fail at once. Idempotent; callable from any thread."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            self.cancel_reason = reason
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for loop, callback in callbacks:
            if _running_loop() is loop:
                callback(reason)
            else:  # a closed loop has nothing left to cancel
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(callback, reason)
        for waiter in list(self._waiters):
            loop = waiter.get_loop()
            if _running_loop() is loop:
                _wake(waiter)
            else:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_wake, waiter)

    def _on_cancel(self, callback: _Callback) -> Callable[[], None]:
        """Call ``callback(reason)`` on the current loop at cancel; returns the remover."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._cancelled:
                reason = self.cancel_reason or "cancelled"
                loop.call_soon(callback, reason)
                return lambda: None
            self._next_id += 1
            key = self._next_id
            self._callbacks[key] = (loop, callback)

        def remove() -> None:
            with self._lock:
                self._callbacks.pop(key, None)

        return remove

    # ----------------------------------------------------------- concurrency
    async def _acquire(self) -> None:
        """Take a slot, waiting while the limit is reached; raises InvocationCancelled."""
        while True:
            if self._cancelled:
                raise InvocationCancelled(self.cancel_reason or "cancelled")
            limit = self._limit
            if (limit is None or self._in_flight < limit) and not self._waiters:
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                self._forget_waiter(waiter)
                # Pass on a wake-up this waiter may have taken.
                self._wake_waiters()
                raise
            self._forget_waiter(waiter)
            limit = self._limit
            if self._cancelled:
                continue
            if limit is None or self._in_flight < limit:
                break
        self._in_flight += 1
        if self._in_flight > self.max_in_flight:
            self.max_in_flight = self._in_flight
        self._wake_waiters()

    def _forget_waiter(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _release(self) -> None:
        self._in_flight -= 1
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Wake as many queued waiters as there are free slots (oldest first)."""
        limit = self._limit
        free = len(self._waiters) if limit is None else max(0, limit - self._in_flight)
        for waiter in list(self._waiters)[:free]:
            _wake(waiter)

    def __repr__(self) -> str:
        return (f"Control(cancelled={self._cancelled}, timeout={self._timeout}, "
                f"concurrency_limit={self._limit}, in_flight={self._in_flight})")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


AsyncAgentFunction = Callable[[Any, SessionContext, Control], Awaitable[T]]
AgentFunction = Callable[[Any, SessionContext, Control], Awaitable[T] | T]
EventHandler = Callable[[Event, SessionContext, Control], Awaitable[object] | object]


class _Listener:
    """What a running ``on`` listener's callbacks share.

    It holds no reference to its :class:`ListenerHandle`: the subscription and the handler
    tasks keep this object alive, not the handle, so dropping the handle can stop it.
    """

    def __init__(self, control: Control) -> None:
        self.control = control
        self.loop = asyncio.get_running_loop()
        self.subscription: Subscription | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopped = False
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self.remove_cancel: Callable[[], None] = lambda: None
        self.handled = 0
        self.failed = 0

    def stop(self, reason: str = "aborted") -> None:
        if self.stopped:
            return
        self.stopped = True
        self.remove_cancel()
        if self.subscription is not None:
            self.subscription.close()
        for task in list(self.tasks):
            task.cancel()
        self.check_finished()

    def check_finished(self) -> None:
        sub = self.subscription
        if ((self.stopped or (sub is not None and sub.done)) and not self.tasks
                and not self.finished.done()):
            self.finished.set_result(None)


def _stop_dropped(listener: _Listener) -> None:
    """The handle was garbage-collected: stop its listener, on the listener's own loop."""
    if _running_loop() is listener.loop:
        listener.stop("dropped")
    else:  # collected on another thread, or after its loop closed (nothing left to stop)
        with contextlib.suppress(RuntimeError):
            listener.loop.call_soon_threadsafe(listener.stop, "dropped")


class ListenerHandle:
    """A running ``on`` listener (seed 002's ``InvocationHandle``, plus ``wait``).

    As in the seed, the handle owns the listener: ``abort()``, ``close()``, leaving a
    ``with`` block, or dropping the last reference to the handle stops it (no handler call
    after that; running calls are cancelled). Keep the handle while you want events.
    """

    def __init__(self, listener: _Listener) -> None:
        self._listener = listener
        finalizer = weakref.finalize(self, _stop_dropped, listener)
        finalizer.atexit = False  # at interpreter exit the loop is gone already

    @property
    def control(self) -> Control:
        return self._listener.control

    @property
    def subscription(self) -> Subscription | None:
        return self._listener.subscription

    @property
    def handled(self) -> int:
        """Handler calls that returned."""
        return self._listener.handled

    @property
    def failed(self) -> int:
        """Handler calls that raised (logged; the listener goes on)."""
        return self._listener.failed

    def abort(self) -> None:
        """Stop now: no further handler call; running handler calls are cancelled."""
        self._listener.stop()

    def close(self) -> None:
        """The same as :meth:`abort` (the name Python code reaches for)."""
        self._listener.stop("closed")

    @property
    def is_finished(self) -> bool:
        """True once the listener has stopped and no handler call is running."""
        self._listener.check_finished()
        return self._listener.finished.done()

    async def wait(self) -> None:
        """Until the listener finishes (aborted, cancelled, or its bus closed)."""
        await asyncio.shield(self._listener.finished)

    def __enter__(self) -> ListenerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Invocation:
    """``emit`` runs and listen ``on`` events of one bus, under a :class:`Control`."""

    def __init__(self, bus: EventBus, *, cancel_grace: float = 5.0) -> None:
        self.bus = bus
        self.cancel_grace = cancel_grace
        """How long a cancelled agent may take to unwind before ``emit`` stops waiting."""
        self._runs: dict[str, tuple[RunHandle, asyncio.Task[Any]]] = {}
        self._stragglers: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------- emit
    @overload
    async def emit(self, agent_fn: AsyncAgentFunction[T], input: Any = None, *,
                   control: Control | None = None, agent: str = "agent",
                   session_id: str | None = None, run_id: str | None = None,
                   stream_id: str | None = None, graph_id: str | None = None,
                   traceparent: str | None = None) -> T: ...

    @overload
    async def emit(self, agent_fn: Callable[[Any, SessionContext, Control], T],
                   input: Any = None, *, control: Control | None = None, agent: str = "agent",
                   session_id: str | None = None, run_id: str | None = None,
                   stream_id: str | None = None, graph_id: str | None = None,
                   traceparent: str | None = None) -> T: ...

    async def emit(
        self,
        agent_fn: AgentFunction[T],
        input: Any = None,
        *,
        control: Control | None = None,
        agent: str = "agent",
        session_id: str | None = None,
        run_id: str | None = None,
        stream_id: str | None = None,
        graph_id: str | None = None,
        traceparent: str | None = None,
    ) -> T:
        """Run ``agent_fn(input, session_context, control)`` as one run and return its output.

        The run publishes ``agent.run.started`` and one of completed, failed or cancelled.
        An exception of the agent is re-raised unchanged. Raises :class:`InvocationCancelled`
        when the control is cancelled, :class:`InvocationTimeout` at its deadline (the
        deadline also covers waiting for a concurrency slot). If the caller's own task is
        cancelled, the run is cancelled too and ``CancelledError`` propagates.
        """
        control = Control() if control is None else control
        loop = asyncio.get_running_loop()
        timeout = control.timeout
        deadline = None if timeout is None else loop.time() + timeout
        if control.is_cancelled:
            raise InvocationCancelled(control.cancel_reason or "cancelled")
        try:
            async with asyncio.timeout_at(deadline):
                await control._acquire()
        except TimeoutError:
            assert timeout is not None
            raise InvocationTimeout(timeout) from None
        try:
            return await self._run(agent_fn, input, control, timeout, deadline, RunScope(
                self.bus, agent, run_id=run_id, session_id=session_id, stream_id=stream_id,
                graph_id=graph_id, input=input, traceparent=traceparent,
            ))
        finally:
            control._release()

    async def _run(self, agent_fn: AgentFunction[T], input: Any, control: Control,
                   timeout: float | None, deadline: float | None, scope: RunScope) -> T:
        handle = scope.handle
        context = SessionContext(handle.scope.session_id, handle.run_id, handle.scope.agent,
                                 handle.scope.stream_id, handle)

        async def body() -> T:
            async with scope as run:
                result = agent_fn(input, context, control)
                output: T = await result if inspect.isawaitable(result) else result
                run.output = output
                return output

        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(
            body(), name=f"otel-agentbus:emit:{handle.run_id}")
        self._runs[handle.run_id] = (handle, task)
        stop_reason: list[str] = []

        def stop(reason: str) -> None:
            if not task.done() and not stop_reason:
                stop_reason.append(reason)
                handle.cancel_reason = reason
                task.cancel()

        remove = control._on_cancel(stop)
        try:
            loop = asyncio.get_running_loop()
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                done, _ = await asyncio.wait({task}, timeout=remaining)
            except asyncio.CancelledError:  # the caller was cancelled: so is the run
                stop("caller cancelled")
                await self._unwind(task)
                raise
            if not done:
                stop("timeout")
            if not task.done():
                await self._unwind(task)
            if stop_reason and (not task.done() or task.cancelled()):
                if stop_reason[0] == "timeout":
                    raise InvocationTimeout(timeout or 0.0, handle.run_id)
                raise InvocationCancelled(stop_reason[0], handle.run_id)
            if task.cancelled():  # the agent cancelled itself, or someone cancelled the run
                raise InvocationCancelled(handle.cancel_reason or "cancelled", handle.run_id)
            return task.result()
        finally:
            remove()
            self._runs.pop(handle.run_id, None)

    async def _unwind(self, task: asyncio.Task[Any]) -> None:
        """Give a cancelled run ``cancel_grace`` seconds to finish its ``finally`` blocks."""
        done, _ = await asyncio.shield(asyncio.wait({task}, timeout=self.cancel_grace))
        if not done:
            logger.warning("run task %s ignored cancellation for %ss; no longer waiting",
                           task.get_name(), self.cancel_grace)
            self._stragglers.add(task)
            task.add_done_callback(self._straggler_done)
        elif not task.cancelled():
            task.exception()  # mark it retrieved: the caller gets the cancellation error

    def _straggler_done(self, task: asyncio.Task[Any]) -> None:
        self._stragglers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("run task %s ended late with %r", task.get_name(), task.exception())

    def cancel_run(self, run_id: str, reason: str = "cancelled") -> bool:
        """Cancel one running emit by run id (guards use it); False if it is not running."""
        entry = self._runs.get(run_id)
        if entry is None:
            return False
        handle, task = entry
        if task.done():
            return False
        handle.cancel_reason = reason
        task.cancel()
        return True

    @property
    def running(self) -> list[str]:
        """Run ids of the emits running now."""
        return list(self._runs)

    # --------------------------------------------------------------------- on
    def on(
        self,
        kind: str | Iterable[str] | None,
        handler: EventHandler,
        *,
        control: Control | None = None,
        buffer: int = 1024,
        backpressure: str = "drop_oldest",
        **filters: Any,
    ) -> ListenerHandle:
        """Call ``handler(event, session_context, control)`` for each event of ``kind``.

        ``kind``: one kind, several, or ``ANY``/``None`` for all; ``filters`` are the bus's
        (``kind_prefix``, ``run_id``, ``session_id``, ``agent``, ...). Handler calls run
        concurrently, at most ``control.concurrency_limit`` at once. The listener stops on
        ``handle.abort()`` / ``handle.close()``, when the handle is dropped (garbage
        collected), on ``control.cancel()`` or when the bus closes.
        """
        control = Control() if control is None else control
        listener = _Listener(control)
        loop = asyncio.get_running_loop()
        kinds = None if kind is None or kind == ANY else kind

        def finished(task: asyncio.Task[None]) -> None:
            listener.tasks.discard(task)
            control._release()
            listener.check_finished()

        async def call(event: Event) -> None:
            try:
                result = handler(event, SessionContext.of(event), control)
                if inspect.isawaitable(result):
                    await result
                listener.handled += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                listener.failed += 1
                logger.exception("listener handler %r failed on %s (seq %s)", handler,
                                 event.kind, event.seq)

        async def dispatch(event: Event) -> None:
            if listener.stopped or control.is_cancelled:
                return
            try:
                await control._acquire()
            except InvocationCancelled:
                return
            if listener.stopped:
                control._release()
                return
            task = loop.create_task(call(event), name=f"otel-agentbus:on:{event.kind}")
            listener.tasks.add(task)
            task.add_done_callback(finished)

        listener.subscription = self.bus.subscribe(
            dispatch, kinds=kinds, buffer=buffer, backpressure=backpressure,
            name=f"on:{kind}", **filters,
        )
        listener.subscription.finished.add_done_callback(lambda _f: listener.check_finished())
        listener.remove_cancel = control._on_cancel(listener.stop)
        return ListenerHandle(listener)
