"""The receiver stores spans with multi-row upserts: same rows and rules as one by one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from otel_agentbus.receiver.convert import SpanRecord
from otel_agentbus.receiver.store import _SPANS_PER_STATEMENT, Store


def row(index: int, *, pending: int = 0, name: str = "s") -> SpanRecord:
    return SpanRecord(
        trace_id=f"{index // 100:032x}", span_id=f"{index:016x}", parent_span_id=None,
        name=name, kind="INTERNAL", start_ns=index, end_ns=index + 1, status_code="UNSET",
        status_message="", attributes="{}", events="[]", links="[]", resource="{}",
        scope_name="t", scope_version="", service_name="svc", trace_state="", pending=pending,
    )


def stored(path: Path) -> dict[str, tuple[str, int]]:
    with sqlite3.connect(path) as connection:
        return {span_id: (name, pending) for span_id, name, pending in connection.execute(
            "SELECT span_id, name, pending FROM spans")}


@pytest.mark.parametrize("count", [1, 512, _SPANS_PER_STATEMENT, 2 * _SPANS_PER_STATEMENT + 5])
def test_bulk_rows_are_stored_as_given(tmp_path: Path, count: int) -> None:
    rows = [row(index) for index in range(count)]
    with Store(tmp_path / "r.db") as store:
        store.write(spans=rows)
    assert len(stored(tmp_path / "r.db")) == count


@pytest.mark.parametrize("size", [3, 2 * _SPANS_PER_STATEMENT + 5])
def test_pending_rules_hold_within_one_request(tmp_path: Path, size: int) -> None:
    filler = [row(1000 + index) for index in range(size - 3)]
    rows = [
        row(1, pending=1, name="placeholder"), row(1, name="finished"),  # pending, then done
        row(2, name="finished"), *filler, row(2, pending=1, name="late placeholder"),
        row(3, name="first"),
    ]
    with Store(tmp_path / "r.db") as store:
        store.write(spans=rows)
        store.write(spans=[row(3, name="second")])  # a later record replaces an earlier one
    spans = stored(tmp_path / "r.db")
    assert spans[f"{1:016x}"] == ("finished", 0)
    assert spans[f"{2:016x}"] == ("finished", 0)
    assert spans[f"{3:016x}"] == ("second", 0)
    assert len(spans) == 3 + len(filler)
