"""A deterministic multi-agent workload: what instrumented agents publish on the bus.

Everything a run publishes (ids, models, tools, token counts, decisions, failures, latencies)
comes from a ``random.Random`` seeded per run, so the same seed gives the same runs however
the event loop interleaves them. Only event timestamps (and so span timings) are real.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..bus import EventBus
from ..events import Event, Scope, Severity, Source
from ..kinds import (
    DECISION_MADE,
    DECISION_OUTCOME,
    LLM_DELTA,
    LLM_REQUEST,
    LLM_RESPONSE,
    NODE_LOOP_COMPLETED,
    NODE_LOOP_FAILED,
    NODE_LOOP_ITERATION,
    NODE_LOOP_STARTED,
    PROBLEM_REPORTED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_STARTED,
    TOOL_CALL_COMPLETED,
    TOOL_CALL_STARTED,
)

Outcome = Literal["completed", "failed", "cancelled"]

CANCEL_AT_TOOL_CALL: Final = 2
"""In the cancelled run the user presses stop while this (1-based) tool call is running."""
SLOW_TOOL_SECONDS: Final = 5.0
"""How long the tool the user cancels would take; the cancel always comes first."""
USER_STOP_AFTER_S: Final = 0.015
"""How long the user watches that tool call before pressing stop."""


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """What one kind of agent works with: its model, tools, tasks and typical failure."""

    name: str
    model: str
    provider: str
    tools: tuple[str, ...]
    tasks: tuple[str, ...]
    flaky_tool: str
    tool_error: str
    tool_error_type: str
    run_error_type: str


PROFILES: Final = (
    AgentProfile(
        name="travel-planner",
        model="gpt-4o-mini",
        provider="openai",
        tools=("search_flights", "search_hotels", "check_visa", "convert_currency"),
        tasks=(
            "Plan 4 days in Lisbon in May for two, mid-range budget",
            "Find the cheapest way from Berlin to Kyoto with one stop",
            "Weekend in Copenhagen, arriving Friday night",
        ),
        flaky_tool="search_hotels",
        tool_error="hotel inventory API returned 503 Service Unavailable",
        tool_error_type="HTTPError",
        run_error_type="ToolExecutionError",
    ),
    AgentProfile(
        name="support-triage",
        model="claude-3-5-haiku",
        provider="anthropic",
        tools=("lookup_customer", "search_kb", "classify_ticket", "create_ticket"),
        tasks=(
            "Customer reports double charge on invoice INV-2291",
            "Login loop after password reset on the mobile app",
            "Export to CSV times out for large workspaces",
        ),
        flaky_tool="lookup_customer",
        tool_error="CRM query timed out after 5.0s",
        tool_error_type="TimeoutError",
        run_error_type="TimeoutError",
    ),
    AgentProfile(
        name="code-reviewer",
        model="gemini-2.0-flash",
        provider="gcp.gemini",
        tools=("fetch_diff", "run_tests", "run_linter", "post_review_comment"),
        tasks=(
            "Review PR #481: retry logic for the payment webhook",
            "Review PR #502: migrate settings to pydantic v2",
            "Review PR #517: cache invalidation in the search index",
        ),
        flaky_tool="run_tests",
        tool_error="test runner exited with status 2 (collection error)",
        tool_error_type="ToolExecutionError",
        run_error_type="ToolExecutionError",
    ),
)


@dataclass(frozen=True, slots=True)
class RunPlan:
    """One run decided up front from the demo seed."""

    index: int
    run_id: str
    profile: AgentProfile
    session_id: str
    stream_id: str
    outcome: Outcome
    seed: int
    """Seeds the run's own generator, so concurrency cannot change what it publishes."""

    @property
    def agent(self) -> str:
        return self.profile.name


@dataclass(slots=True)
class RunResult:
    """What one run did, as seen by the agent that published it."""

    plan: RunPlan
    status: Outcome
    trace_id: str | None
    root_span_id: str | None
    events: int
    start_ns: int
    end_ns: int

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


