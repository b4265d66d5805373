"""The core needs the OpenTelemetry API only: the SDK loads when telemetry is configured.

Each check runs in a fresh interpreter, since this test process has the SDK loaded already.
"""

from __future__ import annotations

import textwrap

from telemetry_helpers import run_python

# Makes the SDK, the exporters and gRPC unimportable, and records every attempt (an attempt
# that some ``try/except ImportError`` swallowed is a failure too).
BLOCKER = textwrap.dedent("""
    import json, sys

    BLOCKED = ("opentelemetry.sdk", "opentelemetry.exporter", "grpc")
    attempts = []

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == root or name.startswith(root + ".") for root in BLOCKED):
                attempts.append(name)
                raise ModuleNotFoundError(f"blocked by the test: {name}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
""")

USE_THE_CORE = BLOCKER + textwrap.dedent("""
    import asyncio

    from otel_agentbus import Event, EventBus, make_filter, known_kinds
    from otel_agentbus import filters, kinds, subscription, runs, tracecontext
    from otel_agentbus.compat.hive import EventBus as HiveBus
    from otel_agentbus.instrument import agent, tool
    from otel_agentbus.runtime import AgentRuntime, DecisionTracker, Graph
    from otel_agentbus.telemetry.context import context_of

    async def main():
        bus = EventBus()
        seen = []

        async def handler(event):
            seen.append(event.kind)

        bus.subscribe(handler, filter=make_filter(kind_prefix="agent."))

        @tool
        async def add(a, b):
            return a + b

        @agent(bus=bus)
        async def calculator(a):
            assert runs.current_run() is not None
            with tracecontext.use_span_of(Event("agent.decision.made")):
                return await add(a, 1)

        answer = await calculator(41)
        await bus.publish(Event("agent.decision.made", {"choice": "done"}))
        await bus.close(drain=True)
        hive = HiveBus()
        context_of(Event("agent.decision.made"))
        return answer, seen, hive

    answer, seen, _ = asyncio.run(main())
    loaded = sorted(name for name in sys.modules
                    if name.startswith(("opentelemetry.sdk", "opentelemetry.exporter", "grpc",
                                        "otel_agentbus.telemetry.config",
                                        "otel_agentbus.telemetry.mirror")))
    print(json.dumps({"answer": answer, "seen": seen, "attempts": attempts, "loaded": loaded,
                      "known": "agent.run.started" in known_kinds(),
                      "modules": [m.__name__ for m in (filters, kinds, subscription,
                                                       AgentRuntime, DecisionTracker, Graph)]}))
""")


def test_the_core_runs_without_the_sdk() -> None:
    result = run_python(USE_THE_CORE)
    assert result["attempts"] == [], "the core tried to import the SDK"
    assert result["loaded"] == []
    assert result["answer"] == 42
    assert result["seen"] == ["agent.run.started", "agent.tool.call.started",
                              "agent.tool.call.completed", "agent.run.completed",
                              "agent.decision.made"]


def test_the_blocker_does_block() -> None:
    """The check above would pass vacuously if the blocker let the SDK through."""
    result = run_python(BLOCKER + textwrap.dedent("""
        try:
            from otel_agentbus import configure
            configure(exporter="none")
            outcome = "configured"
        except ModuleNotFoundError as error:
            outcome = str(error)
        print(json.dumps({"outcome": outcome, "attempts": attempts}))
    """))
    assert result["outcome"].startswith("blocked by the test: opentelemetry.sdk")
    assert result["attempts"]


def test_configure_loads_the_sdk_and_exports_as_before() -> None:
    result = run_python(textwrap.dedent("""
        import json, sys
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from otel_agentbus import EventBus, Telemetry, configure
        from otel_agentbus.instrument import agent, tool

        exported = InMemorySpanExporter()
        bus = EventBus()
        telemetry = configure(service_name="api-only", span_exporter=exported,
                              metrics_enabled=False, signal_handlers=False, bus=bus)

        @tool
        def add(a, b):
            return a + b

        @agent(bus=bus)
        def calculator(a):
            return add(a, 1)

        calculator(41)
        telemetry.shutdown()
        print(json.dumps({
            "is_telemetry": isinstance(telemetry, Telemetry),
            "sdk_loaded": "opentelemetry.sdk.trace" in sys.modules,
            "spans": sorted(span.name for span in exported.get_finished_spans()
                            if not span.attributes.get("agentbus.span.pending")),
        }))
    """))
    assert result["is_telemetry"] and result["sdk_loaded"]
    assert result["spans"] == ["execute_tool add", "invoke_agent calculator"]
