"""The bus and its subscriptions meet only through the mailbox module: no import cycle and
no reads of each other's private fields."""

from __future__ import annotations

import ast
from pathlib import Path

import otel_agentbus

PACKAGE = Path(otel_agentbus.__file__).resolve().parent


def imported_modules(name: str) -> set[str]:
    tree = ast.parse((PACKAGE / name).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_subscription_and_mailbox_import_nothing_from_the_bus() -> None:
    for name in ("subscription.py", "mailbox.py"):
        modules = imported_modules(name)
        assert ".bus" not in modules and "otel_agentbus.bus" not in modules, name


def test_the_bus_reads_no_private_field_of_a_subscription() -> None:
    tree = ast.parse((PACKAGE / "bus.py").read_text(encoding="utf-8"))
    private = sorted({
        f"line {node.lineno}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in {"sub", "subscription"} and node.attr.startswith("_")
    })
    assert not private, private
