"""PNG plots of the scaling curves (matplotlib, Agg backend)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .common import PLOTS, RESULTS

FILES = ("scaling_subscribers.png", "scaling_runs.png")


def plot(figures: dict[str, Any], publish: bool) -> list[Path]:
    """Write the PNGs to bench/results/; with ``publish`` copy them to bench/plots/ too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaling = figures.get("scaling", {})
    written: list[Path] = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    note = figures.get("meta", {}).get("machine", "")

    def save(fig: Any, ax: Any, name: str) -> Path:
        """Grid, legend and the machine note; write to bench/results/ and close."""
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.text(0.99, 0.01, note, ha="right", va="bottom", fontsize=7, color="grey")
        fig.tight_layout()
        path = RESULTS / name
        fig.savefig(path)
        plt.close(fig)
        return path

    subscribers = scaling.get("subscribers")
    if subscribers:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        xs = subscribers["counts"]
        ax.plot(xs, subscribers["ours_us_per_delivery"], "o-", label="otel-agentbus")
        if subscribers.get("seed_us_per_delivery"):
            ax.plot(xs, subscribers["seed_us_per_delivery"], "s--", label="seed (Hive) bus")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("subscribers (each an async no-op handler)")
        ax.set_ylabel("µs per delivered event")
        ax.set_title("Cost per delivery as subscribers grow")
        written.append(save(fig, ax, FILES[0]))

    runs = scaling.get("runs")
    if runs:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
        ax.plot(runs["counts"], runs["ours_us_per_event"], "o-",
                label="otel-agentbus, keyed delivery")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0, top=max(runs["ours_us_per_event"]) * 1.5)
        ax.set_xlabel("concurrent runs (events interleaved, in order per run)")
        ax.set_ylabel("µs per event")
        ax.set_title("Cost per event as concurrent runs grow")
        written.append(save(fig, ax, FILES[1]))

    if publish:
        PLOTS.mkdir(parents=True, exist_ok=True)
        for path in written:
            shutil.copyfile(path, PLOTS / path.name)
    return written
