"""Running each call of a sync or async function, generator or async generator inside a
scope.

Generators: every step of a wrapped (async) generator runs inside a
:class:`contextvars.Context` of its own, entered for the step and left before the value
is handed to the consumer. The span is attached in that context and detached in it, so
nothing is ever attached in the consumer's context across a ``yield``: closing the
generator early, from another task or by garbage collection, never logs "Failed to
detach context" and never leaves a stale span current in the consumer.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import AsyncGenerator, Callable, Generator
from types import TracebackType
from typing import Any, Protocol, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
H_co = TypeVar("H_co", covariant=True)


class _ScopeProtocol(Protocol[H_co]):
    def __enter__(self) -> H_co: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None, /) -> bool | None: ...



class _InContext:
    """Awaits ``awaitable`` with each of its steps run inside ``context``."""

    __slots__ = ("_awaitable", "_context")

    def __init__(self, context: contextvars.Context, awaitable: Any) -> None:
        self._context = context
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, Any]:
        run = self._context.run
        steps = self._awaitable.__await__()
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is None:
                    signal = run(steps.send, sent)
                else:
                    error, thrown = thrown, None
                    signal = run(steps.throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                sent = yield signal
            except GeneratorExit:
                run(steps.close)
                raise
            except BaseException as error:
                thrown = error
                sent = None


_Make = Callable[[tuple[Any, ...], dict[str, Any]], _ScopeProtocol[Any]]
_Done = Callable[[Any, Any], None]
_Item = Callable[[Any, Any], None]


def _wrap(function: F, make: _Make, done: _Done, item: _Item | None = None) -> F:
    """Run each call of ``function`` inside the scope ``make`` builds for it; ``done``
    records the result, ``item`` sees each value a generator yields."""
    if inspect.isasyncgenfunction(function):
        return _wrap_async_generator(function, make, done, item)
    if inspect.isgeneratorfunction(function):
        return _wrap_generator(function, make, done, item)
    if inspect.iscoroutinefunction(function):
        @functools.wraps(function)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with make(args, kwargs) as handle:
                result = await function(*args, **kwargs)
                done(handle, result)
                return result

        return run_async  # type: ignore[return-value]

    @functools.wraps(function)
    def run_sync(*args: Any, **kwargs: Any) -> Any:
        with make(args, kwargs) as handle:
            result = function(*args, **kwargs)
            done(handle, result)
            return result

    return run_sync  # type: ignore[return-value]


def _wrap_generator(function: F, make: _Make, done: _Done, item: _Item | None) -> F:
    @functools.wraps(function)
    def run_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        context = contextvars.copy_context()
        run = context.run
        scope = run(make, args, kwargs)
        handle = run(scope.__enter__)
        try:
            inner = run(function, *args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                try:
                    if thrown is None:
                        value = run(inner.send, sent)
                    else:
                        error, thrown = thrown, None
                        value = run(inner.throw, error)
                except StopIteration as stop:
                    result = stop.value
                    break
                if item is not None:
                    run(item, handle, value)
                try:
                    sent = yield value
                except GeneratorExit:
                    run(inner.close)
                    raise
                except BaseException as error:
                    thrown = error
                    sent = None
            run(done, handle, result)
        except BaseException as error:
            run(scope.__exit__, type(error), error, error.__traceback__)
            raise
        run(scope.__exit__, None, None, None)
        return result

    return run_generator  # type: ignore[return-value]


def _wrap_async_generator(function: F, make: _Make, done: _Done, item: _Item | None) -> F:
    @functools.wraps(function)
    async def run_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        context = contextvars.copy_context()
        run = context.run
        scope = run(make, args, kwargs)
        handle = run(scope.__enter__)
        try:
            inner = run(function, *args, **kwargs)
            sent: Any = None
            thrown: BaseException | None = None
            while True:
                try:
                    if thrown is None:
                        value = await _InContext(context, inner.asend(sent))
                    else:
                        error, thrown = thrown, None
                        value = await _InContext(context, inner.athrow(error))
                except StopAsyncIteration:
                    break
                if item is not None:
                    run(item, handle, value)
                try:
                    sent = yield value
                except GeneratorExit:
                    await _InContext(context, inner.aclose())
                    raise
                except BaseException as error:
                    thrown = error
                    sent = None
            run(done, handle, None)
        except BaseException as error:
            run(scope.__exit__, type(error), error, error.__traceback__)
            raise
        run(scope.__exit__, None, None, None)

    return run_async_generator  # type: ignore[return-value]
