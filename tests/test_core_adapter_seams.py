"""The public seams adapters stand on: a bus made after configure() mirrors to it, span
handles usable from other threads, decision()/outcome()/problem(), and child runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from telemetry_helpers import attrs, forget, parent_id, span_id, trace_id

from otel_agentbus import (
    Event,
    EventBus,
    NoScopeError,
    Scope,
    Source,
    Telemetry,
    configure,
    current_handle,
    decision,
    outcome,
    problem,
    publish_start,
)
from otel_agentbus import semconv as sc
from otel_agentbus.compat.hive import EventBus as HiveEventBus
from otel_agentbus.default_mirror import default_mirror
from otel_agentbus.instrument import agent, tool
from otel_agentbus.runs import current_run
from otel_agentbus.runtime.tracker_store import Option

pytestmark = pytest.mark.timeout(60)


class Configured:
    def __init__(self, **options: Any) -> None:
        self.provider = TracerProvider()
        self.exporter = InMemorySpanExporter()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry: Telemetry = configure(tracer_provider=self.provider,
                                              metrics_enabled=False, pending_spans=False,
                                              signal_handlers=False, **options)
        forget(self.telemetry)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]


@pytest.fixture
def telemetry() -> Iterator[Configured]:
    configured = Configured()
    yield configured
    configured.telemetry.shutdown(timeout=5)
    configured.provider.shutdown()


def one_run(bus: EventBus, agent_name: str = "planner") -> None:
    scope = Scope(run_id=f"run-{agent_name}", agent=agent_name)
    bus.publish_nowait(Event("agent.run.started", scope=scope))
    bus.publish_nowait(Event("agent.run.completed", scope=scope))


# ------------------------------------------------------------- zero-change default
def test_a_bus_made_after_configure_mirrors_to_it(telemetry: Configured) -> None:
    one_run(EventBus())
    assert [s.name for s in telemetry.spans()] == ["invoke_agent planner"]


def test_a_bus_made_before_configure_or_opting_out_does_not_mirror() -> None:
    before = EventBus()
    configured = Configured()
    try:
        one_run(before, "early")
        one_run(EventBus(telemetry=False), "opted-out")
        assert configured.spans() == []
    finally:
        configured.telemetry.shutdown(timeout=5)


def test_attaching_a_default_mirrored_bus_again_records_each_event_once(
        telemetry: Configured) -> None:
    bus = telemetry.telemetry.attach(EventBus())
    one_run(bus)
    assert len(telemetry.spans()) == 1


def test_configure_can_leave_new_buses_alone() -> None:
    configured = Configured(mirror_new_buses=False)
    try:
        assert default_mirror() is None
        one_run(EventBus())
        assert configured.spans() == []
    finally:
        configured.telemetry.shutdown(timeout=5)


def test_shutdown_unregisters_the_default_mirror() -> None:
    configured = Configured()
    assert default_mirror() is configured.telemetry.mirror
    configured.telemetry.shutdown(timeout=5)
    assert default_mirror() is None
    one_run(EventBus())
    assert configured.spans() == []


async def test_the_hive_facade_made_after_configure_produces_spans(
        telemetry: Configured) -> None:
    hive = HiveEventBus()
    await hive.emit_execution_started("stream-1", "exec-1", {"q": "hi"})
    await hive.emit_execution_completed("stream-1", "exec-1", {"a": "ok"})
    run = [s for s in telemetry.spans() if s.name.startswith("invoke_agent")]
    assert len(run) == 1
    assert attrs(run[0])[sc.RUN_ID] == "exec-1"
    assert telemetry.telemetry.export_stats()["spans_ended"] >= 1
    await hive.close()


# ------------------------------------------------------------------- span handles
def test_a_handle_makes_its_span_current_on_another_thread(telemetry: Configured) -> None:
    bus = EventBus()
    run = publish_start(bus, Event("agent.run.started", scope=Scope(run_id="r1", agent="a")))
    tool_handle = run.start_child("agent.tool.call.started",
                                  {"tool_call_id": "t1", "tool_name": "search"},
                                  source=Source("tool", "search"))
    seen: dict[str, Any] = {}

    def callback_thread() -> None:
        tool_handle.attach()
        seen["handle"] = current_handle()
        with trace.get_tracer("a-library", tracer_provider=telemetry.provider) \
                .start_as_current_span("http GET"):
            pass
        tool_handle.end({"result": "ok"})  # detaches: nothing of ours stays current
        seen["after"] = trace.get_current_span().get_span_context().is_valid

    worker = threading.Thread(target=callback_thread)
    worker.start()
    worker.join()
    run.end()
    assert seen == {"handle": tool_handle, "after": False}
    library, tool_span = telemetry.named("http GET"), telemetry.named("execute_tool search")
    assert parent_id(library) == span_id(tool_span)
    assert trace_id(library) == trace_id(telemetry.named("invoke_agent a"))
    assert tool_span.status.status_code is StatusCode.UNSET


def test_ending_with_an_error_fails_the_span_with_its_cause(telemetry: Configured) -> None:
    bus = EventBus()
    run = publish_start(bus, Event("agent.run.started", scope=Scope(run_id="r2", agent="b")))
    run.attach()
    assert current_run() is run.run
    ended = run.end(error=ValueError("no route"))
    assert current_run() is None
    assert run.end() is None  # only the first end publishes
    assert ended is not None and ended.kind == "agent.run.failed"
    span = telemetry.named("invoke_agent b")
    assert span.status.status_code is StatusCode.ERROR
    assert "no route" in (span.status.description or "")
    assert attrs(span)[sc.ERROR_TYPE] == "ValueError"


def test_detach_on_a_thread_that_never_attached_changes_nothing(
        telemetry: Configured, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="opentelemetry.context")
    handle = publish_start(EventBus(), Event("agent.run.started",
                                             scope=Scope(run_id="r3", agent="c")))
    handle.attach()
    worker = threading.Thread(target=handle.detach)
    worker.start()
    worker.join()
    assert current_handle() is handle
    handle.end()
    assert current_handle() is None
    assert not [r for r in caplog.records if "detach" in r.getMessage()]


def test_publish_start_refuses_an_event_that_starts_no_span() -> None:
    with pytest.raises(ValueError, match="takes a start event"):
        publish_start(EventBus(telemetry=False), Event("agent.decision.made"))


# --------------------------------------------------------- decision/outcome/problem
def test_decision_outcome_problem_land_on_the_innermost_scope(telemetry: Configured) -> None:
    bus = EventBus()
    ids: dict[str, str] = {}

    @tool
    def search(query: str) -> str:
        ids["problem"] = problem("warning", "index stale", root_cause="nightly job late")
        return query

    @agent("planner", bus=bus)
    def plan() -> None:
        ids["decision"] = decision("pick a tool", ["search", {"id": "answer"}], "search",
                                   "needs facts")
        search("x")
        outcome(ids["decision"], True, result={"hits": 1})

    plan()
    made = [e for e in bus.history(limit=None) if e.kind.startswith(("agent.decision",
                                                                         "agent.problem"))]
    kinds = [e.kind for e in reversed(made)]
    assert kinds == ["agent.decision.made", "agent.problem.reported", "agent.decision.outcome"]
    chosen = next(e for e in made if e.kind == "agent.decision.made")
    # the decision tracker's option shape: each one reads back as an Option
    assert [Option.from_dict(o).id for o in chosen.payload["options"]] == ["search", "answer"]
    run_span = telemetry.named("invoke_agent planner")
    tool_span = telemetry.named("execute_tool search")
    assert [e.name for e in run_span.events] == [sc.EV_DECISION, sc.EV_OUTCOME]
    assert [e.name for e in tool_span.events] == [sc.EV_PROBLEM]
    assert run_span.events[0].attributes[sc.DECISION_CHOSEN] == "search"


def test_recording_outside_any_run_is_a_clear_error() -> None:
    with pytest.raises(NoScopeError, match=r"decision\(\) outside any run"):
        decision("x", ["a"], "a")
    with pytest.raises(NoScopeError, match=r"problem\(\) outside any run"):
        problem("minor", "nothing")


def test_recording_refuses_bad_input(telemetry: Configured) -> None:
    @agent("checker", bus=EventBus())
    def run() -> None:
        with pytest.raises(ValueError, match="not one of the options"):
            decision("x", ["a", "b"], "c")
        with pytest.raises(ValueError, match="severity must be one of"):
            problem("apocalyptic", "oops")

    run()


# --------------------------------------------------------------------- child runs
def test_an_agent_called_by_another_is_a_child_run_in_the_same_trace(
        telemetry: Configured) -> None:
    bus = EventBus()

    @agent("researcher", bus=bus)
    def research() -> str:
        return "facts"

    @agent("writer", bus=bus)
    def write() -> str:
        return research()

    assert write() == "facts"
    writer, researcher = telemetry.named("invoke_agent writer"), \
        telemetry.named("invoke_agent researcher")
    assert trace_id(researcher) == trace_id(writer)
    assert parent_id(researcher) == span_id(writer)
    assert attrs(researcher)[sc.GEN_AI_AGENT_NAME] == "researcher"
    assert attrs(researcher)[sc.RUN_ID] != attrs(writer)[sc.RUN_ID]


def test_a_run_given_a_parent_handle_is_its_child(telemetry: Configured) -> None:
    bus = EventBus()
    parent = publish_start(bus, Event("agent.run.started", scope=Scope(run_id="p", agent="p")))
    node = parent.start_child("agent.node.loop.started", node_id="delegate")
    child = publish_start(bus, Event("agent.run.started",
                                     scope=Scope(run_id="c", agent="helper")), parent=node)
    child.end()
    node.end()
    parent.end()
    helper, node_span = telemetry.named("invoke_agent helper"), telemetry.named("node delegate")
    assert parent_id(helper) == span_id(node_span)
    assert trace_id(helper) == trace_id(telemetry.named("invoke_agent p"))
