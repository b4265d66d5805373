"""Fixtures shared by several test modules (a module's own fixture of the same name wins)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from telemetry_helpers import HarnessFactory

from otel_agentbus.default_mirror import unregister_default_mirror
from otel_agentbus.runtime.agent_runtime import AgentRuntime


@pytest.fixture(autouse=True)
def _no_default_mirror_across_tests() -> Iterator[None]:
    """A test's configure() must not make a later test's buses mirror to it."""
    yield
    unregister_default_mirror()


@pytest.fixture
async def make() -> AsyncIterator[HarnessFactory]:
    """Makes in-process telemetry harnesses; closes every one after the test."""
    factory = HarnessFactory()
    yield factory
    await factory.close()


@pytest.fixture
async def runtimes() -> AsyncIterator[list[AgentRuntime]]:
    """Runtimes made by a test are stopped even when it fails."""
    made: list[AgentRuntime] = []
    yield made
    for runtime in made:
        await runtime.stop()  # closes a webhook server and cancels what still runs
