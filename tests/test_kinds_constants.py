"""Kinds as typed constants: one per known kind, no literal kinds in the package, and every
kind either mapped by the telemetry mirror or given the documented span-event fallback."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from telemetry_helpers import HarnessFactory

from otel_agentbus import Event, Scope, kinds
from otel_agentbus import semconv as sc

pytestmark = pytest.mark.timeout(60)

PACKAGE = Path(kinds.__file__).resolve().parent

NOT_KIND_CONSTANTS = {"CUSTOM_PREFIX"}
"""Upper-case str constants of kinds.py that are not kinds."""

HIVE_TYPE_VALUES = {"custom"}
"""Strings that are also Hive ``EventType`` values (``EventType.CUSTOM = "custom"``)."""


def constant_name(kind: str) -> str:
    """The naming rule: the kind without ``agent.``, upper case, dots as underscores."""
    return kind.removeprefix("agent.").upper().replace(".", "_")


def kind_constants() -> dict[str, str]:
    return {name: value for name, value in vars(kinds).items()
            if name.isupper() and isinstance(value, str) and name not in NOT_KIND_CONSTANTS}


def test_every_known_kind_has_its_constant_and_every_constant_is_a_known_kind() -> None:
    constants = kind_constants()
    assert {constant_name(kind): kind for kind in kinds.KNOWN_KINDS} == constants
    assert kinds.RUN_STARTED == "agent.run.started"
    assert kinds.NODE_LOOP_ITERATION == "agent.node.loop.iteration"
    assert kinds.MCP_TOOL_CALL_STARTED == "mcp.tool.call.started"
    assert len(constants) == len(kinds.KNOWN_KINDS)


def test_the_package_uses_the_constants_not_literal_kinds() -> None:
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "kinds.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                          | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value in kinds.KNOWN_KINDS and id(node) not in docstrings
                    and node.value not in HIVE_TYPE_VALUES):
                found.append(f"{relative}:{node.lineno}: {node.value!r} -> "
                             f"kinds.{constant_name(node.value)}")
    assert not found, "literal kinds instead of constants:\n" + "\n".join(found)


# The "How events become telemetry" table (docs/telemetry.md): kinds the mirror maps to spans, to
# named span events, or only counts; every other kind in a run becomes a span event named
# after the kind.
SPANS = {kinds.RUN_STARTED, kinds.RUN_COMPLETED, kinds.RUN_FAILED, kinds.RUN_CANCELLED,
         kinds.NODE_LOOP_STARTED, kinds.NODE_LOOP_ITERATION, kinds.NODE_LOOP_COMPLETED,
         kinds.NODE_LOOP_FAILED, kinds.LLM_REQUEST, kinds.LLM_RESPONSE, kinds.LLM_FAILED,
         kinds.LLM_USAGE, kinds.TOOL_CALL_STARTED, kinds.TOOL_CALL_COMPLETED}
NAMED_EVENTS = {kinds.DECISION_MADE: sc.EV_DECISION, kinds.DECISION_OUTCOME: "agentbus.outcome",
                kinds.PROBLEM_REPORTED: "agentbus.problem"}
COUNTED = {kinds.LLM_DELTA, kinds.LLM_REASONING_DELTA}
"""LLM deltas: counted on the LLM call's span, never a span or event each."""
CHUNKS = {kinds.LLM_TOOL_CALL_STARTED, kinds.LLM_TOOL_CALL_DELTA,
          kinds.LLM_TOOL_CALL_COMPLETED, kinds.CLIENT_OUTPUT_DELTA,
          kinds.NODE_INTERNAL_OUTPUT, kinds.CONTEXT_BUILT,
          kinds.CHAT_TEXT_DELTA, kinds.CHAT_TOOL_CALL_ARGUMENTS_DELTA}
"""High-volume streaming kinds: counted as chunks of the innermost span."""


def test_the_mirror_classes_name_only_known_kinds_and_do_not_overlap() -> None:
    classes = [SPANS, set(NAMED_EVENTS), COUNTED, CHUNKS]
    for group in classes:
        assert group <= set(kinds.KNOWN_KINDS)
    assert sum(len(group) for group in classes) == len(set().union(*classes))


async def test_every_known_kind_is_mapped_or_becomes_a_span_event_named_after_it(
    make: HarnessFactory,
) -> None:
    h = make()
    run_of: dict[str, str] = {}
    for index, kind in enumerate(kinds.KNOWN_KINDS):
        run_id = f"r{index}"
        run_of[kind] = run_id
        scope: dict[str, Any] = {"run_id": run_id, "agent": "a"}
        await h.bus.publish(Event(kinds.RUN_STARTED, scope=Scope(**scope)))
        if kind not in (kinds.RUN_STARTED, kinds.RUN_COMPLETED):
            await h.bus.publish(Event(kind, scope=Scope(**scope)))
        await h.bus.publish(Event(kinds.RUN_COMPLETED, scope=Scope(**scope)))
    assert h.bus.stats().hook_errors == 0
    spans = h.spans()
    mapped = SPANS | set(NAMED_EVENTS) | COUNTED | CHUNKS
    for kind, run_id in run_of.items():
        of_run = [s for s in spans if (s.attributes or {}).get(sc.RUN_ID) == run_id]
        assert of_run, f"no span for the run of {kind}"
        event_names = [e.name for s in of_run for e in s.events]
        if kind in mapped:
            assert kind not in event_names, f"{kind} fell to the fallback, not its mapping"
        else:
            assert event_names == [kind], f"{kind}: expected one span event named after it"
        if kind in NAMED_EVENTS:
            assert event_names == [NAMED_EVENTS[kind]]
        if kind in CHUNKS:
            (root,) = of_run
            assert (root.attributes or {}).get(sc.LLM_CHUNKS) == 1, kind
