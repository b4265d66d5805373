"""Content reshaped into the GenAI conventions' message schemas, and the chat span's
request and response attributes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from telemetry_helpers import HarnessFactory

from otel_agentbus import semconv as sc
from otel_agentbus.events import Event, Scope
from otel_agentbus.telemetry import messages
from otel_agentbus.telemetry.content import CaptureMode, ContentPolicy


def test_a_string_is_one_user_message() -> None:
    assert messages.input_messages("hi") == [
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]}]


def test_provider_messages_become_role_and_parts() -> None:
    history = [
        {"role": "system", "content": "be brief"},
        {"role": "human", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "rainy"},
        {"role": "user", "parts": [{"type": "text", "content": "thanks"}]},
    ]
    assert messages.input_messages(history) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "weather?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "name": "get_weather",
                                         "id": "c1", "arguments": {"city": "Paris"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "response": "rainy",
                                    "id": "c1"}]},
        {"role": "user", "parts": [{"type": "text", "content": "thanks"}]},
    ]


def test_output_messages_always_have_a_finish_reason() -> None:
    assert messages.output_messages("done", None) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "done"}],
         "finish_reason": "stop"}]
    only_calls = messages.output_messages(None, "tool_calls",
                                          [{"name": "search", "args": {"q": "x"}}])
    assert only_calls == [{"role": "assistant", "finish_reason": "tool_calls", "parts": [
        {"type": "tool_call", "name": "search", "arguments": {"q": "x"}}]}]


def test_instructions_and_tool_definitions() -> None:
    assert messages.system_instructions(["a", {"role": "system", "content": "b"}]) == [
        {"type": "text", "content": "a"}, {"type": "text", "content": "b"}]
    assert messages.tool_definitions([
        "plain",
        {"type": "function", "function": {"name": "f", "description": "d",
                                          "parameters": {"type": "object"}}},
        {"name": "g", "input_schema": {"type": "object"}},
    ]) == [
        {"type": "function", "name": "plain"},
        {"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}},
        {"type": "function", "name": "g", "parameters": {"type": "object"}},
    ]


def test_capture_off_shapes_nothing() -> None:
    calls: list[Any] = []

    def shape(value: Any) -> Any:
        calls.append(value)
        return value

    assert ContentPolicy().content_shaped("messages", "secret", shape) is None
    assert calls == []


def test_shaped_content_keeps_the_secret_key_rule() -> None:
    policy = ContentPolicy(capture=CaptureMode.SPAN_ONLY)
    shaped = policy.content_shaped(
        "tools", [{"name": "login", "parameters": {"api_key": "sk-live-123"}}],
        messages.tool_definitions)
    assert shaped is not None
    assert "sk-live-123" not in str(shaped[1])
    assert json.loads(str(shaped[1]))[0]["parameters"]["api_key"] == "[redacted]"


def _event(kind: str, payload: dict[str, Any]) -> Event:
    return Event(kind, payload, scope=Scope(run_id="r1", agent="a"))


@pytest.mark.parametrize("capture", [CaptureMode.SPAN_ONLY, CaptureMode.NO_CONTENT])
async def test_chat_span_request_and_response_attributes(
    make: HarnessFactory, capture: CaptureMode,
) -> None:
    h = make(content=ContentPolicy(capture=capture))
    for event in (
        _event("agent.run.started", {"provider": "anthropic"}),
        _event("agent.llm.request", {
            "call_id": "c1", "model": "claude", "provider": "anthropic", "temperature": 0,
            "max_tokens": 512, "top_p": 0.5, "top_k": 20, "frequency_penalty": 0.25,
            "presence_penalty": 1, "seed": 7, "stop": "END", "stream": False}),
        _event("agent.llm.response", {"call_id": "c1", "response_id": "msg_01",
                                      "input_tokens": 10, "output_tokens": 2,
                                      "cache_creation_input_tokens": 6}),
        _event("agent.llm.request", {"call_id": "c2", "model": "claude-2"}),
        _event("agent.llm.response", {"call_id": "c2", "input_tokens": 5,
                                      "output_tokens": 1, "cache_creation_input_tokens": 1}),
        _event("agent.run.completed", {}),
    ):
        await h.bus.publish(event)
    first = dict(h.one("chat claude").attributes or {})
    requested = {key: list(value) if isinstance(value, tuple | list) else value
                 for key, value in first.items() if key.startswith("gen_ai.request.")}
    assert requested == {
        sc.GEN_AI_REQUEST_MODEL: "claude", sc.GEN_AI_REQUEST_TEMPERATURE: 0.0,
        sc.GEN_AI_REQUEST_MAX_TOKENS: 512, sc.GEN_AI_REQUEST_TOP_P: 0.5,
        sc.GEN_AI_REQUEST_TOP_K: 20, sc.GEN_AI_REQUEST_FREQUENCY_PENALTY: 0.25,
        sc.GEN_AI_REQUEST_PRESENCE_PENALTY: 1.0, sc.GEN_AI_REQUEST_SEED: 7,
        sc.GEN_AI_REQUEST_STOP_SEQUENCES: ["END"], sc.GEN_AI_REQUEST_STREAM: False}
    assert first[sc.GEN_AI_RESPONSE_ID] == "msg_01"
    assert first[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 6
    assert sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in first  # nothing streamed
    # The run span: its usage summed, its provider from the start event, no single model.
    run = dict(h.one("invoke_agent a").attributes or {})
    assert run[sc.GEN_AI_USAGE_INPUT_TOKENS] == 15
    assert run[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert run[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 7
    assert run[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert sc.GEN_AI_REQUEST_MODEL not in run  # two models were used
