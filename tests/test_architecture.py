"""docs/architecture.md stays true: the layers it states are the ones the imports follow,
the core never loads the OpenTelemetry SDK, and every module is in its module table.

The rules are read from the page itself (its layer table and module table), so page and
test cannot drift. How an import counts (also written on the page):
- module level (also inside ``try``, class bodies and plain ``if``): checked against the
  layer table, and for the core against the SDK rule, following package modules it loads;
- under ``if TYPE_CHECKING:``: checked against the layer table only (it never runs);
- inside a function: not checked (a deferred import is how a layer loads one above it
  on demand).
"""

from __future__ import annotations

import ast
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "otel_agentbus"
DOC = ROOT / "docs" / "architecture.md"
SDK_PREFIXES = ("opentelemetry.sdk", "opentelemetry.exporter", "grpc")
ROOT_MODULES = "*.py"

# Today's violations, written as the test reports them. Other branches of issue 11 remove
# them; an entry that is no longer a violation fails the test, so delete it then.
KNOWN_VIOLATIONS = frozenset({
    # The package root names `Telemetry` and `configure` for type checkers; at run time they
    # load on first use (module `__getattr__`), so `import otel_agentbus` loads no SDK.
    "otel_agentbus -> otel_agentbus.telemetry.config",
})


# ------------------------------------------------------------------------- the page
@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    holds: tuple[str, ...]
    may_import: frozenset[str]


def markdown_table(text: str, header: str) -> list[list[str]]:
    """The body rows of the table whose header row is ``header``, as stripped cells."""
    lines = text.splitlines()
    try:
        start = lines.index(header)
    except ValueError:
        raise AssertionError(f"{DOC.name} has no table with header {header!r}") from None
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def read_layers(text: str) -> dict[str, Layer]:
    layers: dict[str, Layer] = {}
    for name, holds, may_import in markdown_table(text, "| layer | holds | may import |"):
        allowed = frozenset(part.strip() for part in may_import.split(",")) - {"—"}
        layers[name] = Layer(name, tuple(backticked(holds)), allowed)
    return layers


def read_module_table(text: str) -> dict[str, str]:
    """Module path (relative to the package folder) -> the layer the page gives it."""
    table: dict[str, str] = {}
    for module, layer, job in markdown_table(text, "| module | layer | one job |"):
        assert job, f"{module}: the module table needs its one job"
        for path in backticked(module):
            assert path not in table, f"{path} is in the module table twice"
            table[path] = layer
    return table


def layer_of(rel_path: str, layers: dict[str, Layer]) -> str:
    """The layer holding ``rel_path`` ("runtime/tracker.py"): the longest prefix wins."""
    best: tuple[int, str] | None = None
    for layer in layers.values():
        for hold in layer.holds:
            if hold == ROOT_MODULES:
                length = 0 if "/" not in rel_path else -1
            elif hold.endswith("/"):
                length = len(hold) if rel_path.startswith(hold) else -1
            else:
                length = len(hold) if rel_path == hold else -1
            if length >= 0 and (best is None or length > best[0]):
                best = (length, layer.name)
    if best is None:
        raise AssertionError(f"{rel_path}: no layer of {DOC.name} holds it; add its folder "
                             "to the layer table")
    return best[1]


# --------------------------------------------------------------------------- the code
@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    target: str
    type_checking: bool


