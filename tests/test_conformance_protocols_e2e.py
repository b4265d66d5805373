"""End to end: a runtime written against seeds 002 and 004 (behest ``emit``/``on`` on the
outside, PicoClaw events inside its run) exports over gRPC to the embedded receiver, and
its run is one trace there: the run span, the PicoClaw tool execution as an
``execute_tool`` span, a routed channel message as a span event with its routing ids."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from telemetry_helpers import Receiver, run_python, start_receiver

from otel_agentbus.receiver.queries import get_trace, list_runs

pytestmark = pytest.mark.timeout(90)

CLAW_SCRIPT = r'''
import asyncio, json, sys
from otel_agentbus import EventBus, configure
from otel_agentbus.compat import picoclaw as pc
from otel_agentbus.compat.behest import (
    EmitRequest, EventKind, ModelName, ProviderId, RuntimeInvocation,
)

endpoint = sys.argv[1]


class ClawRuntime:
    """The seed 002 runtime: run(request) -> output; it reports through PicoClaw events."""

    name = "claw"

    def __init__(self, bus):
        self.bus = bus
        self.events = pc.EventBus(bus)

    async def run(self, request):
        tool = {"tool_call_id": "t1", "tool_name": "search"}
        await self.events.publish(None, pc.Event(kind=pc.KindAgentToolExecStart, payload=tool))
        await self.events.publish(None, pc.Event(kind=pc.KindAgentToolExecEnd,
                                                 payload={**tool, "result": "ok"}))
        await self.events.publish(None, pc.Event(
            kind=pc.KindChannelMessageOutboundSent,
            scope=pc.Scope(channel="telegram", chat_id="c1", sender_id="u1"),
            correlation=pc.Correlation(reply_to_id="m0")))
        return {"answer": request.input.upper()}


async def main():
    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="claw-agent",
                          metrics_enabled=False)
    bus = telemetry.attach(EventBus())
    invocation = RuntimeInvocation(ClawRuntime(bus))
    done = asyncio.Event()
    seen = []

    def completed(event, ctx, control):
        seen.append(str(event.run_id()))
        done.set()

    handle = await invocation.on(EventKind.RunCompleted, completed)
    output = await invocation.emit(
        lambda ctx, control: EmitRequest.new(ProviderId.new("p"), ModelName.new("m"), "hi"))
    await asyncio.wait_for(done.wait(), 10)
    handle.abort()
    await bus.close()
    flushed = telemetry.force_flush(10)
    telemetry.shutdown(timeout=10)
    print(json.dumps({"output": output, "seen": seen, "flushed": flushed}))


asyncio.run(main())
'''


@pytest.fixture
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    started = start_receiver(tmp_path_factory.mktemp("protocols-e2e"))
    try:
        yield started
    finally:
        started.stop()


def test_a_behest_and_picoclaw_runtime_is_one_trace_in_the_receiver(
        receiver: Receiver) -> None:
    result = run_python(CLAW_SCRIPT, receiver.grpc_endpoint, timeout=60)
    assert result["output"] == {"answer": "HI"}
    assert result["flushed"] is True
    [run] = list_runs(receiver.db)
    assert result["seen"] == [run.run_id]
    assert (run.agent, run.status, run.service_name) == ("claw", "completed", "claw-agent")
    spans = {s.name: s for s in get_trace(receiver.db, run.trace_id).spans if not s.pending}
    assert sorted(spans) == ["execute_tool search", "invoke_agent claw"]
    root, tool = spans["invoke_agent claw"], spans["execute_tool search"]
    assert tool.parent_span_id == root.span_id
    [message] = [e for e in root.events if e.name == "channel.message.outbound_sent"]
    assert message.attributes["agentbus.channel.name"] == "telegram"
    assert message.attributes["agentbus.chat.id"] == "c1"
    assert message.attributes["agentbus.sender.id"] == "u1"
    assert message.attributes["agentbus.message.reply_to_id"] == "m0"
