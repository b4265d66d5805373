"""The benchmark suite: our bus and telemetry against the seed's bus and the peers.

    bash bench/run [--quick] [--json [PATH]] [--only SECTIONS]   # installs the peers first
    python -m bench [--quick] [--json [PATH]] [--only SECTIONS]  # with what is installed

Sections (``--only bus,tools``): ``bus`` (throughput against the seed, bubus, pyee and
blinker, plus latency), ``tools`` (instrumentation overhead per tool call), ``export``
(spans into the embedded receiver over gRPC), ``memory`` (slow subscriber), ``scaling``
(cost per event as subscribers and concurrent runs grow), ``adapters`` (the LangGraph
adapter's overhead per tool call against OpenInference and Traceloop) and ``web`` (the web
view's runs list and waterfall queries on a 100,000-span receiver database). Every comparison
runs both sides in this run on the same workload, rounds alternating; figures are medians,
ratios are ours over theirs. Peers that are not installed are skipped (their keys are null).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import adapter_langgraph, tool_calls
from . import throughput as tp
from .common import RESULTS, Worker, alternate, importable, median, ratio, run_module

SECTIONS = ("bus", "tools", "export", "memory", "scaling", "adapters", "web")


@dataclass(frozen=True)
class Mode:
    name: str
    rounds: int
    round_seconds: float
    max_events: int
    latency_events: int
    tool_calls: int
    export_spans: int
    export_rounds: int
    memory_events: int
    scaling_rounds: int
    subscriber_counts: tuple[int, ...]
    run_counts: tuple[int, ...]
    keyed_events: int
    web_spans: int = 100_000
    """Spans in the receiver database of the web section (the issue's 100,000 in both
    modes: the figure is about that size)."""
    adapter_runs: int = 4
    """LangGraph invocations per round of the adapters section (each makes
    ``adapter_langgraph.TOOL_CALLS_PER_RUN`` tool calls)."""


QUICK = Mode("quick", rounds=3, round_seconds=0.05, max_events=5_000, latency_events=4_000,
             tool_calls=2_000, export_spans=20_000, export_rounds=1, memory_events=100_000,
             scaling_rounds=1, subscriber_counts=(1, 10, 100), run_counts=(1, 10, 100, 1000),
             keyed_events=5_000)
FULL = Mode("full", rounds=7, round_seconds=0.25, max_events=30_000, latency_events=20_000,
            tool_calls=20_000, export_spans=100_000, export_rounds=3, memory_events=1_000_000,
            scaling_rounds=3, subscriber_counts=(1, 2, 5, 10, 20, 50, 100),
            run_counts=(1, 3, 10, 30, 100, 300, 1000), keyed_events=20_000, adapter_runs=20)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ bus
async def bus_section(mode: Mode, figures: dict[str, Any]) -> None:
    peers = [peer for peer in tp.PEERS if importable(tp.PEER_MODULES[peer])]
    for peer in tp.PEERS:
        if peer not in peers:
            figures["skipped"].append(f"{peer}: not installed (bash bench/run installs it)")
            figures[f"bus_vs_{peer}"] = None
    details: dict[str, Any] = {}
    await tp.ours(2_000, 10)  # warm-up: first-call costs belong to no side
    for subscribers in (1, 10):
        for other in ("seed", *peers):
            side = tp.SIDES[other]
            events = await tp.calibrate(side, subscribers, mode.round_seconds, mode.max_events)
            log(f"bus: ours vs {other}, {subscribers} subscriber(s), {events} events x "
                f"{mode.rounds} rounds")

            async def ours_round(n: int = events, s: int = subscribers) -> float:
                return await tp.ours(n, s)

            async def their_round(n: int = events, s: int = subscribers,
                                  run: Any = side) -> float:
                return float(await run(n, s))

            results = await alternate(mode.rounds, {"ours": ours_round, other: their_round})
            ours_rate, their_rate = median(results["ours"]), median(results[other])
            details[f"{other}_{subscribers}sub"] = {
                "events_per_round": events,
                "ours_events_per_s": round(ours_rate),
                "theirs_events_per_s": round(their_rate),
                "ratio": ratio(ours_rate, their_rate),
            }
            if other == "seed":
                figures[f"bus_{subscribers}sub_vs_seed"] = ratio(ours_rate, their_rate)
                figures[f"bus_{subscribers}sub_events_per_s"] = round(ours_rate)
                figures[f"seed_{subscribers}sub_events_per_s"] = round(their_rate)
            else:
                figures[f"bus_{subscribers}sub_vs_{other}"] = ratio(ours_rate, their_rate)
    for peer in peers:
        figures[f"bus_vs_{peer}"] = min(figures[f"bus_1sub_vs_{peer}"],
                                        figures[f"bus_10sub_vs_{peer}"])
    figures["details"]["bus"] = details

    # Latency at half of the measured maximum (one subscriber), each bus at its own.
    ours_rate = figures["bus_1sub_events_per_s"] / 2
    seed_rate = figures["seed_1sub_events_per_s"] / 2
    log(f"latency: ours at {ours_rate:,.0f}/s, seed at {seed_rate:,.0f}/s, "
        f"{mode.latency_events} events x {mode.rounds} rounds")
    samples: dict[str, list[tuple[float, float]]] = {"ours": [], "seed": [],
                                                     "ours_at_seed_rate": []}
    for _ in range(mode.rounds):
        samples["ours"].append(await tp.ours_latency(ours_rate, mode.latency_events))
        samples["seed"].append(await tp.seed_latency(seed_rate, mode.latency_events))
        samples["ours_at_seed_rate"].append(
            await tp.ours_latency(seed_rate, mode.latency_events))
    figures.update(
        latency_rate_per_s=round(ours_rate),
        latency_p50_us=round(median([s[0] for s in samples["ours"]]), 1),
        latency_p99_us=round(median([s[1] for s in samples["ours"]]), 1),
        seed_latency_rate_per_s=round(seed_rate),
        seed_latency_p50_us=round(median([s[0] for s in samples["seed"]]), 1),
        seed_latency_p99_us=round(median([s[1] for s in samples["seed"]]), 1),
        latency_at_seed_rate_p50_us=round(
            median([s[0] for s in samples["ours_at_seed_rate"]]), 1),
        latency_at_seed_rate_p99_us=round(
            median([s[1] for s in samples["ours_at_seed_rate"]]), 1),
    )


# ---------------------------------------------------------------------------- tools
def tools_section(mode: Mode, figures: dict[str, Any]) -> None:
    workers: dict[str, Worker] = {}
    try:
        for side in tool_calls.SIDES:
            worker = Worker("bench.tool_calls", side, env=tool_calls.QUIET_ENV)
            if "unavailable" in worker.ready:
                figures["skipped"].append(f"tool call side {side}: {worker.ready['unavailable']}")
                worker.close()
                continue
            workers[side] = worker
        log(f"tools: {', '.join(workers)}; {mode.tool_calls} calls x {mode.rounds} rounds")
        for worker in workers.values():  # warm-up
            worker.call(str(max(200, mode.tool_calls // 10)))
        times: dict[str, list[float]] = {side: [] for side in workers}
        for _ in range(mode.rounds):
            for side, worker in workers.items():
                times[side].append(float(worker.call(str(mode.tool_calls))["us"]))
        exported = {side: worker.close() for side, worker in workers.items()}
    finally:
        for worker in workers.values():
            if worker.process.poll() is None:
                worker.process.kill()
    us = {side: median(values) for side, values in times.items()}
    calls = {side: result.get("calls", 0) for side, result in exported.items()}
    lost = {side: calls[side] - result.get("exported", 0)
            for side, result in exported.items()}
    figures["details"]["tools"] = {
        "us_per_call": {side: round(value, 2) for side, value in us.items()},
        "spans_not_exported": lost,
        "calls_per_round": mode.tool_calls,
    }
    ours = "ours_decorator" if "ours_decorator" in us else "ours_events"
    figures["tool_call_ours_side"] = ours
    figures["tool_call_us"] = round(us[ours], 2)
    figures["tool_call_vs_sdk"] = ratio(us[ours], us["sdk_current"])
    figures["tool_call_vs_sdk_start_span"] = ratio(us[ours], us["sdk"])
    figures["tool_call_events_vs_sdk_start_span"] = ratio(us["ours_events"], us["sdk"])
    for peer in ("traceloop", "logfire"):
        figures[f"tool_call_vs_{peer}"] = ratio(us[ours], us[peer]) if peer in us else None


# ------------------------------------------------------------------------- adapters
def adapters_section(mode: Mode, figures: dict[str, Any]) -> None:
    """Our LangGraph adapter's overhead per tool call over the bare app, against the same
    app under OpenInference's and Traceloop's LangChain instrumentations, rounds
    alternating between the four interpreters."""
    workers: dict[str, Worker] = {}
    try:
        for side in adapter_langgraph.SIDES:
            worker = Worker("bench.adapter_langgraph", side, env=tool_calls.QUIET_ENV)
            if "unavailable" in worker.ready:
                figures["skipped"].append(
                    f"langgraph side {side}: {worker.ready['unavailable']}")
                worker.close()
                continue
            workers[side] = worker
        log(f"adapters: {', '.join(workers)}; {mode.adapter_runs} runs x "
            f"{adapter_langgraph.TOOL_CALLS_PER_RUN} tool calls x {mode.rounds} rounds")
        for worker in workers.values():  # warm-up
            worker.call("2")
        times: dict[str, list[float]] = {side: [] for side in workers}
        for _ in range(mode.rounds):
            for side, worker in workers.items():
                times[side].append(float(worker.call(str(mode.adapter_runs))["us"]))
        exported = {side: worker.close() for side, worker in workers.items()}
    finally:
        for worker in workers.values():
            if worker.process.poll() is None:
                worker.process.kill()
    us = {side: median(values) for side, values in times.items()}
    overhead = {side: us[side] - us["bare"] for side in us if side != "bare" and "bare" in us}
    figures["details"]["adapters"] = {
        "us_per_tool_call": {side: round(value, 1) for side, value in us.items()},
        "overhead_us_per_tool_call": {side: round(value, 1) for side, value in overhead.items()},
        "spans_exported": {side: result.get("exported", 0) for side, result in exported.items()},
        "tool_calls_per_round": mode.adapter_runs * adapter_langgraph.TOOL_CALLS_PER_RUN,
    }
    for peer in ("openinference", "traceloop"):
        figures[f"adapter_langgraph_vs_{peer}"] = (
            ratio(overhead["ours"], overhead[peer])
            if "ours" in overhead and peer in overhead else None)


# --------------------------------------------------------------------------- web
def web_section(mode: Mode, figures: dict[str, Any]) -> None:
    log(f"web: the runs list and a 10,000-span waterfall on a {mode.web_spans:,}-span "
        "receiver database")
    result = run_module("bench.web_list", "--spans", str(mode.web_spans),
                        "--rounds", str(mode.rounds))
    figures["web_runs_list_ms"] = result["list_answer_ms"]
    figures["web_runs_first_page_ms"] = result["first_page_ms"]
    figures["web_list_vs_old_whole_list"] = result["list_vs_old_whole_list"]
    figures["web_trace_10k_spans_ms"] = result["trace_10k_spans_ms"]
    figures["web_store_indexed_vs_plain"] = result["store_indexed_vs_plain"]
    figures["details"]["web"] = result


# --------------------------------------------------------------------------- export
EXPORT_RUNS: dict[str, tuple[str, ...]] = {
    "thread": ("--receiver", "thread"),
    "process": ("--receiver", "process"),
    "stock_sdk": ("--receiver", "thread", "--pipeline", "stock"),
    "http": ("--receiver", "thread", "--protocol", "http/protobuf"),
}
"""Each export run's arguments: ours over gRPC into the embedded receiver ("thread"), into
a receiver process, the SDK's stock pipeline into the embedded one, ours over OTLP/HTTP."""
EXPORT_PREFIXES = {"thread": "export", "process": "export_separate_receiver",
                   "stock_sdk": "export_stock_sdk", "http": "export_http"}


