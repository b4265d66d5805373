"""The LangGraph adapter's overhead per tool call, against OpenInference's and Traceloop's
LangChain instrumentations on the same app.

The app is a ReAct loop as LangGraph users write it: an ``agent`` node calling LangChain's
fake chat model, a ``tools_condition`` edge, a ``ToolNode`` with one no-op tool. Each
invocation makes ``TOOL_CALLS_PER_RUN`` tool calls (model -> route -> tool -> model ...),
so a tool call costs one model call, one routing, two node visits and the tool itself:
everything an instrumentation adds per step of an agent. Each side runs in its own
interpreter (``python -m bench.adapter_langgraph worker SIDE``; the instrumentations patch
LangChain globally), exporting to a batch processor whose exporter counts and drops spans.

Sides:
  bare           the app, uninstrumented (the baseline every overhead is measured from)
  ours           ``otel_agentbus.adapters.langgraph.install()`` after ``configure()``
                 (metrics on, content capture off: our defaults)
  openinference  ``openinference.instrumentation.langchain.LangChainInstrumentor``
  traceloop      ``opentelemetry.instrumentation.langchain.LangchainInstrumentor``
                 (OpenLLMetry)

Overhead per tool call = (side's time - bare time) / tool calls; the figures
``adapter_langgraph_vs_openinference`` and ``adapter_langgraph_vs_traceloop`` are our
overhead over theirs (target <= 1.0).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from .common import batch_processor, null_exporter
from .tool_calls import QUIET_ENV

SIDES = ("bare", "ours", "openinference", "traceloop")
PEER_MODULE = {"openinference": "openinference.instrumentation.langchain",
               "traceloop": "opentelemetry.instrumentation.langchain",
               "ours": "langgraph", "bare": "langgraph"}
TOOL_CALLS_PER_RUN = 10


def build_app(tool_calls: int) -> tuple[Any, Any]:
    """The compiled graph and a function making the input of one run."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    class Model(GenericFakeChatModel):
        model_name: str = "bench-model"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Model:
            return self

    @tool
    def lookup(key: str) -> str:
        """Look a key up."""
        return key

    script: list[AIMessage] = []
    for index in range(tool_calls):
        script.append(AIMessage(
            content="looking up",
            tool_calls=[{"name": "lookup", "args": {"key": f"k{index}"},
                         "id": f"call-{index}"}],
            usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
            response_metadata={"finish_reason": "tool_calls"}))
    script.append(AIMessage(content="done", response_metadata={"finish_reason": "stop"}))
    state: dict[str, Any] = {"model": None}

    def agent(graph_state: MessagesState) -> dict[str, Any]:
        return {"messages": [state["model"].invoke(graph_state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([lookup]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile(name="bench_agent")

    def new_run() -> dict[str, Any]:
        state["model"] = Model(messages=iter(script))
        return {"messages": [("user", "look everything up")]}

    return app, new_run


class Side:
    def __init__(self, side: str) -> None:
        from opentelemetry.sdk.trace import TracerProvider

        self.side = side
        self.exporter = null_exporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(batch_processor(self.exporter))
        self.telemetry: Any = None
        self.meter_provider: Any = None
        if side == "ours":
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            from otel_agentbus import configure
            from otel_agentbus.adapters import langgraph

            self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
            self.telemetry = configure(tracer_provider=self.provider,
                                       meter_provider=self.meter_provider,
                                       signal_handlers=False)
            langgraph.install()
        elif side == "openinference":
            from openinference.instrumentation.langchain import LangChainInstrumentor

            LangChainInstrumentor().instrument(tracer_provider=self.provider)
        elif side == "traceloop":
            from opentelemetry.instrumentation.langchain import LangchainInstrumentor

            LangchainInstrumentor().instrument(tracer_provider=self.provider)
        self.app, self.new_run = build_app(TOOL_CALLS_PER_RUN)
        self.config = {"recursion_limit": 4 * TOOL_CALLS_PER_RUN + 10}

    def run_once(self) -> None:
        result = self.app.invoke(self.new_run(), self.config)
        assert result["messages"][-1].content == "done"

    def close(self) -> int:
        if self.telemetry is not None:
            self.telemetry.shutdown()
        self.provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        spans: int = self.exporter.spans
        return spans


def available(side: str) -> str | None:
    import importlib.util

    module = PEER_MODULE[side]
    try:
        if importlib.util.find_spec(module) is None:
            return f"{module} not installed"
    except ImportError:
        return f"{module} not installed"
    if side == "ours":
        try:
            from otel_agentbus.adapters import langgraph

            langgraph._load()
        except Exception as error:
            return str(error)
    return None


def worker(side: str) -> int:
    """Line protocol: ``N`` runs N graph invocations and answers µs per tool call;
    ``quit`` answers the spans exported, so a side that made none is caught."""
    reason = available(side)
    if reason is not None:
        print(json.dumps({"unavailable": reason}), flush=True)
        return 0
    import gc

    instance = Side(side)
    runs_made = 0
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            exported = instance.close()
            print(json.dumps({"exported": exported, "calls": runs_made * TOOL_CALLS_PER_RUN}),
                  flush=True)
            return 0
        runs = int(command)
        gc.collect()
        start = time.perf_counter()
        for _ in range(runs):
            instance.run_once()
        elapsed = time.perf_counter() - start
        runs_made += runs
        print(json.dumps({"us": elapsed / (runs * TOOL_CALLS_PER_RUN) * 1e6}), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        os.environ.update(QUIET_ENV)
        raise SystemExit(worker(sys.argv[2]))
    raise SystemExit("usage: python -m bench.adapter_langgraph worker SIDE")
