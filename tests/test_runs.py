"""RunScope: one end event whatever happens, the run's scope for children, the run span
current inside."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace

from otel_agentbus import EventBus
from otel_agentbus.runs import RunScope, current_run


async def test_completed_run_publishes_start_and_completion_with_output() -> None:
    bus = EventBus()
    async with RunScope(bus, "planner", session_id="conv-1", input={"q": "hi"}) as run:
        assert current_run() is run
        run.output = {"answer": 42}
    assert current_run() is None
    events = list(reversed(bus.history()))
    assert [e.kind for e in events] == ["agent.run.started", "agent.run.completed"]
    assert events[0].payload["input"] == {"q": "hi"}
    assert events[1].payload["output"] == {"answer": 42}
    assert {e.scope.session_id for e in events} == {"conv-1"}
    assert run.status == "completed"


async def test_failure_publishes_failed_and_reraises_unchanged() -> None:
    bus = EventBus()
    error = KeyError("missing")
    with pytest.raises(KeyError) as raised:
        async with RunScope(bus, "planner"):
            raise error
    assert raised.value is error
    end = bus.history(limit=1)[0]
    assert end.kind == "agent.run.failed"
    assert end.payload["error_type"] == "KeyError"


async def test_cancellation_publishes_cancelled_with_the_reason() -> None:
    bus = EventBus()
    entered = asyncio.Event()

    async def agent() -> None:
        async with RunScope(bus, "planner") as run:
            run.cancel_reason = "timeout"
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(agent())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    end = bus.history(limit=1)[0]
    assert end.kind == "agent.run.cancelled"
    assert end.payload["reason"] == "timeout"


async def test_sub_run_inherits_the_conversation() -> None:
    bus = EventBus()
    async with RunScope(bus, "planner", session_id="conv-9"), RunScope(bus, "helper") as inner:
        assert inner.scope.session_id == "conv-9"
        assert inner.run_id != ""


async def test_run_span_is_current_inside_the_scope() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_agentbus import configure

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = configure(tracer_provider=provider, metrics_enabled=False, pending_spans=False)
    bus = telemetry.attach(EventBus())
    try:
        async with RunScope(bus, "planner") as run:
            inside = trace.get_current_span().get_span_context()
        assert run.started is not None
        assert format(inside.span_id, "016x") == run.started.correlation.span_id
        assert not trace.get_current_span().get_span_context().is_valid
    finally:
        telemetry.shutdown()
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["invoke_agent planner"]