def export_section(mode: Mode, figures: dict[str, Any]) -> None:
    log(f"export: {mode.export_spans:,} spans x {mode.export_rounds} rounds: ours over gRPC "
        "(receiver in process and in its own), the SDK's stock pipeline, ours over HTTP")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in EXPORT_RUNS}
    for _ in range(mode.export_rounds):
        for name, args in EXPORT_RUNS.items():  # alternating, as every comparison here
            results[name].append(run_module(
                "bench.export", "--spans", str(mode.export_spans), *args))
    for name, rounds in results.items():
        prefix = EXPORT_PREFIXES[name]
        figures[f"{prefix}_spans_per_s"] = round(median([r["spans_per_s"] for r in rounds]))
        figures[f"{prefix}_lost"] = max(r["lost"] for r in rounds)
    ours = figures["export_spans_per_s"]
    figures["export_vs_stock_sdk"] = ratio(ours, figures["export_stock_sdk_spans_per_s"])
    figures["export_http_vs_grpc"] = ratio(figures["export_http_spans_per_s"], ours)
    figures["export_burst_spans"] = mode.export_spans
    figures["details"]["export"] = results


# --------------------------------------------------------------------------- memory
def memory_section(mode: Mode, figures: dict[str, Any]) -> None:
    log(f"memory: {mode.memory_events:,} events past a slow subscriber, both policies")
    results = {policy: run_module("bench.memory", "--events", str(mode.memory_events),
                                  "--policy", policy)
               for policy in ("drop_oldest", "block")}
    figures["slow_subscriber_rss_mb"] = max(r["rss_growth_mb"] for r in results.values())
    figures["slow_subscriber_events"] = mode.memory_events
    figures["details"]["memory"] = results


