"""The one JSON-data/redaction walker (otel_agentbus.payload) and every user of it."""

from __future__ import annotations

import ast
import enum
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import otel_agentbus
from otel_agentbus import Event, EventValidationError
from otel_agentbus.events import MAX_NESTING, freeze_json
from otel_agentbus.instrument import _Arguments, json_data
from otel_agentbus.payload import (
    MAX_DEPTH,
    REDACTED,
    SECRET_KEYS,
    TOO_DEEP,
    Leaves,
    is_secret_key,
    walker,
)
from otel_agentbus.redaction import redact_secrets
from otel_agentbus.runs import json_safe
from otel_agentbus.telemetry import content
from otel_agentbus.telemetry.content import CaptureMode, ContentPolicy

PACKAGE = Path(otel_agentbus.__file__).parent


class Colour(enum.StrEnum):
    RED = "red"


class Thing:
    def __repr__(self) -> str:
        return "<thing>"


class Record(Mapping[str, Any]):
    """A Mapping that is no dict: walked like one."""

    def __init__(self, **items: Any) -> None:
        self._items = items

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def nested(levels: int, leaf: Any = 1) -> dict[str, Any]:
    """Dicts ``levels`` deep: the outermost is at depth 0, the innermost at levels - 1."""
    value: dict[str, Any] = {"leaf": leaf}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def innermost(value: Any) -> Any:
    while isinstance(value, Mapping) and "a" in value:
        value = value["a"]
    return value


def cycle() -> dict[str, Any]:
    value: dict[str, Any] = {"name": "loop", "items": []}
    value["items"].append(value)
    value["self"] = value
    return value


# ---------------------------------------------------------------- the secret-key rule
@pytest.mark.parametrize("key", ["api_key", "API_KEY", "Authorization", "password",
                                 "github_token", "client_secret", "db_password",
                                 "x-hub-signature-256", "Set-Cookie"])
def test_secret_keys_are_recognised_in_any_case(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["query", "tokens", "token_count", "author", "secretary"])
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)


def test_telemetry_uses_the_core_secret_key_rule() -> None:
    assert content.SECRET_KEYS is SECRET_KEYS
    assert content.is_secret_key is is_secret_key
    assert content.REDACTED == REDACTED


@pytest.mark.parametrize("module", ["payload.py", "redaction.py"])
def test_core_redaction_imports_nothing_of_telemetry_or_opentelemetry(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported = [node.module or "" for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names]
    assert imported, "the module imports something, so the check looks at real imports"
    assert not [name for name in imported if "telemetry" in name or "opentelemetry" in name]


# ---------------------------------------------------------------- the walker itself
def test_reject_freezes_json_and_names_where_a_bad_leaf_is() -> None:
    walk = walker(Leaves.REJECT, freeze=True)
    frozen = walk({"a": [1, {"b": 2.5}], "c": (True, None)})
    assert isinstance(frozen, MappingProxyType)
    assert frozen["a"] == (1, MappingProxyType({"b": 2.5}))
    assert frozen["c"] == (True, None)
    with pytest.raises(ValueError, match=r"^payload\.a\[1\]\.b: a Thing is not JSON data"):
        walk({"a": [1, {"b": Thing()}]})
    with pytest.raises(ValueError, match=r"payload\.x: nan is not a finite number"):
        walk({"x": math.nan})
    with pytest.raises(ValueError, match=r"key 3 is a int; JSON keys are strings"):
        walk({3: "x"})


def test_reject_raises_the_error_class_it_is_given() -> None:
    class Refused(ValueError):
        pass

    with pytest.raises(Refused):
        walker(Leaves.REJECT, error=Refused)([Thing()])


def test_convert_makes_keys_str_and_other_leaves_their_repr() -> None:
    walk = walker(Leaves.CONVERT)
    assert walk({1: (Thing(), math.inf), "c": Colour.RED, "r": Record(x=1)}) == {
        "1": ["<thing>", "inf"], "c": "red", "r": {"x": 1}}
    assert type(walk(Colour.RED)) is str


def test_keep_leaves_other_values_as_they_are() -> None:
    thing = Thing()
    out = walker(Leaves.KEEP)({"t": thing, "n": math.nan, "l": (1, 2)})
    assert out["t"] is thing
    assert math.isnan(out["n"])
    assert out["l"] == [1, 2]


def test_redaction_replaces_secret_values_at_any_depth_and_never_changes_the_input() -> None:
    data = {"user": "ann", "api_key": "k-1",
            "calls": [{"headers": {"Authorization": "Bearer x"}, "db_password": "pw"}]}
    before = json.dumps(data)
    out = walker(Leaves.KEEP, redact=True)(data)
    assert out == {"user": "ann", "api_key": REDACTED,
                   "calls": [{"headers": {"Authorization": REDACTED},
                              "db_password": REDACTED}]}
    assert json.dumps(data) == before
    # Without ``redact`` the walker keeps secrets (events are delivered as built).
    assert walker(Leaves.KEEP)(data)["api_key"] == "k-1"


@pytest.mark.parametrize("leaves", list(Leaves))
def test_depth_limit_is_max_depth_for_every_leaf_rule(leaves: Leaves) -> None:
    walk = walker(leaves)
    assert innermost(walk(nested(MAX_DEPTH))) == {"leaf": 1}
    if leaves is Leaves.REJECT:
        with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH} levels"):
            walk(nested(MAX_DEPTH + 1))
        return
    deepest = innermost(walk(nested(MAX_DEPTH + 1)))
    assert deepest == (repr({"leaf": 1}) if leaves is Leaves.CONVERT else TOO_DEEP)