class Package:
    """A package's modules by dotted name and their module-level imports."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self.paths: dict[str, str] = {}   # dotted module name -> path relative to folder
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            parts = [name, *rel.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            self.paths[".".join(parts)] = rel.as_posix()
        self.imports = {module: list(self._imports(module)) for module in self.paths}

    def is_package(self, module: str) -> bool:
        return self.paths[module].endswith("__init__.py")

    def _resolve(self, dotted: str) -> str:
        """The module an imported name comes from: ``a.b.c`` if it is a module, else ``a.b``."""
        if not dotted.startswith(self.name):
            return dotted
        while dotted not in self.paths and "." in dotted:
            dotted = dotted.rsplit(".", 1)[0]
        return dotted

    def _imports(self, module: str) -> Iterator[Import]:
        tree = ast.parse((self.folder / self.paths[module]).read_text(encoding="utf-8"))
        here = module if self.is_package(module) else module.rsplit(".", 1)[0]
        for node, type_checking in _module_level_imports(tree.body, False):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, self._resolve(alias.name), type_checking)
                continue
            if node.level:
                base_parts = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith(self.name):
                yield Import(module, base, type_checking)
                continue
            for alias in node.names:
                yield Import(module, self._resolve(f"{base}.{alias.name}"), type_checking)


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _module_level_imports(body: list[ast.stmt], type_checking: bool,
                          ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Imports that run when the module loads (or would, under ``TYPE_CHECKING``);
    function bodies are skipped."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, type_checking
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _module_level_imports(node.body, True)
            yield from _module_level_imports(node.orelse, type_checking)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    stmts = [c for c in children if isinstance(c, ast.stmt)]
                    for child in children:
                        if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                            stmts.extend(child.body)
                    yield from _module_level_imports(stmts, type_checking)


# ------------------------------------------------------------------------- the checks
def layer_violations(package: Package, layers: dict[str, Layer]) -> dict[str, str]:
    """``"importer -> imported"`` for every import against the layer table, with why."""
    found: dict[str, str] = {}
    for module, imports in package.imports.items():
        mine = layer_of(package.paths[module], layers)
        for imp in imports:
            if imp.target not in package.paths:
                continue
            theirs = layer_of(package.paths[imp.target], layers)
            if theirs != mine and theirs not in layers[mine].may_import:
                how = "under TYPE_CHECKING" if imp.type_checking else "at module level"
                found[f"{module} -> {imp.target}"] = (
                    f"{mine} may not import {theirs} ({how})")
    return found


def loads_at_import(package: Package, module: str) -> dict[str, list[str]]:
    """Every package module that loading ``module`` runs (its own imports, theirs, and the
    ``__init__`` of each package on the way, except the package root, which is checked as
    a module of its own), each with the chain of imports that reaches it."""
    chains = {module: [module]}
    todo = deque([module])
    while todo:
        current = todo.popleft()
        targets = [i.target for i in package.imports[current] if not i.type_checking]
        for target in list(targets):
            parent = target
            while "." in parent and parent.rsplit(".", 1)[0] != package.name:
                parent = parent.rsplit(".", 1)[0]
                targets.append(parent)
        for target in targets:
            if target in package.paths and target not in chains:
                chains[target] = [*chains[current], target]
                todo.append(target)
    return chains


def sdk_violations(package: Package, layers: dict[str, Layer]) -> dict[str, str]:
    """``"module loads opentelemetry.sdk"`` for every core module whose load reaches an SDK,
    exporter or gRPC import, with the chain that does."""
    found: dict[str, str] = {}
    for module, rel in package.paths.items():
        if layer_of(rel, layers) != "core":
            continue
        for loaded, chain in loads_at_import(package, module).items():
            for imp in package.imports[loaded]:
                if imp.type_checking:
                    continue
                for prefix in SDK_PREFIXES:
                    if imp.target == prefix or imp.target.startswith(prefix + "."):
                        found.setdefault(f"{module} loads {prefix}",
                                         " -> ".join([*chain, imp.target]))
    return found


def compare(found: dict[str, str], known: frozenset[str]) -> list[str]:
    problems = [f"new: {key} ({why})" for key, why in sorted(found.items()) if key not in known]
    problems += [f"fixed, remove it from KNOWN_VIOLATIONS: {key}"
                 for key in sorted(known - set(found))]
    return problems


# ------------------------------------------------------------------------------ tests
DOC_TEXT = DOC.read_text(encoding="utf-8")
LAYERS = read_layers(DOC_TEXT)
MODULE_TABLE = read_module_table(DOC_TEXT)
PACKAGE_UNDER_TEST = Package(ROOT / PACKAGE, PACKAGE)


def test_layer_table_is_a_stack() -> None:
    assert {"core", "telemetry", "receiver", "instrument", "adapters", "runtime", "compat",
            "app"} <= set(LAYERS)
    assert LAYERS["core"].may_import == frozenset()
    assert LAYERS["core"].holds == (ROOT_MODULES,)
    for layer in LAYERS.values():
        assert layer.may_import <= set(LAYERS), f"{layer.name} names an unknown layer"
        assert layer.holds, f"{layer.name} holds nothing"
    # No cycles: repeatedly peel off the layers whose allowed imports are all peeled.
    remaining = dict(LAYERS)
    while remaining:
        peel = [n for n, layer in remaining.items() if not layer.may_import & set(remaining)]
        assert peel, f"the layer table has a cycle among {sorted(remaining)}"
        for name in peel:
            del remaining[name]


def test_telemetry_is_not_below_the_agent_facing_layers() -> None:
    """The SDK line: layers an agent imports may not import telemetry/ at load time."""
    for name in ("core", "instrument", "adapters", "runtime", "compat"):
        assert "telemetry" not in LAYERS[name].may_import, name
        assert "receiver" not in LAYERS[name].may_import, name


def test_every_module_is_in_the_module_table() -> None:
    missing = sorted(set(PACKAGE_UNDER_TEST.paths.values()) - set(MODULE_TABLE))
    rows = [f"| `{rel}` | {layer_of(rel, LAYERS)} | … |" for rel in missing]
    assert not missing, f"add to the module table of {DOC.name}:\n" + "\n".join(rows)


def test_module_table_names_existing_modules_in_their_layers() -> None:
    known = set(PACKAGE_UNDER_TEST.paths.values())
    assert sorted(set(MODULE_TABLE) - known) == [], f"{DOC.name} lists modules that do not exist"
    wrong = {rel: (layer, layer_of(rel, LAYERS)) for rel, layer in MODULE_TABLE.items()
             if rel in known and layer != layer_of(rel, LAYERS)}
    assert wrong == {}, "module table layer differs from the layer table (page, paths)"


def test_imports_follow_the_layers() -> None:
    found = layer_violations(PACKAGE_UNDER_TEST, LAYERS)
    known = frozenset(k for k in KNOWN_VIOLATIONS if " -> " in k)
    assert compare(found, known) == []


def test_core_does_not_load_the_sdk() -> None:
    found = sdk_violations(PACKAGE_UNDER_TEST, LAYERS)
    known = frozenset(k for k in KNOWN_VIOLATIONS if " loads " in k)
    assert compare(found, known) == []


def test_known_violations_are_written_as_reported() -> None:
    for key in KNOWN_VIOLATIONS:
        assert re.fullmatch(r"[\w.]+ (-> [\w.]+|loads (" + "|".join(
            re.escape(p) for p in SDK_PREFIXES) + "))", key), key


# ------------------------------------------------------ the checker on a made-up package
@pytest.fixture
def made_up(tmp_path: Path) -> Package:
    """A package laid out like ours, with one of each kind of import."""
    files = {
        "__init__.py": "from .bus import Bus\n",
        "bus.py": (
            "from __future__ import annotations\n"
            "from typing import TYPE_CHECKING\n"
            "import grpc\n"
            "if TYPE_CHECKING:\n"
            "    from opentelemetry.sdk.trace import Span\n"
            "    from .runtime.engine import Engine\n"
            "else:\n"
            "    Engine = None\n"
            "class Bus:\n"
            "    def configure(self) -> None:\n"
            "        from .telemetry import mirror\n"
        ),
        "redaction.py": "try:\n    from .telemetry.content import KEYS\nexcept ImportError:\n"
                        "    KEYS = ()\n",
        "telemetry/__init__.py": "from . import mirror\n",
        "telemetry/mirror.py": "from opentelemetry.sdk.trace import ReadableSpan\n"
                               "from ..bus import Bus\n",
        "telemetry/content.py": "KEYS = ('api_key',)\n",
        "runtime/__init__.py": "",
        "runtime/engine.py": "from .. import bus\nfrom ..instrument import scopes\n",
        "instrument/__init__.py": "",
        "instrument/scopes.py": "from ..runtime.engine import Engine\n",
        "cli.py": "import made_up.telemetry.mirror\nfrom made_up.runtime import engine\n",
    }
    for rel, text in files.items():
        path = tmp_path / "made_up" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return Package(tmp_path / "made_up", "made_up")


def test_checker_finds_upward_imports_and_skips_function_level_ones(made_up: Package) -> None:
    found = layer_violations(made_up, LAYERS)
    assert found == {
        "made_up.bus -> made_up.runtime.engine": "core may not import runtime (under "
                                                 "TYPE_CHECKING)",
        "made_up.redaction -> made_up.telemetry.content": "core may not import telemetry "
                                                          "(at module level)",
        "made_up.instrument.scopes -> made_up.runtime.engine": "instrument may not import "
                                                               "runtime (at module level)",
    }


def test_checker_follows_loads_through_packages_for_the_sdk(made_up: Package) -> None:
    found = sdk_violations(made_up, LAYERS)
    assert found == {
        "made_up.bus loads grpc": "made_up.bus -> grpc",
        "made_up.redaction loads opentelemetry.sdk": (
            "made_up.redaction -> made_up.telemetry -> made_up.telemetry.mirror -> "
            "opentelemetry.sdk.trace"),
        "made_up.redaction loads grpc": (
            "made_up.redaction -> made_up.telemetry -> made_up.telemetry.mirror -> made_up.bus "
            "-> grpc"),
        "made_up loads grpc": "made_up -> made_up.bus -> grpc",
    }


def test_checker_reports_new_and_fixed_entries() -> None:
    found = {"a -> b": "core may not import app (at module level)"}
    assert compare(found, frozenset({"c -> d"})) == [
        "new: a -> b (core may not import app (at module level))",
        "fixed, remove it from KNOWN_VIOLATIONS: c -> d",
    ]
    assert compare(found, frozenset(found)) == []


def test_layers_by_path_prefix() -> None:
    assert layer_of("payload.py", LAYERS) == "core"
    assert layer_of("runs.py", LAYERS) == "core"
    assert layer_of("instrument/scopes.py", LAYERS) == "instrument"
    assert layer_of("telemetry/export.py", LAYERS) == "telemetry"
    assert layer_of("compat/hive/bus.py", LAYERS) == "compat"
    assert layer_of("demo/runner.py", LAYERS) == "app"
    with pytest.raises(AssertionError, match=r"newfolder/x\.py: no layer"):
        layer_of("newfolder/x.py", LAYERS)
