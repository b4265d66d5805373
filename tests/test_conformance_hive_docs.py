"""docs/conformance-hive.md stays true: its totals count its rows, and every test a row
names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "conformance-hive.md").read_text()
FILES = {"h": "test_hive_compat.py", "c000": "test_conformance_hive_000.py",
         "c001": "test_conformance_hive_001.py", "c003": "test_conformance_hive_003.py",
         "traces": "test_conformance_hive_traces.py"}
STATUSES = ("works", "deliberately different")


def _rows() -> list[list[str]]:
    rows = [[cell.strip() for cell in line.strip().strip("|").split(" | ")]
            for line in DOC.splitlines() if line.startswith("| ")]
    return [row for row in rows if len(row) == 4 and row[2] in STATUSES]


def test_the_totals_count_the_rows() -> None:
    rows = _rows()
    works = sum(row[2] == "works" for row in rows)
    match = re.search(r"Totals: \*\*(\d+) rows, (\d+) work as in the seed, (\d+) deliberately\s+"
                      r"different\*\*", DOC)
    assert match is not None
    assert tuple(int(n) for n in match.groups()) == (len(rows), works, len(rows) - works)


def test_every_named_test_exists() -> None:
    missing = []
    refs = [ref for row in _rows() for ref in re.findall(r"(\w+)::(test_\w+)", row[3])]
    assert len(refs) > 90  # nearly every row names its test
    for ref in refs:
        source = (ROOT / "tests" / FILES[ref[0]]).read_text()
        if f"def {ref[1]}(" not in source:
            missing.append("::".join(ref))
    assert not missing
