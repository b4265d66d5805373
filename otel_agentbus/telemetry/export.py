"""The span export pipeline ``configure()`` builds: the SDK's batch processor with our queue
and batch sizes, an exporter wrapper that counts what reached the backend, one that lets
exports overlap, and the counter of spans a full queue evicts.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from . import sdk_internals

logger = logging.getLogger("otel_agentbus.telemetry")


class _Unanswered(threading.local):
    seen = False


_unanswered = _Unanswered()


def note_unanswered() -> None:
    """Say, on the exporting thread, that a request's deadline passed without an answer
    (gRPC ``DEADLINE_EXCEEDED``): the backend may have stored it all the same. The gRPC
    stub :mod:`.otlp` gives the span exporter calls it."""
    _unanswered.seen = True


class CountingSpanExporter(SpanExporter):
    """Wraps the real exporter to count what reached the backend, what did not, and what
    is on its way (``in_flight``: handed to the exporter, no answer yet).

    ``timed_out`` is the part of ``failed`` whose export got no answer in time (see
    :func:`note_unanswered`): a backend slower than the exporter's own timeout may still
    have stored those spans, so they are unconfirmed rather than lost.

    ``stop_sending()`` (called when a bounded shutdown gives up) makes every later batch
    fail at once without being sent: those spans are ``unsent``, and the counts then say
    exactly what the backend can still receive (the batches in flight) and what it never
    will."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self.timed_out = 0
        self.in_flight = 0
        self.unsent = 0
        self._sending = True
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        count = len(spans)
        with self._lock:
            if not self._sending:
                self.unsent += count
                return SpanExportResult.FAILURE
            self.in_flight += count
        _unanswered.seen = False
        try:
            result = self.inner.export(spans)
        except Exception:
            logger.exception("span export raised")
            result = SpanExportResult.FAILURE
        with self._lock:
            self.in_flight -= count
            if result is SpanExportResult.SUCCESS:
                self.exported += count
            else:
                self.failed += count
                if _unanswered.seen:
                    self.timed_out += count
        return result

    def stop_sending(self) -> None:
        """Send nothing more: later batches count as ``unsent`` (the process is going)."""
        with self._lock:
            self._sending = False

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


EXPORTS_IN_FLIGHT: Final = 2
"""OTLP/gRPC span exports ``configure()`` lets run at once (the SDK's processor runs one).

Into the embedded receiver, a 100,000-span burst went 12% faster with two than with one
(the next batch is encoded while SQLite stores the last); three were slower again, the
exports then taking more of the GIL from the agent while it publishes."""


class PipelinedSpanExporter(SpanExporter):
    """Lets the batch processor hand over a batch and go on while earlier ones are sent.

    The SDK's batch processor exports one batch at a time and waits for the answer: while
    the backend stores a batch (or the network carries it), no span is encoded. Here
    ``export`` starts the wrapped export on a thread of its own and returns once fewer than
    ``in_flight`` exports run, so the next batch is encoded while the previous one is
    stored. The processor ignores what ``export`` returns; the outcome of each batch is
    what the wrapped exporter (a :class:`CountingSpanExporter`) counts when it is known.
    ``force_flush`` and ``shutdown`` wait for the exports still running.
    """

    def __init__(self, inner: SpanExporter, in_flight: int = EXPORTS_IN_FLIGHT) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {in_flight!r}")
        self.inner = inner
        self.in_flight = in_flight
        self._shut_down = False
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A forked child has none of the parent's sender threads: start from zero.
            alive = weakref.WeakMethod(self._reset)

            def reset_in_child() -> None:
                reset = alive()
                if reset is not None:
                    reset()

            os.register_at_fork(after_in_child=reset_in_child)

    def _reset(self) -> None:
        self._free = threading.Semaphore(self.in_flight)
        self._idle = threading.Condition()
        self._running = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        self._free.acquire()  # back-pressure: wait while in_flight exports run
        with self._idle:
            self._running += 1
        # The sender runs in the processor's context, which tells instrumented libraries
        # (gRPC, HTTP) not to trace the export itself.
        context = contextvars.copy_context()
        sender = threading.Thread(target=context.run, args=(self._send, list(spans)),
                                  name="otel-agentbus-span-export", daemon=True)
        try:
            sender.start()
        except BaseException:
            self._done()
            raise
        return SpanExportResult.SUCCESS

    def _send(self, spans: list[ReadableSpan]) -> None:
        try:
            self.inner.export(spans)
        except Exception:
            logger.exception("span export raised")
        finally:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._running -= 1
            if not self._running:
                self._idle.notify_all()
        self._free.release()

    def _wait_idle(self, timeout_millis: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout_millis / 1000)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait for the exports in flight, then flush the wrapped exporter."""
        idle = self._wait_idle(timeout_millis)
        flushed = self.inner.force_flush(timeout_millis)
        return idle and flushed is not False  # the SDK's base class returns None

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        """Refuse new batches, wait (bounded) for those in flight, shut the wrapped one."""
        self._shut_down = True
        if not self._wait_idle(timeout_millis):
            logger.warning("%d span exports still running at shutdown", self._running)
        self.inner.shutdown()


class _CountingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the sampled spans it was handed
    (``accepted``): with the exporter's counts and the drops, what is still queued."""

    def __init__(self, exporter: SpanExporter, *, max_queue_size: int | None,
                 max_export_batch_size: int | None) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size,
                         max_export_batch_size=max_export_batch_size)
        self.accepted = 0
        self._accepted_lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            with self._accepted_lock:  # spans end on many threads
                self.accepted += 1
        super().on_end(span)