def plan_runs(runs: int, seed: int) -> list[RunPlan]:
    """``runs`` runs over the agent profiles; with 3 or more, one fails and one is cancelled."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    rng = random.Random(seed)
    outcomes: list[Outcome] = ["completed"] * runs
    if runs >= 3:
        outcomes[1], outcomes[2] = "failed", "cancelled"
        rng.shuffle(outcomes)
    start = rng.randrange(len(PROFILES))
    plans: list[RunPlan] = []
    for index in range(runs):
        profile = PROFILES[(start + index) % len(PROFILES)]
        plans.append(RunPlan(
            index=index,
            run_id=f"run-{rng.getrandbits(32):08x}",
            profile=profile,
            session_id=f"conv-{rng.getrandbits(24):06x}",
            stream_id=f"{profile.name}/default",
            outcome=outcomes[index],
            seed=rng.getrandbits(64),
        ))
    return plans


class EventCounter:
    """An ordinary in-process subscriber: counts what it is handed, per kind."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()

    def __call__(self, event: Event) -> None:
        self.by_kind[event.kind] += 1

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    def by_family(self) -> dict[str, int]:
        """Counts per ``agent.<family>`` (run, node, llm, tool, decision, problem)."""
        families: Counter[str] = Counter()
        for kind, count in self.by_kind.items():
            families[".".join(kind.split(".")[:2])] += count
        return dict(sorted(families.items(), key=lambda item: (-item[1], item[0])))


@dataclass(slots=True)
class _Ids:
    calls: int = 0
    decisions: int = 0
    tool_calls_started: int = 0


