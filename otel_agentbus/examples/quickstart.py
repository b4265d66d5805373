"""A small agent run published on the bus, watched by three kinds of subscriber.

    python -m otel_agentbus.examples.quickstart
"""

from __future__ import annotations

import asyncio

from otel_agentbus import Event, EventBus, Scope, Source
from otel_agentbus.kinds import (
    DECISION_MADE,
    LLM_DELTA,
    LLM_REQUEST,
    LLM_RESPONSE,
    RUN_COMPLETED,
    RUN_STARTED,
    TOOL_CALL_COMPLETED,
    TOOL_CALL_STARTED,
)


async def fake_agent(bus: EventBus, run_id: str) -> None:
    """What an instrumented agent publishes: a run with one LLM call and one tool call."""
    scope = Scope(run_id=run_id, agent="researcher", session_id="conv-1")
    await bus.publish(Event(RUN_STARTED, {"input": "find flights"}, scope=scope))
    await bus.publish(Event(LLM_REQUEST, {"model": "gpt-x", "call_id": "l1"},
                            scope=scope))
    for chunk in ("Search", "ing…"):
        await bus.publish(Event(LLM_DELTA, {"content": chunk, "call_id": "l1"},
                                scope=scope))
    await bus.publish(Event(LLM_RESPONSE,
                            {"call_id": "l1", "input_tokens": 120, "output_tokens": 8},
                            scope=scope))
    await bus.publish(Event(
        DECISION_MADE,
        {"intent": "pick a tool", "options": ["search", "ask user"], "chosen": "search",
         "reasoning": "the question is factual"},
        scope=scope,
    ))
    tool = Source("tool", "search_flights")
    await bus.publish(Event(TOOL_CALL_STARTED,
                            {"tool_call_id": "t1", "tool_name": "search_flights"},
                            scope=scope, source=tool))
    await asyncio.sleep(0.01)
    await bus.publish(Event(TOOL_CALL_COMPLETED,
                            {"tool_call_id": "t1", "tool_name": "search_flights",
                             "is_error": False}, scope=scope, source=tool))
    await bus.publish(Event(RUN_COMPLETED, {"output": "3 flights"}, scope=scope))


async def main() -> None:
    async with EventBus() as bus:
        # 1. A handler subscription: every tool event, sequentially.
        def on_tool(event: Event) -> None:
            print(f"  [tools]  seq={event.seq} {event.kind} {event.payload['tool_name']}")

        bus.subscribe(on_tool, kind_prefix="agent.tool.")

        # 2. An async iterator over one run's lifecycle.
        async def watch_run() -> None:
            async for event in bus.stream(kind_prefix="agent.run.", run_id="run-1"):
                print(f"  [run]    {event.kind}")
                if event.kind == RUN_COMPLETED:
                    break

        watcher = asyncio.create_task(watch_run())
        # 3. wait_for: block until something specific happens (Hive's API).
        waiter = asyncio.create_task(bus.wait_for(DECISION_MADE, timeout=5))
        await asyncio.sleep(0)

        print("publishing one agent run…")
        await fake_agent(bus, "run-1")
        decision = await waiter
        await watcher
        assert decision is not None
        print(f"  [wait]   decision chose {decision.payload['chosen']!r}")

        stats = bus.stats()
        print(f"bus: published={stats.published} delivered={stats.delivered} "
              f"dropped={stats.dropped} history={stats.history_size}")
        print("history, newest first:", [e.kind for e in bus.history(limit=3)])


if __name__ == "__main__":
    asyncio.run(main())