class _FlushingBatchSpanProcessor(_CountingBatchSpanProcessor):
    """The batch processor, whose ``force_flush`` also waits for the batches its
    :class:`PipelinedSpanExporter` still has in flight (the SDK's does not flush its
    exporter)."""

    def __init__(self, exporter: PipelinedSpanExporter, *, max_queue_size: int | None,
                 max_export_batch_size: int | None) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size,
                         max_export_batch_size=max_export_batch_size)
        self._pipeline = exporter

    def force_flush(self, timeout_millis: int | None = None) -> bool:
        flushed = super().force_flush(timeout_millis)
        wait = 30_000 if timeout_millis is None else timeout_millis
        return self._pipeline.force_flush(wait) and flushed


class _DropCounter:
    """Stands in for a BatchSpanProcessor's internal metrics hooks (no-ops unless the SDK's
    own are enabled) to count the spans its full queue evicts, which the SDK only logs."""

    def __init__(self, inner: Any, queue: Any) -> None:
        self.inner = inner
        self.queue = queue
        self.dropped = 0

    def register_queue_size(self, get_queue_size: Any) -> None:
        self.inner.register_queue_size(get_queue_size)

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        if error_type == "queue_full" and len(self.queue) < (self.queue.maxlen or 0):
            return  # the export thread took a batch since the processor looked: no eviction
        self.dropped += count
        self.inner.drop_items(count, error_type)

    def finish_items(self, count: int) -> None:
        self.inner.finish_items(count)


def _count_drops(processor: BatchSpanProcessor) -> _DropCounter | None:
    """Count the spans the processor's full queue evicts; None on an SDK without the hooks
    (drops then stay in spans_unaccounted)."""
    counter: _DropCounter | None = sdk_internals.replace_batch_metrics(processor, _DropCounter)
    return counter


DEFAULT_SPAN_QUEUE: Final = 131_072
"""Spans the batch processor may hold for export (the SDK's default is 2,048).

A run of 100,000 tool calls published faster than the collector ingests them would
overflow 2,048 at once and lose spans. A queued mirror span takes about 800 bytes, so the
queue costs memory only while export lags (about 100 MB if it ever fills).
``OTEL_BSP_MAX_QUEUE_SIZE`` overrides it."""


def _span_queue_size() -> int | None:
    """Our default queue size, unless ``OTEL_BSP_MAX_QUEUE_SIZE`` says (None lets the SDK
    read it)."""
    return None if _env("OTEL_BSP_MAX_QUEUE_SIZE") else DEFAULT_SPAN_QUEUE


DEFAULT_EXPORT_BATCH: Final = 2048
"""Spans the batch processor puts in one export (the SDK's default is 512).

Each export costs a request, a sender thread and, in the receiver, a transaction, whatever
its size: a 100,000-span burst into the embedded receiver went about 8% faster with 2,048
than with 512 (1,024 and 4,096 were in between or no better). A request of 2,048 mirror
spans is about 600 KB; the gRPC exporter splits any batch that encodes over 4 MB
(``otlp.MAX_REQUEST_BYTES``), what collectors accept by default, so larger spans do not
make requests a collector refuses. ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` overrides it; it
never exceeds the queue size."""

_SDK_DEFAULT_QUEUE: Final = 2048


def _export_batch_size(queue_size: int | None) -> int | None:
    """Our default batch size, unless ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` says (None lets the
    SDK read it); capped at the queue size, which the SDK requires."""
    if _env("OTEL_BSP_MAX_EXPORT_BATCH_SIZE"):
        return None
    if queue_size is None:  # OTEL_BSP_MAX_QUEUE_SIZE is set; the SDK falls back on bad ones
        try:
            queue_size = int(os.environ["OTEL_BSP_MAX_QUEUE_SIZE"])
        except ValueError:
            queue_size = _SDK_DEFAULT_QUEUE
    return max(1, min(DEFAULT_EXPORT_BATCH, queue_size))


def _batch_processor(exporter: SpanExporter, *,
                     pipelined: bool) -> _CountingBatchSpanProcessor:
    """The SDK's batch processor with our queue and batch sizes; with ``pipelined``, its
    exports overlap (see :class:`PipelinedSpanExporter`)."""
    queue_size = _span_queue_size()
    batch_size = _export_batch_size(queue_size)
    if pipelined:
        return _FlushingBatchSpanProcessor(PipelinedSpanExporter(exporter),
                                           max_queue_size=queue_size,
                                           max_export_batch_size=batch_size)
    return _CountingBatchSpanProcessor(exporter, max_queue_size=queue_size,
                                       max_export_batch_size=batch_size)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value.strip() if value and value.strip() else None
