"""The names reference page's table is the one generated from semconv.py, and covers every name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from otel_agentbus import semconv
from otel_agentbus.semconv_table import (
    BEGIN_MARKER,
    END_MARKER,
    MarkersError,
    generated_block,
    render_names_table,
    with_names_table,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES_PAGE = ROOT / "docs" / "names.md"
EMITTED_NAME = re.compile(r"^[a-z_]+(\.[a-z0-9_]+)+$")


def emitted_names() -> list[str]:
    """Every attribute, span event and metric name constant in semconv.py."""
    return [value for key, value in vars(semconv).items()
            if key.isupper() and isinstance(value, str) and EMITTED_NAME.match(value)]


def test_names_page_table_is_the_generated_one() -> None:
    page = NAMES_PAGE.read_text(encoding="utf-8")
    assert generated_block(page) == render_names_table(), (
        "docs/names.md's names table differs from semconv.py; run "
        "`python -m otel_agentbus.semconv_table --write`")


def test_every_name_is_in_exactly_one_row() -> None:
    names = emitted_names()
    assert len(names) > 40
    rows = Counter(name for group in semconv.NAME_TABLE for name in group.names)
    assert sorted(set(names) - set(rows)) == [], "names missing from semconv.NAME_TABLE"
    patterns = {name for name in rows if semconv.PAYLOAD_KEY in name}
    assert sorted(set(rows) - set(names) - patterns) == [], "NAME_TABLE rows naming no constant"
    assert [name for name, count in rows.items() if count > 1] == []


def test_each_row_has_one_owner_and_says_where() -> None:
    for group in semconv.NAME_TABLE:
        owners = {semconv.convention_of(name) for name in group.names}
        assert len(owners) == 1, group
        assert group.where.strip(), group


def test_table_shows_kind_owner_and_where_per_row() -> None:
    table = render_names_table()
    assert ("| `gen_ai.client.operation.duration`, `gen_ai.client.token.usage` | metric | "
            "per LLM call: duration in s, tokens by `gen_ai.token.type` | GenAI semconv |"
            in table)
    assert "| `error.type` | attribute |" in table and "| OTel semconv |" in table
    assert f"Schema {semconv.SCHEMA_VERSION} " in table


def test_unknown_prefix_is_named() -> None:
    with pytest.raises(ValueError, match=r"'otel\.thing' has no known prefix"):
        semconv.convention_of("otel.thing")


def test_replacing_keeps_the_text_around_the_block() -> None:
    document = f"# Title\n\nbefore\n{BEGIN_MARKER}\nstale | table\n{END_MARKER}\nafter\n"
    fresh = with_names_table(document)
    assert fresh.startswith(f"# Title\n\nbefore\n{BEGIN_MARKER}\n")
    assert fresh.endswith(f"{END_MARKER}\nafter\n")
    assert "stale" not in fresh
    assert generated_block(fresh) == render_names_table()


def test_missing_markers_are_a_clear_error() -> None:
    with pytest.raises(MarkersError, match="no generated names table"):
        with_names_table("# a README without the block\n")


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "otel_agentbus.semconv_table", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_command_checks_and_writes(tmp_path: Path) -> None:
    stale = tmp_path / "names.md"
    stale.write_text(NAMES_PAGE.read_text(encoding="utf-8").replace(
        "| `agentbus.runs`, `agentbus.run.duration` | metric |",
        "| `agentbus.runs` | metric |"), encoding="utf-8")
    checked = run_command("--check", str(stale))
    assert checked.returncode == 1
    assert "out of date" in checked.stderr and "semconv_table --write" in checked.stderr

    assert run_command("--write", str(stale)).returncode == 0
    assert stale.read_text(encoding="utf-8") == NAMES_PAGE.read_text(encoding="utf-8")
    assert run_command("--check", str(stale)).returncode == 0


def test_command_prints_the_table_and_names_a_bad_file(tmp_path: Path) -> None:
    printed = run_command()
    assert printed.returncode == 0
    assert printed.stdout == render_names_table()
    bare = tmp_path / "bare.md"
    bare.write_text("nothing here\n", encoding="utf-8")
    failed = run_command("--check", str(bare))
    assert failed.returncode == 2
    assert str(bare) in failed.stderr and "no generated names table" in failed.stderr


def test_without_a_file_the_command_checks_and_writes_the_names_page(tmp_path: Path) -> None:
    """--check and --write alone act on docs/names.md, relative to where they run."""
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "names.md"
    page.write_text(f"# Names\n{BEGIN_MARKER}\nstale\n{END_MARKER}\n", encoding="utf-8")

    def run_here(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "otel_agentbus.semconv_table", *args],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    stale = run_here("--check")
    assert stale.returncode == 1 and "docs/names.md" in stale.stderr
    assert run_here("--write").returncode == 0
    assert generated_block(page.read_text(encoding="utf-8")) == render_names_table()
    assert run_here("--check").returncode == 0
