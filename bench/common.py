"""Shared helpers: paths, medians, ratios, alternating rounds, latency percentiles,
a null span exporter, free ports, subprocess workers, the stand-alone scripts' command line.

Stand-alone scripts (``python bench/bench_bus.py``) import this module as ``common``;
the suite's modules as ``bench.common``: it imports nothing but the standard library at
the top."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
"""Every run's JSON and PNGs (git-ignored)."""
PLOTS = REPO / "bench" / "plots"
"""The PNGs docs/performance.md names (committed; written by full runs only)."""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def ratio(ours: float, theirs: float) -> float:
    return round(ours / theirs, 2) if theirs else float("nan")


async def alternate(
    rounds: int, sides: dict[str, Callable[[], Awaitable[float]]]
) -> dict[str, list[float]]:
    """Run one round of every side per round, in turn, so drift on the machine hits all
    sides alike; returns each side's per-round results."""
    results: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            results[name].append(await run())
    return results


async def settle_percentiles(samples: list[int], count: int,
                             turns: int) -> tuple[float, float]:
    """Give the loop up to ``turns`` turns until ``count`` latency samples (ns) are in;
    returns their p50 and p99 in µs."""
    for _ in range(turns):
        if len(samples) >= count:
            break
        await asyncio.sleep(0)
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] / 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] / 1000
    return p50, p99


@functools.cache
def _null_exporter_class() -> type[Any]:
    # The SDK is imported on first use, not when this module is.
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        """Counts spans and drops them: measures the publishing side, not a network."""

        def __init__(self) -> None:
            self.spans = 0

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            self.spans += len(spans)
            return SpanExportResult.SUCCESS

    return NullExporter


def null_exporter() -> Any:
    """A span exporter that counts the spans it is handed (``.spans``) and drops them."""
    return _null_exporter_class()()


def batch_processor(exporter: Any) -> Any:
    """A BatchSpanProcessor for ``exporter`` whose queue is large enough that no side drops
    spans (dropping would flatter it)."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    return BatchSpanProcessor(exporter, max_queue_size=1 << 20)


def free_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def script_main(description: str | None,
                measure: Callable[[bool], Coroutine[Any, Any, dict[str, Any]]],
                print_table: Callable[[dict[str, Any]], None],
                argv: list[str] | None = None) -> int:
    """The command line of a stand-alone script, ``[--quick] [--json]``: runs
    ``measure(quick)`` and prints its figures as JSON or as ``print_table`` does."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, a smaller workload")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.quick))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_table(figures)
    return 0


def importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def run_module(module: str, *args: str, timeout: float = 600.0,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh interpreter; it prints one JSON object last."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed ({completed.returncode}):\n"
                           f"{completed.stderr[-3000:]}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{module} printed no JSON:\n{completed.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Worker:
    """A long-lived ``python -m module worker side`` process, driven line by line.

    Each side of a per-call comparison lives in its own interpreter (the peers install
    global tracer providers), and the parent alternates rounds between the workers.
    """

    def __init__(self, module: str, side: str, env: dict[str, str] | None = None) -> None:
        self.side = side
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "worker", side], cwd=REPO, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})}, bufsize=1,
        )
        self.ready = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = self.process.stdout.readline()
            if not line:
                assert self.process.stderr is not None
                error = self.process.stderr.read()[-3000:]
                raise RuntimeError(f"worker {self.side} exited:\n{error}")
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result

    def call(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> dict[str, Any]:
        try:
            return self.call("quit")
        finally:
            self.process.wait(timeout=60)