# -------------------------------------------------------------------------- scaling
async def scaling_section(mode: Mode, figures: dict[str, Any]) -> None:
    log(f"scaling: subscribers {mode.subscriber_counts}, runs {mode.run_counts}")
    ours_per_delivery: list[float] = []
    seed_per_delivery: list[float] = []
    for count in mode.subscriber_counts:
        ours_events = max(1_000, (100_000 if mode.name == "full" else 20_000) // count)
        seed_events = max(200, (20_000 if mode.name == "full" else 4_000) // count)

        async def ours_round(n: int = ours_events, s: int = count) -> float:
            return await tp.ours(n, s)

        async def seed_round(n: int = seed_events, s: int = count) -> float:
            return await tp.seed(n, s)

        results = await alternate(mode.scaling_rounds, {"ours": ours_round,
                                                        "seed": seed_round})
        ours_per_delivery.append(round(1e6 / (median(results["ours"]) * count), 3))
        seed_per_delivery.append(round(1e6 / (median(results["seed"]) * count), 3))
    per_event: list[float] = []
    for runs in mode.run_counts:
        rates = [await tp.ours_keyed(mode.keyed_events, runs)
                 for _ in range(mode.scaling_rounds)]
        per_event.append(round(1e6 / median(rates), 3))
    figures["scaling"] = {
        "subscribers": {"counts": list(mode.subscriber_counts),
                        "ours_us_per_delivery": ours_per_delivery,
                        "seed_us_per_delivery": seed_per_delivery},
        "runs": {"counts": list(mode.run_counts), "ours_us_per_event": per_event,
                 "events_per_round": mode.keyed_events},
    }
    first, last = ours_per_delivery[0], ours_per_delivery[-1]
    figures["scaling_subscribers_growth"] = round(last / first, 2)
    figures["scaling_runs_growth"] = round(per_event[-1] / per_event[0], 2)


# --------------------------------------------------------------------------- output
def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("opentelemetry-sdk", "bubus", "pyee", "blinker", "traceloop-sdk", "logfire",
                 "langgraph", "langchain-core", "openinference-instrumentation-langchain",
                 "opentelemetry-instrumentation-langchain"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(figures: dict[str, Any]) -> None:
    rows: list[tuple[str, str, Any, str]] = []
    details = figures["details"]
    if "bus" in details:
        for key, item in details["bus"].items():
            other, subs = key.rsplit("_", 1)
            rows.append((f"bus throughput, {subs[:-3]} subscriber(s), vs {other} (events/s)",
                         f"{item['ours_events_per_s']:,} vs {item['theirs_events_per_s']:,}",
                         item["ratio"], f"bus_{subs}_vs_{other}"))
        for peer in tp.PEERS:
            rows.append((f"bus vs {peer}, the lower of 1 and 10 subscribers", "",
                         figures.get(f"bus_vs_{peer}"), f"bus_vs_{peer}"))
        rows.append((f"latency at {figures['latency_rate_per_s']:,}/s (half our max), p50/p99 "
                     "(µs)", f"{figures['latency_p50_us']} / {figures['latency_p99_us']}", None,
                     "latency_p50_us / latency_p99_us"))
        rows.append((f"seed latency at {figures['seed_latency_rate_per_s']:,}/s (half its max)",
                     f"{figures['seed_latency_p50_us']} / {figures['seed_latency_p99_us']}",
                     None, ""))
        rows.append((f"our latency at the seed's rate ({figures['seed_latency_rate_per_s']:,}/s)",
                     f"{figures['latency_at_seed_rate_p50_us']} / "
                     f"{figures['latency_at_seed_rate_p99_us']}", None, ""))
    if "tools" in details:
        us = details["tools"]["us_per_call"]
        for side, value in us.items():
            rows.append((f"tool call, {side} (µs per call)", f"{value:.2f}", None, ""))
        for key in ("tool_call_vs_sdk", "tool_call_vs_sdk_start_span",
                    "tool_call_events_vs_sdk_start_span", "tool_call_vs_traceloop",
                    "tool_call_vs_logfire"):
            rows.append((f"tool call ratio ({figures['tool_call_ours_side']})"
                         if "events" not in key else "tool call ratio (ours_events)",
                         "", figures.get(key), key))
    if "adapters" in details:
        item = details["adapters"]
        for side, value in item["us_per_tool_call"].items():
            extra = item["overhead_us_per_tool_call"].get(side)
            rows.append((f"LangGraph tool call, {side} (µs; overhead over bare)",
                         f"{value:,.1f}" + (f"; +{extra:,.1f}" if extra is not None else ""),
                         None, ""))
        for peer in ("openinference", "traceloop"):
            rows.append((f"LangGraph adapter overhead, ours / {peer}", "",
                         figures.get(f"adapter_langgraph_vs_{peer}"),
                         f"adapter_langgraph_vs_{peer}"))
    if "web" in details:
        item = details["web"]
        rows.append((f"web runs list, {item['spans']:,}-span db: API answer / first page (ms)",
                     f"{item['list_answer_ms']} / {item['first_page_ms']}", None,
                     "web_runs_list_ms"))
        rows.append(("web first page / the old whole-list query "
                     f"({item['old_whole_list_ms']} ms)", "",
                     figures.get("web_list_vs_old_whole_list"), "web_list_vs_old_whole_list"))
        rows.append(("web filtered: agent / status=failed / page 40 / run id search (ms)",
                     f"{item['agent_filter_ms']} / {item['status_failed_ms']} / "
                     f"{item['page_40_ms']} / {item['search_run_id_ms']}", None, ""))
        rows.append(("web waterfall document, 10,000-span trace (ms)",
                     f"{item['trace_10k_spans_ms']}", None, "web_trace_10k_spans_ms"))
        rows.append(("storing spans with the run indexes / without", "",
                     figures.get("web_store_indexed_vs_plain"), "web_store_indexed_vs_plain"))
    if "export" in details:
        rows.append((f"export, {figures['export_burst_spans']:,}-span burst, embedded receiver "
                     "in process (spans/s, lost)",
                     f"{figures['export_spans_per_s']:,}, lost {figures['export_lost']:,}", None,
                     "export_spans_per_s, export_lost"))
        rows.append(("export, receiver in its own process (spans/s, lost)",
                     f"{figures['export_separate_receiver_spans_per_s']:,}, lost "
                     f"{figures['export_separate_receiver_lost']:,}", None, ""))
        rows.append(("export, SDK's stock BatchSpanProcessor + OTLPSpanExporter (spans/s, lost)",
                     f"{figures['export_stock_sdk_spans_per_s']:,}, lost "
                     f"{figures['export_stock_sdk_lost']:,}", figures["export_vs_stock_sdk"],
                     "export_vs_stock_sdk (target >= 2)"))
        rows.append(("export, ours over OTLP/HTTP (spans/s, lost)",
                     f"{figures['export_http_spans_per_s']:,}, lost "
                     f"{figures['export_http_lost']:,}", figures["export_http_vs_grpc"],
                     "export_http_vs_grpc (target >= 0.8)"))
    if "memory" in details:
        for policy, item in details["memory"].items():
            rows.append((f"RSS growth, {item['events']:,} events, slow subscriber, {policy} (MB)",
                         f"{item['rss_growth_mb']}", None, ""))
        rows.append(("RSS growth, worst policy (MB)", "", figures["slow_subscriber_rss_mb"],
                     "slow_subscriber_rss_mb"))
    if "scaling" in figures:
        subs = figures["scaling"]["subscribers"]
        rows.append(("µs per delivery, subscribers " + "/".join(map(str, subs["counts"])),
                     " ".join(f"{v:.2f}" for v in subs["ours_us_per_delivery"]), None, ""))
        rows.append(("  seed", " ".join(f"{v:.2f}" for v in subs["seed_us_per_delivery"]), None,
                     ""))
        runs = figures["scaling"]["runs"]
        rows.append(("µs per event, keyed, runs " + "/".join(map(str, runs["counts"])),
                     " ".join(f"{v:.2f}" for v in runs["ours_us_per_event"]), None, ""))
    width = max(len(row[0]) for row in rows) if rows else 10
    print(f"{'measure':<{width}}  {'value':>24}  {'ratio':>7}  key")
    for label, value, ratio_value, key in rows:
        print(f"{label:<{width}}  {value:>24}  {fmt(ratio_value):>7}  {key}")
    meta = figures["meta"]
    print(f"({meta['mode']} mode, medians of {meta['rounds']} rounds, {meta['machine']}, "
          f"{meta['seconds']:.0f} s)")
    for reason in figures["skipped"]:
        print(f"skipped: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="otel-agentbus benchmark suite")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: fewer rounds and events (< 2 min)")
    parser.add_argument("--json", nargs="?", const="", metavar="PATH",
                        help="write the figures as JSON (default bench/results/bench[-quick].json)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections, of {', '.join(SECTIONS)}")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    mode = QUICK if args.quick else FULL
    sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    load = os.getloadavg()
    figures: dict[str, Any] = {"skipped": [], "details": {}}
    if "bus" in sections:
        asyncio.run(bus_section(mode, figures))
    if "tools" in sections:
        tools_section(mode, figures)
    if "export" in sections:
        export_section(mode, figures)
    if "memory" in sections:
        memory_section(mode, figures)
    if "scaling" in sections:
        asyncio.run(scaling_section(mode, figures))
    if "adapters" in sections:
        adapters_section(mode, figures)
    if "web" in sections:
        web_section(mode, figures)
    figures["meta"] = {
        "mode": mode.name,
        "rounds": mode.rounds,
        "sections": sections,
        "machine": f"Python {platform.python_version()}, {os.cpu_count()} cores",
        "load_average_at_start": [round(x, 2) for x in load],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(figures)
    if args.json is not None:
        path = Path(args.json) if args.json else RESULTS / (
            "bench-quick.json" if args.quick else "bench.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures: {path}")
    if "scaling" in sections and not args.no_plots:
        if importable("matplotlib"):
            from .plots import plot

            for written in plot(figures, publish=mode.name == "full"):
                print(f"plot: {written}")
        else:
            print("plots skipped: matplotlib is not installed (bash bench/run installs it)")
    return 0
