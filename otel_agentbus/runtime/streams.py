"""One execution stream per entry point: its concurrency slots, queue bound and counters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .entry_points import EntryPoint
from .execution import ExecutionQueueTimeoutError, ExecutionRejectedError, ExecutionStatus


class ExecutionStream:
    """Admits executions of one entry point and runs at most ``max_concurrent`` at once.

    Admission is synchronous (so ``trigger`` can refuse at once): an execution is refused
    when ``max_concurrent + max_queued`` are already unfinished. Admitted executions
    wait for a slot first come, first served.
    """

    def __init__(self, spec: EntryPoint) -> None:
        self.spec = spec
        self._slots = asyncio.Semaphore(spec.max_concurrent)
        self.unfinished = 0
        self.running = 0
        self.queued = 0
        self.max_running = 0
        self.triggered = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.rejected = 0
        self.deduplicated = 0

    @property
    def id(self) -> str:
        return self.spec.id

    def admit(self) -> None:
        limit = self.spec.max_concurrent + self.spec.max_queued
        if self.unfinished >= limit:
            self.rejected += 1
            raise ExecutionRejectedError(
                f"entry point {self.spec.id!r} is full: {self.running} running, "
                f"{self.unfinished - self.running} waiting (max_concurrent="
                f"{self.spec.max_concurrent}, max_queued={self.spec.max_queued})")
        self.unfinished += 1
        self.triggered += 1

    def finished(self, status: ExecutionStatus) -> None:
        self.unfinished -= 1
        if status == "completed":
            self.completed += 1
        elif status == "failed":
            self.failed += 1
        else:
            self.cancelled += 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``max_concurrent`` slots, waiting at most ``queue_timeout``."""
        self.queued += 1
        try:
            if self.spec.queue_timeout is None:
                await self._slots.acquire()
            else:
                try:
                    await asyncio.wait_for(self._slots.acquire(), self.spec.queue_timeout)
                except TimeoutError:
                    raise ExecutionQueueTimeoutError(
                        f"no free slot on entry point {self.spec.id!r} within "
                        f"{self.spec.queue_timeout}s") from None
        finally:
            self.queued -= 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()

    def stats(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "entry_point": spec.id, "name": spec.name or spec.id,
            "trigger_type": spec.trigger_type, "max_concurrent": spec.max_concurrent,
            "max_queued": spec.max_queued, "running": self.running, "queued": self.queued,
            "max_running": self.max_running, "triggered": self.triggered,
            "completed": self.completed, "failed": self.failed, "cancelled": self.cancelled,
            "rejected": self.rejected, "deduplicated": self.deduplicated,
        }
