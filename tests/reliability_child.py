"""Agent workloads for the reliability tests, each in a fresh interpreter.

    python tests/reliability_child.py SCENARIO ARGS...

The child prints one JSON line when ready, then answers each command read from stdin with
one JSON line (``configure()`` installs global providers, so workloads never run in the
pytest process). Scenarios:

  collector ENDPOINT QUEUE   runs of 10 events on demand, exporting to ENDPOINT (which the
                             test takes down, slows or restarts); commands ``phase TAG N``,
                             ``open TAG``, ``close TAG``, ``settle T``, ``flush T``,
                             ``quit T``
  midrun ENDPOINT            an AgentRuntime with completed runs and runs left in the
                             middle of a tool call and an LLM call; the test sends SIGTERM
                             or SIGKILL
  load ENDPOINT RUNS         RUNS concurrent executions of 100 events each through the
                             AgentRuntime; command ``run``
  secrets ENDPOINT CAPTURE TRACKER_DB
                             a demo-like workload with a canary in every content-bearing
                             place and secrets in headers and secret-looking fields
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from collections import Counter
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader

from otel_agentbus import Event, EventBus, Scope, configure
from otel_agentbus import semconv as sc
from otel_agentbus.kinds import MUST_DELIVER_KINDS


def say(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


async def command() -> list[str]:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:  # the test went away
        os._exit(3)
    words: list[str] = line.split()
    return words


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def file_modes(path: str) -> dict[str, str]:
    """Permission bits of an SQLite file and its -wal and -shm files, where they exist."""
    return {suffix: oct(os.stat(path + suffix).st_mode & 0o777)
            for suffix in ("", "-wal", "-shm") if os.path.exists(path + suffix)}


def metric_values(reader: InMemoryMetricReader, name: str) -> dict[str, float]:
    """The latest value of each point of one metric, keyed by its attributes."""
    out: dict[str, float] = {}
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = ",".join(f"{k}={v!s}" for k, v in sorted(
                            (point.attributes or {}).items()))
                        out[key] = point.value  # type: ignore[union-attr]
    return out


# ====================================================================== collector faults
def run_events(run_id: str) -> list[Event]:
    scope = Scope(run_id=run_id, agent="faulty")
    node = scope._replace(node_id="n")
    return [
        Event("agent.run.started", scope=scope),
        Event("agent.node.loop.started", scope=node),
        Event("agent.node.loop.iteration", {"iteration": 1}, scope=node),
        Event("agent.llm.request", {"model": "m", "call_id": "c"}, scope=node),
        Event("agent.llm.delta", {"call_id": "c", "text": "x"}, scope=node),
        Event("agent.llm.response", {"call_id": "c", "output_tokens": 1}, scope=node),
        Event("agent.tool.call.started", {"tool_call_id": "t", "tool_name": "x"}, scope=node),
        Event("agent.decision.made", {"tool_call_id": "t", "chosen": "x"}, scope=node),
        Event("agent.tool.call.completed", {"tool_call_id": "t"}, scope=node),
        Event("agent.node.loop.completed", {"iterations": 1}, scope=node),
        Event("agent.run.completed", scope=scope),
    ]


SPANS_PER_RUN = 6  # run, node, iteration, chat, tool, plus one pending record (not counted)


async def collector(endpoint: str, queue: str) -> None:
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = queue
    os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader, PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=2),
        export_interval_millis=500)], shutdown_on_exit=False)
    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="faults",
                          meter_provider=meters, shutdown_timeout=3.0)
    bus = telemetry.attach(EventBus(history_size=100))
    counts = Counter[str]()

    def everything(event: Event) -> None:
        counts["plain"] += 1

    async def blocking(event: Event) -> None:
        counts["block"] += 1

    bus.subscribe(everything, buffer=100_000)
    bus.subscribe(blocking, buffer=1000, backpressure="block")
    say({"ready": True})
    while True:
        words = await command()
        name = words[0]
        if name == "phase":
            tag, runs = words[1], int(words[2])
            worst = 0.0
            published = 0
            started = time.perf_counter()
            for i in range(runs):
                for event in run_events(f"{tag}-{i}"):
                    before = time.perf_counter()
                    await bus.publish(event)
                    worst = max(worst, time.perf_counter() - before)
                    published += 1
                await asyncio.sleep(0)
            say({"published": published, "publish_s": time.perf_counter() - started,
                 "worst_publish_s": worst, "stats": telemetry.export_stats()})
        elif name == "open":
            scope = Scope(run_id=words[1], agent="faulty")
            for event in (Event("agent.run.started", scope=scope),
                          Event("agent.node.loop.started", scope=scope._replace(node_id="n"))):
                await bus.publish(event)
            say({"opened": words[1]})
        elif name == "close":
            scope = Scope(run_id=words[1], agent="faulty")
            await bus.publish(Event("agent.node.loop.completed", scope=scope._replace(
                node_id="n")))
            await bus.publish(Event("agent.run.completed", scope=scope))
            say({"closed": words[1]})
        elif name == "flush":
            flushed = await asyncio.to_thread(telemetry.force_flush, float(words[1]))
            say({"flushed": flushed, "stats": telemetry.export_stats()})
        elif name == "settle":
            # Wait until every emitted span was exported, failed or dropped (bounded).
            deadline = time.monotonic() + float(words[1])
            while telemetry.export_stats()["spans_unaccounted"]:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            say({"stats": telemetry.export_stats(),
                 "metric": metric_values(reader, sc.METRIC_EXPORT_SPANS)})
        elif name == "quit":
            await bus.close()
            started = time.perf_counter()
            finished = telemetry.shutdown(timeout=float(words[1]))
            shutdown_s = time.perf_counter() - started
            say({"finished": finished, "shutdown_s": shutdown_s, "counts": dict(counts),
                 "stats": telemetry.export_stats(), "bus_dropped": bus.stats().dropped})
            return


# ====================================================================== SIGTERM / kill -9
async def midrun(endpoint: str) -> None:
    from otel_agentbus.instrument import llm_call_scope, node_loop, tool_call
    from otel_agentbus.runtime.agent_runtime import AgentRuntime
    from otel_agentbus.runtime.entry_points import EntryPoint
    from otel_agentbus.runtime.execution import ExecutionContext

    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="midrun",
                          metric_export_interval_ms=60_000, shutdown_timeout=5.0,
                          signal_handlers=os.environ.get("OTEL_AGENTBUS_TEST_NO_SIGNALS") != "1")
    bus = telemetry.attach(EventBus())
    stuck = asyncio.Event()

    async def agent(ctx: ExecutionContext, input: Any) -> str:
        with node_loop("work", max_iterations=3) as loop, loop.iteration():
            with tool_call("search", arguments={"q": input["q"]}) as call:
                call.result = "found"
            if input.get("hang") == "tool":
                with tool_call("slow_fetch", arguments={"url": "x"}):
                    await asyncio.sleep(3600)
            if input.get("hang") == "llm":
                with llm_call_scope("gpt-4o", "openai") as llm:
                    llm.delta("partial")
                    await asyncio.sleep(3600)
        return "done"

    runtime = AgentRuntime(bus, agent=agent, name="midrun")
    runtime.register_entry_point(EntryPoint("api", max_concurrent=10))
    await runtime.start()
    completed = []
    for i in range(5):
        result = await runtime.trigger_and_wait("api", {"q": f"q{i}"}, timeout=10)
        assert result is not None and result.success, result
        completed.append(result.execution_id)
    hanging = [await runtime.trigger("api", {"q": "h1", "hang": "tool"}),
               await runtime.trigger("api", {"q": "h2", "hang": "llm"})]
    deadline = time.monotonic() + 20
    while len(bus.history(kinds=["agent.tool.call.started", "agent.llm.request"],
                          limit=None)) < 5 + 2:
        if time.monotonic() > deadline:
            raise TimeoutError("the hanging runs never reached their calls")
        await asyncio.sleep(0.01)
    flushed = await asyncio.to_thread(telemetry.force_flush, 10.0)
    say({"ready": True, "pid": os.getpid(), "completed": completed, "hanging": hanging,
         "flushed": flushed, "stats": telemetry.export_stats()})
    await stuck.wait()  # until a signal ends the process


# ====================================================================== load
async def load(endpoint: str, runs_text: str) -> None:
    from otel_agentbus.runtime.agent_runtime import AgentRuntime, AgentRuntimeConfig
    from otel_agentbus.runtime.entry_points import EntryPoint
    from otel_agentbus.runtime.execution import ExecutionContext
    from otel_agentbus.runtime.graph import CONTINUE, Graph

    runs = int(runs_text)
    os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = str(runs * 40)
    os.environ["OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] = "1024"
    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="load",
                          metric_export_interval_ms=60_000, shutdown_timeout=30.0)
    bus = telemetry.attach(EventBus(history_size=1000))
    graph = Graph("load")

    # 100 events per run: run started/completed (2), node loop started/completed (2),
    # 4 iterations of 24: iteration, llm request, 16 deltas, llm response, tool started,
    # decision, tool completed, state changed, goal progress (4 * 24 = 96).
    @graph.node(max_iterations=5)
    async def work(ctx: ExecutionContext, state: dict[str, Any]) -> Any:
        i = state["i"] = state.get("i", 0) + 1
        call = f"{ctx.execution_id}-c{i}"
        tool = f"{ctx.execution_id}-t{i}"
        ctx.publish("agent.llm.request", {"model": "m", "call_id": call})
        for n in range(16):
            ctx.publish("agent.llm.delta", {"call_id": call, "text": str(n)})
            if n % 4 == 0:
                await asyncio.sleep(0)
        ctx.publish("agent.llm.response", {"call_id": call, "output_tokens": 16})
        ctx.publish("agent.tool.call.started", {"tool_call_id": tool, "tool_name": "calc"})
        await asyncio.sleep(0)
        ctx.publish("agent.decision.made", {"tool_call_id": tool, "chosen": "calc"})
        ctx.publish("agent.tool.call.completed", {"tool_call_id": tool, "is_error": False})
        ctx.publish("agent.state.changed", {"key": "i", "value": i})
        ctx.publish("agent.goal.progress", {"progress": i / 4})
        return CONTINUE if i < 4 else i

    runtime = AgentRuntime(bus, graph=graph, name="loader",
                           config=AgentRuntimeConfig(execution_result_max=runs))
    runtime.register_entry_point(EntryPoint("api", entry_node="work", max_concurrent=runs,
                                            max_queued=runs))
    kinds = Counter[str]()
    plain = Counter[str]()

    def must(event: Event) -> None:
        kinds[event.kind] += 1

    def lossy(event: Event) -> None:
        plain[event.kind] += 1

    must_sub = bus.subscribe(must, kinds=sorted(MUST_DELIVER_KINDS), buffer=64,
                             backpressure="drop_oldest")
    lossy_sub = bus.subscribe(lossy, buffer=64, backpressure="drop_oldest")
    await runtime.start()
    say({"ready": True, "rss_start": rss_bytes()})
    await command()  # "run"
    rss_before = rss_bytes()
    peak = rss_before
    started = time.perf_counter()
    ids = [await runtime.trigger("api", {"n": n}) for n in range(runs)]
    results: list[Any] = []
    pending = [asyncio.ensure_future(runtime.wait_for_execution(i, 120)) for i in ids]
    while pending:
        done, waiting = await asyncio.wait(pending, timeout=0.2)
        peak = max(peak, rss_bytes())
        results.extend(task.result() for task in done)
        pending = list(waiting)
    run_s = time.perf_counter() - started
    peak = max(peak, rss_bytes())
    await runtime.stop()
    await bus.close()
    flush_started = time.perf_counter()
    finished = telemetry.shutdown(timeout=30)
    flush_s = time.perf_counter() - flush_started
    per_run = Counter[str]()
    for event in bus.history(limit=None):
        per_run[event.kind] += 1
    bus_stats = bus.stats()
    say({
        "runs": len(ids), "statuses": Counter(r.status if r else "missing" for r in results),
        "ids": ids, "run_s": run_s, "flush_s": flush_s, "finished": finished,
        "rss_before": rss_before, "rss_peak": peak, "rss_after": rss_bytes(),
        "must_kinds": dict(kinds), "lossy_total": sum(plain.values()),
        "must_sub": must_sub.stats().__dict__ if hasattr(must_sub.stats(), "__dict__")
        else {}, "must_dropped": must_sub.stats().dropped,
        "must_received": must_sub.stats().received, "lossy_dropped": lossy_sub.stats().dropped,
        "lossy_received": lossy_sub.stats().received,
        "published": bus_stats.published, "bus_dropped": bus_stats.dropped,
        "stats": telemetry.export_stats(),
    })
    await command()  # "quit"


# ====================================================================== secrets / canary
CANARY = "CANARY-5e1f0c9d"
SECRET = "SECRET-9b7d2a41"


async def secrets(endpoint: str, capture: str, tracker_db: str) -> None:
    from otel_agentbus.instrument import llm_call_scope, node_loop, tool_call
    from otel_agentbus.runtime.agent_runtime import AgentRuntime
    from otel_agentbus.runtime.entry_points import EntryPoint
    from otel_agentbus.runtime.execution import ExecutionContext
    from otel_agentbus.runtime.tracker import DecisionTracker
    from otel_agentbus.runtime.webhooks import sign

    if capture != "off":
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_AND_EVENT"
    telemetry = configure(endpoint=endpoint, protocol="grpc", service_name="secrets",
                          metric_export_interval_ms=60_000, logs=True)
    bus = telemetry.attach(EventBus(history_size=10_000))
    tracker = DecisionTracker(bus, stream_id="hook", store=tracker_db,
                              publish_run_events=False)
    direct: set[str] = set()

    async def agent(ctx: ExecutionContext, input: Any) -> Any:
        body = input["payload"]
        run_id = ctx.execution_id
        tracker.start_run(run_id, goal_id="g", input_data={"body": body["ticket"]})
        with node_loop("answer", max_iterations=2) as loop, loop.iteration():
            ctx.publish("agent.node.internal_output", {"output": f"thinking {CANARY}"})
            with llm_call_scope("gpt-4o", "openai", messages=[
                    {"role": "system", "content": f"system {CANARY}"},
                    {"role": "user", "content": body["ticket"]}]) as llm:
                llm.delta(f"delta {CANARY}")
                llm.output = f"completion {CANARY}"
                llm.record_usage(input_tokens=5, output_tokens=3, finish_reasons=["stop"])
            with tool_call("lookup", arguments={"query": f"args {CANARY}",
                                                "api_key": SECRET}) as call:
                call.result = {"rows": [f"result {CANARY}"], "access_token": SECRET}
            decision = tracker.decide(run_id, intent="route", options=[
                {"id": "a", "description": "answer"}], chosen="a", reasoning="cheap",
                context={"ticket": f"context {CANARY}", "password": SECRET})
            tracker.record_outcome(run_id, decision, success=True,
                                   result={"answer": f"outcome {CANARY}"})
            tracker.report_problem(run_id, "minor", "kb outdated", root_cause="kb")
            # Built by the application itself: delivered as built, redacted on export.
            direct.add(ctx.publish("agent.problem.reported", {
                "severity": "minor", "description": "kb outdated",
                "details": f"details {CANARY}", "client_secret": SECRET}).id)
            ctx.emit_output(f"client delta {CANARY}")
            direct.add(ctx.publish("agent.state.changed", {
                "key": "visible-marker", "authorization": f"Bearer {SECRET}"}).id)
        tracker.end_run(run_id, success=True, narrative="ok",
                        output_data={"answer": f"output {CANARY}"})
        return {"answer": f"output {CANARY}", "api_key": SECRET}

    runtime = AgentRuntime(bus, agent=agent, name="support")
    runtime.register_entry_point(EntryPoint("hook", trigger_type="webhook", trigger_config={
        "path": "/hooks/tickets", "secret": SECRET}))
    await runtime.start()
    body = json.dumps({"ticket": f"ticket {CANARY}", "api_key": SECRET}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{runtime.webhook_port}/hooks/tickets?token={SECRET}&page=1",
        data=body, headers={"Content-Type": "application/json",
                            "X-Hub-Signature-256": sign(SECRET, body),
                            "Authorization": f"Bearer {SECRET}", "Cookie": f"s={SECRET}",
                            "X-Api-Key": SECRET, "X-Visible": "visible-marker"})
    reply = await asyncio.to_thread(
        lambda: json.loads(urllib.request.urlopen(request, timeout=10).read()))
    result = await runtime.wait_for_execution(reply["execution_id"], 10)
    assert result is not None and result.success, result
    await runtime.stop()
    await bus.close()
    modes = file_modes(tracker_db)
    tracker.close()
    history = bus.history(limit=None)
    library_built = "\n".join(e.to_json() for e in history if e.id not in direct)
    finished = telemetry.shutdown(timeout=10)
    say({"ready": True, "finished": finished, "stats": telemetry.export_stats(),
         "events": len(history), "direct": len(direct), "tracker_modes": modes,
         "secret_in_events": SECRET in library_built,
         "redacted_in_events": "[redacted]" in library_built,
         "canary_in_events": CANARY in library_built})
    await command()


def main() -> None:
    if os.environ.get("RELIABILITY_UMASK"):
        os.umask(int(os.environ["RELIABILITY_UMASK"], 8))
    scenario, *args = sys.argv[1:]
    workload = {"collector": collector, "midrun": midrun, "load": load,
                "secrets": secrets}[scenario]
    asyncio.run(workload(*args))  # type: ignore[operator]


if __name__ == "__main__":
    main()

