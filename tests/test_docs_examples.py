"""The README's and the docs' Python examples run as written (each block in a fresh
subprocess), every emitted name is documented, and the site builds with ``--strict``."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
BLOCKS = [
    (page.relative_to(ROOT).as_posix(), index, block)
    for page in PAGES
    for index, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))
]


def test_readme_and_docs_have_examples() -> None:
    pages = {page for page, _, _ in BLOCKS}
    assert "README.md" in pages
    assert {"docs/getting-started.md", "docs/concepts.md", "docs/instrument.md",
            "docs/telemetry.md", "docs/runtime.md"} <= pages
    assert len(BLOCKS) >= 20


@pytest.mark.parametrize(("page", "index", "block"), BLOCKS,
                         ids=[f"{page}-{index}" for page, index, _ in BLOCKS])
def test_example_runs(page: str, index: int, block: str, tmp_path: Path) -> None:
    script = tmp_path / f"example_{index}.py"
    script.write_text(block)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, f"{page} block {index} failed:\n{block}\n{done.stderr}"


def test_every_emitted_name_is_documented() -> None:
    """semconv.py is the one table of names; the names reference page must list each."""
    from otel_agentbus import semconv

    page = (DOCS / "names.md").read_text()
    names = [
        value for key, value in vars(semconv).items()
        if key.isupper() and isinstance(value, str) and ("." in value)
        and (value.startswith(("gen_ai.", "agentbus.", "error.")))
    ]
    assert len(names) > 40
    missing = [name for name in names if f"`{name}`" not in page and name not in page]
    assert not missing, f"names emitted but not documented in docs/names.md: {missing}"


def test_readme_stays_short_and_points_into_the_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 160
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert linked, "the README links into docs/"
    assert [link for link in linked if not (ROOT / link).is_file()] == []


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None and not os.environ.get("CI"),
                    reason="mkdocs is not installed: pip install -e '.[docs]'")
def test_site_builds_strictly(tmp_path: Path) -> None:
    """Broken links, missing pages and docstrings mkdocstrings cannot read fail the build."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert (tmp_path / "site" / "names" / "index.html").is_file()
    assert (tmp_path / "site" / "reference" / "core" / "index.html").is_file()