def test_too_deep_can_be_chosen() -> None:
    walk = walker(Leaves.KEEP, too_deep=lambda value, where: f"cut at {where}")
    assert innermost(walk(nested(MAX_DEPTH + 1))) == "cut at payload"


@pytest.mark.parametrize("leaves", list(Leaves))
def test_a_cycle_ends_where_it_recurs(leaves: Leaves) -> None:
    """A value that refers to itself twice: walking every path down to the depth limit
    would take 2**64 steps (the test times out if the walker did)."""
    walk = walker(leaves, redact=True)
    if leaves is Leaves.REJECT:
        with pytest.raises(ValueError, match="is there a cycle"):
            walk(cycle())
        return
    out = walk(cycle())
    json.dumps(out)  # a finite tree of plain data
    assert out["name"] == "loop"
    marker = repr(cycle()) if leaves is Leaves.CONVERT else TOO_DEEP
    assert out["self"] == marker
    assert out["items"] == [marker]


def test_entry_rule_can_drop_entries_change_them_and_stop_below_them() -> None:
    def rule(key: str, item: Any) -> tuple[Any, bool] | None:
        if key == "drop":
            return None
        if key == "text":
            return (item.upper(), True) if isinstance(item, str) else (item, False)
        return item, True

    walk = walker(Leaves.KEEP, redact=True, entry_rule=rule)
    data = {"drop": 1, "text": "hi", "inner": [{"drop": 2, "token": "t", "k": 3}],
            "below": {"text": {"drop": 4, "api_key": "k"}}}
    assert walk(data) == {"text": "HI", "inner": [{"token": REDACTED, "k": 3}],
                          "below": {"text": {"drop": 4, "api_key": REDACTED}}}


def test_a_value_shared_without_a_cycle_is_walked_wherever_it_occurs() -> None:
    shared = {"x": 1}
    assert walker(Leaves.KEEP)({"a": shared, "b": [shared, shared]}) == {
        "a": {"x": 1}, "b": [{"x": 1}, {"x": 1}]}


# ------------------------------------------------------- every former walker uses it
USERS: dict[str, Callable[[Any], Any]] = {
    "Event payload": lambda value: Event("custom.x", value).payload,
    "freeze_json": freeze_json,
    "json_data": json_data,
    "redact_secrets": redact_secrets,
    "json_safe": json_safe,
    "exported attribute": lambda value: json.loads(
        str(ContentPolicy(max_length=1_000_000).value(value))),
}


@pytest.mark.parametrize("user", list(USERS))
def test_every_user_walks_max_depth_levels_and_stops_at_the_one_limit(user: str) -> None:
    convert = USERS[user]
    assert MAX_NESTING == MAX_DEPTH
    assert innermost(convert(nested(MAX_DEPTH, "end"))) == {"leaf": "end"}
    if user in ("Event payload", "freeze_json"):
        with pytest.raises(EventValidationError, match=f"deeper than {MAX_DEPTH} levels"):
            convert(nested(MAX_DEPTH + 1))
        return
    deepest = innermost(convert(nested(MAX_DEPTH + 1, "end")))
    assert deepest in (TOO_DEEP, repr({"leaf": "end"}))


@pytest.mark.parametrize("user", ["json_data", "redact_secrets", "json_safe",
                                  "exported attribute"])
def test_every_redacting_user_redacts_secret_keys_at_any_depth(user: str) -> None:
    out = USERS[user]({"q": "x", "auth": {"api_key": "k", "list": [{"refresh_token": "r"}]}})
    assert out == {"q": "x", "auth": {"api_key": REDACTED,
                                      "list": [{"refresh_token": REDACTED}]}}


def test_exported_content_keys_follow_the_capture_switch_inside_ordinary_data() -> None:
    data = {"step": 1, "details": {"prompt": "hi", "password": "p"}, "meta": {"input": "x"}}
    off = json.loads(str(ContentPolicy().value(data)))
    assert off == {"step": 1, "meta": {}}
    on = ContentPolicy(capture=CaptureMode.SPAN_ONLY,
                       redact=lambda key, value: None if key == "input" else value)
    assert json.loads(str(on.value(data))) == {
        "step": 1, "details": {"prompt": "hi", "password": REDACTED}, "meta": {}}


def test_exporting_a_cycle_does_not_fail() -> None:
    text = str(ContentPolicy(max_length=1_000_000).value(cycle()))
    assert TOO_DEEP in text


def test_tool_arguments_are_converted_and_redacted_through_the_walker() -> None:
    def call(query: str, api_key: str, options: Any = None) -> None:
        return None

    out = _Arguments(call)(("q", "secret"), {"options": {"session_token": "t", "x": Thing()}})
    assert out == {"query": "q", "api_key": REDACTED,
                   "options": {"session_token": REDACTED, "x": "<thing>"}}


FORMER_WALKERS = ["events.py", "redaction.py", "runs.py", "wire.py", "telemetry/content.py",
                  *(f"instrument/{path.name}" for path in (PACKAGE / "instrument").glob("*.py"))]


@pytest.mark.parametrize("module", FORMER_WALKERS)
def test_former_walkers_carry_no_recursion_of_their_own(module: str) -> None:
    """They each had a recursive walker with a depth limit; now they use payload.py's."""
    source = (PACKAGE / module).read_text()
    assert "MAX_DEPTH = " not in source and "MAX_DEPTH: Final = 6" not in source
    assert not re.findall(r"def (\w+)\([^)]*\bdepth\b", source)
