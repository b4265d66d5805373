"""Shared helpers of the asyncio tests: polling a condition, yielding to the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

WAIT = 10.0
"""Upper bound of every wait: generous, the suite shares two cores with others."""


async def _poll(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate()`` every 5 ms; False once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll until ``predicate()``; fails the test after ``timeout`` seconds."""
    if not await _poll(predicate, timeout):
        pytest.fail(f"condition not met within {timeout}s")


async def eventually(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll until ``predicate()``; raises AssertionError after ``timeout`` seconds."""
    if not await _poll(predicate, timeout):
        raise AssertionError("condition not reached in time")


async def yields(count: int) -> None:
    """Give the event loop ``count`` turns."""
    for _ in range(count):
        await asyncio.sleep(0)
