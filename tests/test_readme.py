"""The README's Python examples run as written (each block in a fresh subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"example_{index}.py"
    script.write_text(BLOCKS[index])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"README block {index} failed:\n{BLOCKS[index]}\n{done.stderr}"


def test_every_emitted_name_is_documented() -> None:
    """semconv.py is the one table of names; the README's table must list each of them."""
    from otel_agentbus import semconv

    readme = (ROOT / "README.md").read_text()
    names = [
        value for key, value in vars(semconv).items()
        if key.isupper() and isinstance(value, str) and ("." in value)
        and (value.startswith(("gen_ai.", "agentbus.", "error.")))
    ]
    assert len(names) > 40
    missing = [name for name in names if f"`{name}`" not in readme and name not in readme]
    assert not missing, f"names emitted but not documented in README: {missing}"
