"""`otel-agentbus trace` on traces no exporter should send but a receiver may still hold:
chains thousands of spans deep, parent cycles, spans that are their own parent.

Before, `trace --json` overflowed Python's stack at a depth of 400-500, the text form at
1,000-2,000, and 4,000 spans in parent cycles took 16 s. Every span must now be printed
exactly once, nested under its parent, with each cycle cut at its earliest span. The
timeouts are only hang guards; speed is not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from telemetry_helpers import child_env

from otel_agentbus.cli import main
from otel_agentbus.receiver.convert import SpanRecord
from otel_agentbus.receiver.queries import SpanNode, SpanRow, TraceTree, get_trace
from otel_agentbus.receiver.render import MAX_INDENT_LEVELS, format_trace, trace_json_chunks
from otel_agentbus.receiver.store import Store

pytestmark = pytest.mark.timeout(120)

TRACE = "ab" * 16


def span_id(i: int) -> str:
    return f"{i + 1:016x}"


def store_spans(db: Path, parents: Sequence[int | None]) -> None:
    """Span ``i`` (started at ``i``) under span ``parents[i]`` (``None``: a root)."""
    rows = [
        SpanRecord(TRACE, span_id(i), None if parent is None else span_id(parent), f"span {i}",
                   "INTERNAL", 1_000 + i, 2_000 + i, "OK", "", json.dumps({"i": i}), "[]", "[]",
                   "{}", "scope", "", "svc", "", 0)
        for i, parent in enumerate(parents)
    ]
    with Store(db) as store:
        store.write(spans=rows)


@contextmanager
def recursion_limit(limit: int) -> Iterator[None]:
    """Python's own json parser recurses per nesting level; the test raises its limit to
    read the deep output back (our writer must not need that)."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(limit)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def node_depths(tree_dict: dict[str, Any]) -> dict[str, int]:
    """span id -> nesting depth in the ``--json`` output, read with a stack."""
    depths: dict[str, int] = {}
    stack = [(0, node) for node in tree_dict["roots"]]
    while stack:
        depth, node = stack.pop()
        assert node["span_id"] not in depths, f"span {node['span_id']} printed twice"
        depths[node["span_id"]] = depth
        stack.extend((depth + 1, child) for child in node["children"])
    return depths


DEPTH = 5_000


