"""Shared helpers: paths, medians, ratios, alternating rounds, subprocess workers."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
"""Every run's JSON and PNGs (git-ignored)."""
PLOTS = REPO / "bench" / "plots"
"""The PNGs the README shows (committed; written by full runs only)."""


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