@dataclass(slots=True)
class AgentRun:
    """Publishes one run's events the way an instrumented agent runtime would."""

    bus: EventBus
    plan: RunPlan
    rng: random.Random = field(init=False)
    ids: _Ids = field(default_factory=_Ids)
    events: int = 0
    trace_id: str | None = None
    root_span_id: str | None = None
    start_ns: int = 0
    end_ns: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.plan.seed)

    # ---- publishing ----------------------------------------------------------
    async def _emit(
        self, kind: str, payload: dict[str, Any] | None = None, *, node: str | None = None,
        source: Source | None = None, severity: Severity = Severity.INFO,
    ) -> Event:
        plan = self.plan
        scope = Scope(run_id=plan.run_id, stream_id=plan.stream_id, node_id=node,
                      agent=plan.agent, session_id=plan.session_id)
        event = Event(kind, payload, scope=scope, source=source or Source("agent", plan.agent),
                      severity=severity)
        await self.bus.publish(event)
        self.events += 1
        self.end_ns = event.time_ns
        return event

    async def _latency(self, low_ms: int, high_ms: int) -> None:
        await asyncio.sleep(self.rng.randint(low_ms, high_ms) / 1000)

    def _next_id(self, prefix: str) -> str:
        self.ids.calls += 1
        return f"{prefix}_{self.plan.run_id[4:]}_{self.ids.calls:02d}"

    # ---- building blocks -----------------------------------------------------
    async def _llm_call(self, node: str, finish: str) -> None:
        profile, rng = self.plan.profile, self.rng
        call_id = self._next_id("chatcmpl")
        source = Source("llm", profile.model)
        await self._emit(LLM_REQUEST, {
            "call_id": call_id, "model": profile.model, "provider": profile.provider,
            "temperature": 0.2, "max_tokens": 1024,
        }, node=node, source=source)
        await self._latency(5, 20)  # time to first token
        words = ("Checking", " the", " options", " against", " the", " constraints", "…")
        for chunk in words[: rng.randint(3, len(words))]:
            await self._emit(LLM_DELTA, {"call_id": call_id, "content": chunk},
                             node=node, source=source)
            await self._latency(1, 3)
        await self._emit(LLM_RESPONSE, {
            "call_id": call_id, "model": profile.model,
            "input_tokens": rng.randint(400, 2400), "output_tokens": rng.randint(20, 320),
            "finish_reasons": [finish],
        }, node=node, source=source)

    async def _decide(self, node: str, intent: str, options: Sequence[str], chosen: str,
                      reasoning: str) -> str:
        self.ids.decisions += 1
        decision_id = f"dec_{self.plan.run_id[4:]}_{self.ids.decisions:02d}"
        await self._emit(DECISION_MADE, {
            "decision_id": decision_id, "intent": intent, "options": list(options),
            "chosen": chosen, "reasoning": reasoning,
        }, node=node)
        return decision_id

    async def _tool_call(self, node: str, tool: str, *, fail: bool = False,
                         slow: bool = False) -> bool:
        """One tool call; returns whether it succeeded. ``slow`` is the call the user
        cancels: it is still running when ``agent.run.cancelled`` is published."""
        profile = self.plan.profile
        call_id = self._next_id("call")
        source = Source("tool", tool)
        self.ids.tool_calls_started += 1
        await self._emit(TOOL_CALL_STARTED, {
            "tool_call_id": call_id, "tool_name": tool,
            "arguments": {"query": self.rng.choice(profile.tasks)[:40]},
        }, node=node, source=source)
        if slow:
            await asyncio.sleep(SLOW_TOOL_SECONDS)
        else:
            await self._latency(1, 20)
        payload: dict[str, Any] = {"tool_call_id": call_id, "tool_name": tool,
                                   "is_error": fail}
        if fail:
            payload |= {"error": profile.tool_error, "error_type": profile.tool_error_type}
        else:
            payload["result"] = {"items": self.rng.randint(1, 12)}
        await self._emit(TOOL_CALL_COMPLETED, payload, node=node, source=source,
                         severity=Severity.ERROR if fail else Severity.INFO)
        return not fail

    # ---- the run ---------------------------------------------------------------
    async def execute(self) -> RunResult:
        plan = self.plan
        await asyncio.sleep(self.rng.randint(0, 15) / 1000)  # runs start staggered
        started = await self._emit(RUN_STARTED, {
            "input": self.rng.choice(plan.profile.tasks),
        })
        self.trace_id = started.correlation.trace_id
        self.root_span_id = started.correlation.span_id
        self.start_ns = started.time_ns
        try:
            await self._plan_node()
            succeeded = await self._act_node()
            if not succeeded:
                profile = plan.profile
                await self._emit(RUN_FAILED, {
                    "error": f"{profile.flaky_tool} failed twice: {profile.tool_error}",
                    "error_type": profile.run_error_type,
                }, severity=Severity.ERROR)
                return self._result("failed")
            await self._respond_node()
            await self._emit(RUN_COMPLETED, {"output": "done"})
            return self._result("completed")
        except asyncio.CancelledError:
            await self._emit(RUN_CANCELLED, {"reason": "user_cancelled"},
                             severity=Severity.WARN)
            raise

    def _result(self, status: Outcome) -> RunResult:
        return RunResult(self.plan, status, self.trace_id, self.root_span_id, self.events,
                         self.start_ns, self.end_ns)

    async def _plan_node(self) -> None:
        node = "plan"
        await self._emit(NODE_LOOP_STARTED, {"max_iterations": 1}, node=node)
        await self._emit(NODE_LOOP_ITERATION, {"iteration": 1}, node=node)
        await self._llm_call(node, "stop")
        strategies = ("breadth-first", "cheapest-first", "ask-clarifying-question")
        chosen = strategies[self.rng.randrange(2)]
        await self._decide(node, "choose a strategy", strategies, chosen,
                           f"the request is specific enough for {chosen}")
        await self._emit(NODE_LOOP_COMPLETED, {"iterations": 1}, node=node)

    async def _act_node(self) -> bool:
        """The tool loop; returns False when the run must fail."""
        plan, rng, profile = self.plan, self.rng, self.plan.profile
        node = "act"
        max_iterations = rng.randint(3, 5)
        iterations = rng.randint(2, max_iterations)
        flaky_at = rng.randint(1, iterations) if rng.random() < 0.5 else 0
        if plan.outcome == "failed":
            flaky_at = iterations
        elif plan.outcome == "cancelled":
            flaky_at = 0  # the user stops it before anything goes wrong
        await self._emit(NODE_LOOP_STARTED, {"max_iterations": max_iterations},
                         node=node)
        for iteration in range(1, iterations + 1):
            await self._emit(NODE_LOOP_ITERATION, {"iteration": iteration}, node=node)
            await self._llm_call(node, "tool_calls")
            options = rng.sample(profile.tools, 3)
            chosen = profile.flaky_tool if iteration == flaky_at else options[0]
            if chosen not in options:
                options[-1] = chosen
            decision = await self._decide(
                node, "pick the next tool", options, chosen,
                f"{chosen} answers the open question with the fewest calls")
            slow = (plan.outcome == "cancelled"
                    and self.ids.tool_calls_started + 1 == CANCEL_AT_TOOL_CALL)
            ok = await self._tool_call(node, chosen, fail=iteration == flaky_at, slow=slow)
            if not ok:
                fatal = plan.outcome == "failed"
                await self._emit(PROBLEM_REPORTED, {
                    "problem": f"{chosen} failed: {profile.tool_error}",
                    "category": "tool_error", "retrying": not fatal,
                }, node=node, severity=Severity.ERROR if fatal else Severity.WARN)
                ok = await self._tool_call(node, chosen, fail=fatal)
            await self._emit(DECISION_OUTCOME, {
                "decision_id": decision, "success": ok,
                "summary": "tool returned results" if ok else "gave up after a retry",
            }, node=node)
            if not ok:
                await self._emit(NODE_LOOP_FAILED, {
                    "error": f"{chosen} kept failing", "error_type": profile.run_error_type,
                }, node=node, severity=Severity.ERROR)
                return False
        await self._emit(NODE_LOOP_COMPLETED, {"iterations": iterations}, node=node)
        return True

    async def _respond_node(self) -> None:
        node = "respond"
        await self._emit(NODE_LOOP_STARTED, {"max_iterations": 1}, node=node)
        await self._emit(NODE_LOOP_ITERATION, {"iteration": 1}, node=node)
        await self._llm_call(node, "stop")
        await self._emit(NODE_LOOP_COMPLETED, {"iterations": 1}, node=node)


