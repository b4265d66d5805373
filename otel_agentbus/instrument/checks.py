"""Checks of what the decorators and scopes are given, run when they are built (not at
the first call), each error naming the parameter and the value."""

from __future__ import annotations


def _check_tool(name: object, tool_type: object, description: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"tool name must be a non-empty str, got {name!r}")
    _check_str("tool_type", tool_type)
    _check_str("description", description)


def _check_str(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")



def _check_node(node_id: object, max_iterations: object) -> None:
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"node_id must be a non-empty str, got {node_id!r}")
    if max_iterations is not None and (type(max_iterations) is not int
                                       or max_iterations < 1):
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
