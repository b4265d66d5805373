"""Conversation content in the shapes viewers read: the GenAI role/parts message schema.

Agents publish messages the way their provider SDK holds them (``{"role", "content"}``
dicts, OpenAI-style ``tool_calls``, a bare string). The GenAI conventions want
``[{"role", "parts": [{"type": "text", "content"}, ...]}]`` (output messages also carry a
``finish_reason``), system instructions as a list of parts and tool definitions as
``[{"type": "function", "name", ...}]``; viewers drop anything else. These functions only
reshape: what may be exported at all is ``ContentPolicy``'s decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

JsonObject = dict[str, Any]

_ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
_ROLE_ALIASES: Final = {"human": "user", "ai": "assistant", "model": "assistant",
                        "developer": "system", "function": "tool"}


def _text_part(text: Any) -> JsonObject:
    return {"type": "text", "content": text if isinstance(text, str) else _dumps(text)}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _role(value: Any, default: str) -> str:
    role = str(value or default).lower()
    return _ROLE_ALIASES.get(role, role) if role not in _ROLES else role


def _arguments(value: Any) -> Any:
    """Tool-call arguments as data: providers send them as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _tool_call_part(call: Mapping[str, Any]) -> JsonObject:
    function = call.get("function")
    source = function if isinstance(function, Mapping) else call
    part: JsonObject = {"type": "tool_call", "name": str(source.get("name") or "tool")}
    call_id = call.get("id") or call.get("tool_call_id") or call.get("call_id")
    if call_id is not None:
        part["id"] = str(call_id)
    arguments = source.get("arguments", source.get("args", call.get("input")))
    if arguments is not None:
        part["arguments"] = _arguments(arguments)
    return part


def _parts(content: Any) -> list[JsonObject]:
    """A message's content as parts: text, or a list of typed parts kept as they are."""
    if content is None:
        return []
    if isinstance(content, list | tuple):
        parts: list[JsonObject] = []
        for item in content:
            if isinstance(item, Mapping) and isinstance(item.get("type"), str):
                part = dict(item)
                if part["type"] == "text" and "content" not in part and "text" in part:
                    part["content"] = part.pop("text")
                parts.append(part)
            else:
                parts.append(_text_part(item))
        return parts
    return [_text_part(content)]


def _message(item: Any, default_role: str) -> JsonObject:
    if not isinstance(item, Mapping):
        return {"role": default_role, "parts": [_text_part(item)]}
    role = _role(item.get("role") or item.get("type"), default_role)
    if isinstance(item.get("parts"), list | tuple):
        parts = _parts(item["parts"])
    else:
        parts = _parts(item.get("content", item.get("text")))
    if role == "tool" and not any(p.get("type") == "tool_call_response" for p in parts):
        response: JsonObject = {"type": "tool_call_response",
                                "response": item.get("content", item.get("result"))}
        call_id = item.get("tool_call_id") or item.get("id")
        if call_id is not None:
            response["id"] = str(call_id)
        parts = [response]
    for call in item.get("tool_calls") or ():
        if isinstance(call, Mapping):
            parts.append(_tool_call_part(call))
    message: JsonObject = {"role": role, "parts": parts}
    if item.get("name") is not None:
        message["name"] = str(item["name"])
    if item.get("finish_reason") is not None:
        message["finish_reason"] = str(item["finish_reason"])
    return message


def input_messages(value: Any, default_role: str = "user") -> list[JsonObject]:
    """``gen_ai.input.messages``: a string or one message becomes a one-message list."""
    if isinstance(value, list | tuple):
        return [_message(item, default_role) for item in value]
    return [_message(value, default_role)]


def output_messages(value: Any, finish_reason: str | None,
                    tool_calls: Any = None) -> list[JsonObject]:
    """``gen_ai.output.messages``: every message gets the ``finish_reason`` the schema
    requires (the response's, else ``stop``); tool calls the response carries beside its
    text join the first message."""
    messages: list[JsonObject] = input_messages(value, "assistant") if value is not None else [
        {"role": "assistant", "parts": []}]
    if isinstance(tool_calls, list | tuple):
        parts: list[JsonObject] = messages[0]["parts"]
        parts.extend(_tool_call_part(call) for call in tool_calls if isinstance(call, Mapping))
    for message in messages:
        message.setdefault("finish_reason", finish_reason or "stop")
    return messages


def system_instructions(value: Any) -> list[JsonObject]:
    """``gen_ai.system_instructions``: a list of parts (system messages flattened)."""
    if isinstance(value, list | tuple):
        parts: list[JsonObject] = []
        for item in value:
            if isinstance(item, Mapping) and "role" in item:
                parts.extend(_parts(item.get("content", item.get("parts"))))
            else:
                parts.extend(_parts([item]))
        return parts
    return _parts(value)


def tool_definitions(value: Any) -> list[JsonObject]:
    """``gen_ai.tool.definitions``: ``{"type", "name", "description", "parameters"}`` each,
    from plain definitions, OpenAI's ``{"type": "function", "function": {...}}`` or names."""
    items = value if isinstance(value, list | tuple) else [value]
    definitions: list[JsonObject] = []
    for item in items:
        if not isinstance(item, Mapping):
            definitions.append({"type": "function", "name": str(item)})
            continue
        function = item.get("function")
        source = function if isinstance(function, Mapping) else item
        definition: JsonObject = {"type": str(item.get("type") or "function"),
                                  "name": str(source.get("name") or "tool")}
        for key in ("description", "parameters"):
            if source.get(key) is not None:
                definition[key] = source[key]
        schema = source.get("input_schema")  # Anthropic's spelling
        if schema is not None and "parameters" not in definition:
            definition["parameters"] = schema
        definitions.append(definition)
    return definitions


def message_text(message: Mapping[str, Any]) -> str:
    """A schema message's text parts joined; other parts as JSON (OpenInference's
    ``message.content`` is one string)."""
    texts = []
    for part in message.get("parts") or ():
        if part.get("type") == "text":
            texts.append(str(part.get("content", "")))
        else:
            texts.append(_dumps(part))
    return "\n".join(texts)