def test_a_chain_5000_deep_prints_as_text_and_json(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "chain.db"
    store_spans(db, [None, *range(DEPTH - 1)])
    tree = get_trace(db, TRACE)
    assert [(depth, node.span.name) for depth, node in tree.walk()] == [
        (i, f"span {i}") for i in range(DEPTH)]

    assert main(["trace", TRACE, "--db", str(db)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "  OK" in line]
    assert len(lines) == DEPTH
    assert lines[5] == "  " * 5 + "span 5  0.00 ms  OK"
    # Past the cap the indentation stops growing and the depth is printed instead.
    deep = DEPTH - 1
    assert lines[deep] == "  " * MAX_INDENT_LEVELS + f"[depth {deep}] span {deep}  0.00 ms  OK"

    assert main(["trace", TRACE, "--db", str(db), "--json"]) == 0
    out = capsys.readouterr().out
    with recursion_limit(4 * DEPTH + 1_000):
        printed = json.loads(out)
        assert printed == tree.to_dict()
    assert printed["span_count"] == DEPTH
    assert node_depths(printed) == {span_id(i): i for i in range(DEPTH)}


def test_trace_json_in_a_subprocess_does_not_overflow(tmp_path: Path) -> None:
    """The reported crash: a fresh interpreter with the default recursion limit."""
    db = tmp_path / "chain.db"
    store_spans(db, [None, *range(DEPTH - 1)])
    proc = subprocess.run(
        [sys.executable, "-m", "otel_agentbus.cli", "trace", TRACE, "--db", str(db), "--json"],
        capture_output=True, text=True, env=child_env(), timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""
    with recursion_limit(4 * DEPTH + 1_000):
        assert len(node_depths(json.loads(proc.stdout))) == DEPTH


def test_the_json_writer_matches_json_dumps_on_ordinary_traces() -> None:
    def row(i: int, parent: int | None) -> SpanRow:
        return SpanRow(TRACE, span_id(i), None if parent is None else span_id(parent),
                       f"s{i}", "SERVER", i, i + 3, "ERROR", "boom \"quoted\"",
                       {"nested": {"list": [1, {"k": "v"}], "empty": {}}, "u": "\u00e9"},
                       [], [{"trace_id": TRACE, "attributes": {}}], {"service.name": "svc"},
                       "scope", "svc", False)

    rows = [row(0, None), row(1, 0), row(2, 0), row(3, 2), row(4, 99)]
    nodes = [SpanNode(r) for r in rows]
    nodes[0].children.extend([nodes[1], nodes[2]])
    nodes[2].children.append(nodes[3])
    for tree in (TraceTree(TRACE, [nodes[0], nodes[4]], rows), TraceTree(TRACE, [], [])):
        assert "".join(trace_json_chunks(tree)) == json.dumps(tree.to_dict(), indent=2)


CYCLE = 4


def test_4000_spans_in_parent_cycles_each_printed_once(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """1,000 cycles of four spans; span ``4k + j`` has parent ``4k + (j + 1) % 4``, so
    each cycle's earliest span ``4k`` is cut and the other three nest under it."""
    count = 4_000
    db = tmp_path / "cycles.db"
    store_spans(db, [(i // CYCLE) * CYCLE + (i + 1) % CYCLE for i in range(count)])
    tree = get_trace(db, TRACE)
    assert [node.span.span_id for node in tree.roots] == [
        span_id(i) for i in range(0, count, CYCLE)]
    first = tree.roots[0]
    # 0 <- 1 <- 2 <- 3 <- 0 (child <- parent): cut at 0, so 0 > 3 > 2 > 1.
    assert [(d, n.span.name) for d, n in first.walk()] == [
        (0, "span 0"), (1, "span 3"), (2, "span 2"), (3, "span 1")]
    assert sorted(n.span.span_id for _, n in tree.walk()) == sorted(
        span_id(i) for i in range(count))

    assert main(["trace", TRACE, "--db", str(db)]) == 0
    assert capsys.readouterr().out.count("  OK") == count
    assert main(["trace", TRACE, "--db", str(db), "--json"]) == 0
    depths = node_depths(json.loads(capsys.readouterr().out))
    assert len(depths) == count
    assert max(depths.values()) == CYCLE - 1


def test_one_long_cycle_with_branches_and_self_parents(tmp_path: Path) -> None:
    """A 3,000-span ring entered late (span 1,000 is the earliest in it), a branch hanging
    off the ring started before it, and spans that name themselves as parent."""
    ring = list(range(1_000, 4_000))
    parents: list[int | None] = [None] * 4_000
    parents[0] = None             # a real root
    parents[1] = 0
    parents[2] = 2                # its own parent: a root
    parents[3] = 2_500            # a branch off the ring, earlier than any ring span
    parents[4] = 3
    for k, i in enumerate(ring):  # i's parent is the next span of the ring
        parents[i] = ring[(k + 1) % len(ring)]
    for i in range(5, 1_000):
        parents[i] = i            # more self-parents
    db = tmp_path / "ring.db"
    store_spans(db, parents)
    tree = get_trace(db, TRACE)
    roots = [node.span.span_id for node in tree.roots]
    assert roots == [span_id(0), span_id(2), *(span_id(i) for i in range(5, 1_001))]
    ring_root = tree.roots[-1]
    walked = {n.span.span_id: d for d, n in ring_root.walk()}
    # Cut at 1,000 (the ring's earliest span): 3,999 right under it, 1,001 deepest.
    assert walked[span_id(3_999)] == 1 and walked[span_id(1_001)] == len(ring) - 1
    # The branch stays under its real parent, not cut into a root of its own.
    assert walked[span_id(3)] == walked[span_id(2_500)] + 1
    assert walked[span_id(4)] == walked[span_id(3)] + 1
    assert len(list(tree.walk())) == 4_000
    text = format_trace(tree)
    assert text.count("  OK") == 4_000


def test_hand_built_node_cycles_are_walked_once() -> None:
    rows = [SpanRow(TRACE, span_id(i), None, f"s{i}", "INTERNAL", i, i, "OK", "", {}, [], [],
                    {}, "scope", None, False) for i in range(3)]
    a, b, c = (SpanNode(r) for r in rows)
    a.children.append(b)
    b.children.extend([c, a])  # b -> a closes a loop
    c.children.append(c)       # and c is its own child
    tree = TraceTree(TRACE, [a], rows)
    assert [(d, n.span.name) for d, n in tree.walk()] == [(0, "s0"), (1, "s1"), (2, "s2")]
    as_dict = tree.to_dict()
    assert len(node_depths(as_dict)) == 3
    assert json.loads("".join(trace_json_chunks(tree))) == as_dict
    assert repr(a) == "SpanNode(span_id='0000000000000001', name='s0', children=1)"
