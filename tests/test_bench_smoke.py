"""The benchmark suite runs: its ours-vs-seed part in quick mode, with this venv.

Peers (bubus, pyee, blinker) come from the ``bench`` extra, which CI does not install: the
suite skips them cleanly and their keys are null. No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED = REPO.parent / "shared" / "baselines" / "hive_event_bus.py"

pytestmark = pytest.mark.timeout(90)


@pytest.mark.skipif(not SEED.exists(), reason="the seed bus (../shared/baselines) is not here")
def test_quick_bus_section_writes_the_ratio_keys(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "bus", "--no-plots",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=80, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "bus_1sub_vs_seed" in completed.stdout  # the table
    figures = json.loads(out.read_text())
    for key in ("bus_1sub_vs_seed", "bus_10sub_vs_seed", "latency_p50_us", "latency_p99_us"):
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
    modules = {"bubus": "bubus", "pyee": "pyee", "blinker": "blinker"}
    for peer, module in modules.items():
        value = figures[f"bus_vs_{peer}"]
        if importlib.util.find_spec(module) is None:
            assert value is None
            assert any(reason.startswith(f"{peer}:") for reason in figures["skipped"])
        else:
            assert isinstance(value, int | float) and value > 0
    assert figures["meta"]["mode"] == "quick"
