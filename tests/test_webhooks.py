"""Webhook entry points over real HTTP on loopback: signatures, tokens, idempotency, size
limits, malformed bodies, header scrubbing, trace context, and answering before the run
ends. HTTP calls run in threads (``asyncio.to_thread``) with socket timeouts."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from async_helpers import WAIT, eventually
from telemetry_helpers import Harness, HarnessFactory, otlp_bytes, parent_id, trace_id

from otel_agentbus import EventBus
from otel_agentbus.runtime.agent_runtime import AgentRuntime, AgentRuntimeConfig
from otel_agentbus.runtime.entry_points import EntryPoint
from otel_agentbus.runtime.execution import ExecutionContext
from otel_agentbus.runtime.webhooks import is_sensitive_header, safe_headers, sign
from otel_agentbus.telemetry.content import CaptureMode, ContentPolicy

SECRET = "webhook-secret"
CANARY = "CANARY-7f3a9c"


Reply = tuple[int, dict[str, Any], dict[str, str]]


def _request(port: int, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return (response.status, json.loads(data) if data else {},
                {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


async def post(runtime: AgentRuntime, path: str, payload: Any = None, *,
               body: bytes | None = None, headers: dict[str, str] | None = None,
               method: str = "POST", secret: str | None = None) -> Reply:
    if body is None:
        body = json.dumps(payload).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if secret is not None:
        sent["X-Hub-Signature-256"] = sign(secret, body)
    port = runtime.webhook_port
    assert port is not None
    return await asyncio.to_thread(_request, port, method, path, body, sent)


def run_events(bus: EventBus) -> list[str]:
    return [e.kind for e in bus.history(limit=None) if e.kind.startswith("agent.run.")]


class Agent:
    """Records its inputs; optionally blocks until released."""

    def __init__(self, block: bool = False, echo_input: bool = False) -> None:
        self.inputs: list[Any] = []
        self.echo_input = echo_input
        self.release = asyncio.Event()
        if not block:
            self.release.set()

    async def __call__(self, ctx: ExecutionContext, input: Any) -> Any:
        self.inputs.append(input)
        if self.echo_input:  # what an agent logging its request would do
            ctx.publish("custom.request.seen", {"request": input})
        await asyncio.wait_for(self.release.wait(), WAIT)
        return {"got": input["payload"]}


@pytest.fixture
def start(runtimes: list[AgentRuntime]) -> Callable[..., Any]:
    async def build(agent: Agent, *, bus: EventBus | None = None,
                    config: AgentRuntimeConfig | None = None, **trigger_config: Any,
                    ) -> AgentRuntime:
        runtime = AgentRuntime(bus, agent=agent, config=config)
        runtime.register_entry_point(EntryPoint(
            "hook", trigger_type="webhook",
            trigger_config={"path": "/hooks/tickets", **trigger_config}))
        runtimes.append(runtime)
        await runtime.start()
        return runtime
    return build


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    factory = HarnessFactory()
    yield factory(content=ContentPolicy(capture=CaptureMode.SPAN_AND_EVENT))
    await factory.close()


# ------------------------------------------------------------------ signatures
async def test_valid_signature_gets_202_and_the_run_happens(start: Callable[..., Any]) -> None:
    agent = Agent()
    runtime = await start(agent, secret=SECRET)
    status, body, _ = await post(runtime, "/hooks/tickets?source=zendesk", {"ticket": 7},
                                 secret=SECRET, headers={"X-GitHub-Event": "issues"})
    assert status == 202 and body["replayed"] is False
    execution_id = body["execution_id"]
    result = await runtime.wait_for_execution(execution_id, WAIT)
    assert result is not None and result.success and result.output == {"got": {"ticket": 7}}
    seen = agent.inputs[0]
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/hooks/tickets",
                                                             {"source": "zendesk"})
    assert seen["headers"]["x-github-event"] == "issues"
    received = runtime.bus.history(kinds="agent.webhook.received")
    assert len(received) == 1 and received[0].payload["execution_id"] == execution_id
    assert received[0].scope.stream_id == "hook"
    assert runtime.bus.history(kinds="agent.run.started", run_id=execution_id)


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=abc", "garbage",
                                       "sha256=ünï"])
async def test_missing_or_invalid_signature_is_401_and_triggers_nothing(
    start: Callable[..., Any], signature: str | None,
) -> None:
    agent = Agent()
    runtime = await start(agent, secret=SECRET)
    headers = {} if signature is None else {"X-Hub-Signature-256": signature}
    status, body, _ = await post(runtime, "/hooks/tickets", {"ticket": 7}, headers=headers)
    assert status == 401 and "execution_id" not in body
    # A signature of another body is no good either.
    status, _, _ = await post(runtime, "/hooks/tickets", {"ticket": 8},
                              headers={"X-Hub-Signature-256": sign(SECRET, b'{"ticket": 7}')})
    assert status == 401
    await asyncio.sleep(0.05)
    assert run_events(runtime.bus) == []
    assert runtime.bus.history(kinds="agent.webhook.received") == []
    assert runtime.get_stats()["totals"]["triggered"] == 0 and agent.inputs == []


async def test_bearer_token(start: Callable[..., Any]) -> None:
    runtime = await start(Agent(), token="s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        status, _, reply_headers = await post(runtime, "/hooks/tickets", {}, headers=headers)
        assert status == 401 and reply_headers["www-authenticate"] == "Bearer"
    assert run_events(runtime.bus) == []
    status, body, _ = await post(runtime, "/hooks/tickets", {},
                                 headers={"Authorization": "Bearer s3cret-token"})
    assert status == 202
    assert await runtime.wait_for_execution(body["execution_id"], WAIT) is not None


# ------------------------------------------------------------------ idempotency
async def test_a_replayed_idempotency_key_gets_the_same_id_and_one_run(
    start: Callable[..., Any],
) -> None:
    agent = Agent()
    runtime = await start(agent, secret=SECRET)
    key = {"Idempotency-Key": "delivery-42"}
    first = await post(runtime, "/hooks/tickets", {"n": 1}, secret=SECRET, headers=key)
    again = await post(runtime, "/hooks/tickets", {"n": 1}, secret=SECRET, headers=key)
    assert first[0] == again[0] == 202
    assert first[1]["execution_id"] == again[1]["execution_id"]
    assert again[1]["replayed"] is True and again[2]["idempotent-replayed"] == "true"
    await runtime.wait_for_execution(first[1]["execution_id"], WAIT)
    third = await post(runtime, "/hooks/tickets", {"n": 1}, secret=SECRET, headers=key)
    assert third[1]["execution_id"] == first[1]["execution_id"]
    assert len(agent.inputs) == 1
    assert run_events(runtime.bus).count("agent.run.started") == 1
    received = runtime.bus.history(kinds="agent.webhook.received", limit=None)
    assert [e.payload["replayed"] for e in reversed(received)] == [False, True, True]


# ------------------------------------------------------------------ bad requests
def _raw(port: int, data: bytes) -> bytes:
    """Send ``data`` and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def test_an_oversized_body_is_413_from_the_headers_alone(
    start: Callable[..., Any],
) -> None:
    agent = Agent()
    runtime = await start(agent)
    port = runtime.webhook_port
    assert port is not None
    # Announce 1 MiB + 1 and send none of it: the server must answer without reading on.
    head = (b"POST /hooks/tickets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (1024 * 1024 + 1))
    answer = await asyncio.to_thread(_raw, port, head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    # Exactly at the limit is fine (a JSON string of 1 MiB).
    body = json.dumps("x" * (1024 * 1024 - 2)).encode()
    assert len(body) == 1024 * 1024
    status, reply, _ = await post(runtime, "/hooks/tickets", body=body)
    assert status == 202
    await runtime.wait_for_execution(reply["execution_id"], WAIT)
    assert len(agent.inputs) == 1


@pytest.mark.parametrize("body", [b"{not json", b"", b"   ", b'{"a": NaN}', b"\xff\xfe{",
                                  b"[" * 100_000])
async def test_malformed_json_is_400(start: Callable[..., Any], body: bytes) -> None:
    runtime = await start(Agent())
    status, reply, _ = await post(runtime, "/hooks/tickets", body=body)
    assert status == 400 and "error" in reply
    assert run_events(runtime.bus) == []


async def test_unknown_path_wrong_method_and_protocol_errors(
    start: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    runtime = await start(Agent())
    status, _, _ = await post(runtime, "/hooks/other", {})
    assert status == 404
    status, _, headers = await post(runtime, "/hooks/tickets", body=b"", method="GET")
    assert status == 405 and headers["allow"] == "POST"
    port = runtime.webhook_port
    assert port is not None
    no_length = await asyncio.to_thread(
        _raw, port, b"POST /hooks/tickets HTTP/1.1\r\nHost: x\r\n\r\n")
    assert no_length.startswith(b"HTTP/1.1 411 ")
    chunked = await asyncio.to_thread(
        _raw, port, b"POST /hooks/tickets HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked"
                    b"\r\n\r\n0\r\n\r\n")
    assert chunked.startswith(b"HTTP/1.1 411 ")
    # HTTP/1.1 without Host is a bad request (RFC 9112 section 3.2; h11 enforces it).
    no_host = await asyncio.to_thread(
        _raw, port, b"POST /hooks/tickets HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
    assert no_host.startswith(b"HTTP/1.1 400 ")
    garbage = await asyncio.to_thread(_raw, port, b"HELLO\r\n\r\n")
    assert garbage.startswith(b"HTTP/1.1 400 ")
    huge = await asyncio.to_thread(
        _raw, port, b"POST /hooks/tickets HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
    assert huge.startswith(b"HTTP/1.1 431 ")
    assert run_events(runtime.bus) == []
    assert runtime.get_stats()["webhook"]["by_status"] == {400: 2, 404: 1, 405: 1, 411: 2,
                                                           431: 1}
    # Bad requests are answered, not logged above debug (garbage must not flood the log).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_full_entry_point_answers_429(runtimes: list[AgentRuntime]) -> None:
    agent = Agent(block=True)
    runtime = AgentRuntime(agent=agent)
    runtime.register_entry_point(EntryPoint("hook", trigger_type="webhook", max_concurrent=1,
                                            max_queued=0))
    runtimes.append(runtime)
    await runtime.start()
    assert (await post(runtime, "/webhooks/hook", {}))[0] == 202
    status, _, headers = await post(runtime, "/webhooks/hook", {})
    assert status == 429 and headers["retry-after"] == "1"
    agent.release.set()


# ------------------------------------------------------------------ secrets
async def test_sensitive_headers_reach_no_event_and_no_span(
    start: Callable[..., Any], harness: Harness,
) -> None:
    agent = Agent(echo_input=True)
    runtime = await start(agent, bus=harness.bus)
    status, body, _ = await post(
        runtime, f"/hooks/tickets?api_token={CANARY}-q&page=2", {"ticket": 1},
        headers={"Authorization": f"Bearer {CANARY}-auth", "Cookie": f"session={CANARY}-c",
                 "X-Hub-Signature-256": f"sha256={CANARY}-sig", "X-Api-Key": f"{CANARY}-key",
                 "X-Auth-Token": f"{CANARY}-t", "X-Custom-Session": f"{CANARY}-s",
                 "X-Visible": "visible-marker-123"})
    assert status == 202
    result = await runtime.wait_for_execution(body["execution_id"], WAIT)
    assert result is not None and result.success
    harness.telemetry.force_flush(5)

    history = harness.bus.history(limit=None)
    assert {"agent.webhook.received", "agent.run.started", "custom.request.seen",
            "agent.run.completed"} <= {
        e.kind for e in history}
    for event in history:
        assert CANARY not in event.to_json(), event.kind
    assert CANARY not in json.dumps(agent.inputs) and CANARY not in repr(result)
    spans = harness.exporter.get_finished_spans()
    exported = otlp_bytes(spans)
    assert CANARY.encode() not in exported
    # The control: safe headers do get through, so the checks above can fail.
    assert agent.inputs[0]["headers"]["x-visible"] == "visible-marker-123"
    assert agent.inputs[0]["query"] == {"page": "2"}
    assert b"visible-marker-123" in exported
    assert any("visible-marker-123" in e.to_json() for e in history
               if e.kind == "agent.webhook.received")


async def test_a_signed_request_leaks_neither_signature_nor_secret(
    start: Callable[..., Any], harness: Harness,
) -> None:
    runtime = await start(Agent(), bus=harness.bus, secret=SECRET)
    payload = b'{"ticket": 2}'
    signature = sign(SECRET, payload)
    status, body, _ = await post(runtime, "/hooks/tickets", body=payload, secret=SECRET)
    assert status == 202
    await runtime.wait_for_execution(body["execution_id"], WAIT)
    harness.telemetry.force_flush(5)
    exported = otlp_bytes(harness.exporter.get_finished_spans())
    for needle in (signature.split("=", 1)[1], SECRET):
        assert needle.encode() not in exported
        assert all(needle not in e.to_json() for e in harness.bus.history(limit=None))
    assert SECRET not in repr(runtime.webhook_server.routes if runtime.webhook_server else ())


def test_header_classification() -> None:
    for name in ("Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie",
                 "X-Hub-Signature", "X-Hub-Signature-256", "X-Api-Key", "Api-Key",
                 "X-Auth-Token", "X-Shopify-Hmac-Sha256", "X-Gitlab-Token", "X-Client-Secret",
                 "X-Session-Id", "X-CSRF-Token", "access_token", "X-Private-Key"):
        assert is_sensitive_header(name), name
    for name in ("Content-Type", "User-Agent", "X-GitHub-Event", "X-GitHub-Delivery",
                 "Idempotency-Key", "traceparent", "X-Request-Id"):
        assert not is_sensitive_header(name, "plain"), name
    assert is_sensitive_header("X-Whatever", "Bearer abc")
    assert safe_headers({"Authorization": "x", "X-GitHub-Event": "push"}) == {
        "x-github-event": "push"}


# ------------------------------------------------------------------ trace, timing
async def test_traceparent_header_makes_the_run_join_the_callers_trace(
    start: Callable[..., Any], harness: Harness,
) -> None:
    runtime = await start(Agent(), bus=harness.bus)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    status, body, _ = await post(runtime, "/hooks/tickets", {"t": 1}, headers={
        "traceparent": f"00-{caller_trace}-{caller_span}-01"})
    assert status == 202
    await runtime.wait_for_execution(body["execution_id"], WAIT)
    run = harness.one("invoke_agent agent")
    assert format(trace_id(run), "032x") == caller_trace
    assert parent_id(run) == int(caller_span, 16)
    started = harness.bus.history(kinds="agent.run.started")[0]
    assert started.correlation.trace_id == caller_trace
    # A malformed traceparent is ignored: a new trace.
    status, body, _ = await post(runtime, "/hooks/tickets", {"t": 2},
                                 headers={"traceparent": "00-zz-yy-01"})
    await runtime.wait_for_execution(body["execution_id"], WAIT)
    second = harness.bus.history(kinds="agent.run.started")[0]
    assert second.correlation.trace_id not in (None, caller_trace)


async def test_the_server_answers_before_the_run_finishes(start: Callable[..., Any]) -> None:
    agent = Agent(block=True)
    runtime = await start(agent)
    status, body, _ = await post(runtime, "/hooks/tickets", {"slow": True})
    assert status == 202
    execution_id = body["execution_id"]
    await eventually(lambda: len(agent.inputs) == 1)
    assert execution_id in runtime.active_executions()
    assert runtime.bus.history(kinds="agent.run.completed") == []
    agent.release.set()
    result = await runtime.wait_for_execution(execution_id, WAIT)
    assert result is not None and result.success


async def test_stop_closes_the_server(start: Callable[..., Any]) -> None:
    agent = Agent(block=True)
    runtime = await start(agent)
    port = runtime.webhook_port
    assert port is not None
    status, body, _ = await post(runtime, "/hooks/tickets", {})
    assert status == 202
    await runtime.stop()
    with pytest.raises(OSError):
        await asyncio.to_thread(_request, port, "POST", "/hooks/tickets", b"{}", {})
    end = runtime.bus.history(run_id=body["execution_id"], limit=1)[0]
    assert end.kind == "agent.run.cancelled" and end.payload["reason"] == "runtime_stopped"