async def run_workload(
    bus: EventBus, plans: Sequence[RunPlan],
    on_done: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run every plan concurrently; results in plan order.

    A "user" subscriber presses stop on each run planned as cancelled: it cancels the
    run's task when the agent starts the tool call it is waiting on.
    """
    agents = [AgentRun(bus, plan) for plan in plans]
    tasks = [asyncio.create_task(agent.execute(), name=agent.plan.run_id) for agent in agents]
    for agent, task in zip(agents, tasks, strict=True):
        if agent.plan.outcome == "cancelled":
            bus.subscribe(_canceller(task), kinds=TOOL_CALL_STARTED,
                          run_id=agent.plan.run_id, name=f"user-stop {agent.plan.run_id}")

    def report(agent: AgentRun) -> Callable[[asyncio.Task[RunResult]], None]:
        def done(task: asyncio.Task[RunResult]) -> None:
            if on_done is not None and (task.cancelled() or task.exception() is None):
                on_done(_result_of(agent, task))
        return done

    for agent, task in zip(agents, tasks, strict=True):
        task.add_done_callback(report(agent))
    await asyncio.gather(*tasks, return_exceptions=True)
    return [_result_of(agent, task) for agent, task in zip(agents, tasks, strict=True)]


def _result_of(agent: AgentRun, task: asyncio.Task[RunResult]) -> RunResult:
    if task.cancelled():
        return agent._result("cancelled")
    error = task.exception()
    if error is not None:
        raise error
    return task.result()


def _canceller(task: asyncio.Task[RunResult]) -> Callable[[Event], Awaitable[None]]:
    seen = 0

    async def on_tool_started(event: Event) -> None:
        nonlocal seen
        seen += 1
        if seen == CANCEL_AT_TOOL_CALL:
            await asyncio.sleep(USER_STOP_AFTER_S)
            task.cancel("user pressed stop")
    return on_tool_started
