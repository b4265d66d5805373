"""The webhook app mounted into an existing Starlette application, served by Uvicorn over
real HTTP on loopback: the host's own routes keep working, webhook routes answer at the
mount point, signatures and replay refusal hold, and a stopped runtime answers 503."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from async_helpers import WAIT, wait_until
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from otel_agentbus.runtime.agent_runtime import AgentRuntime, AgentRuntimeConfig
from otel_agentbus.runtime.entry_points import EntryPoint
from otel_agentbus.runtime.execution import ExecutionContext
from otel_agentbus.runtime.webhook_signatures import generate_secret, standard_headers

SECRET = generate_secret()


class Agent:
    def __init__(self) -> None:
        self.inputs: list[Any] = []

    async def __call__(self, ctx: ExecutionContext, input: Any) -> Any:
        self.inputs.append(input)
        return {"ok": True}


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("host ok")


class Host:
    """A Starlette application of the user's, with the runtime's webhooks mounted in it."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.app = Starlette(routes=[
            Route("/health", health),
            Mount("/hooks", app=runtime.webhook_app()),
            Mount("/integrations", app=runtime.webhook_app()),
        ])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_config=None, lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        await wait_until(lambda: self.server.started)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.wait_for(self.task, WAIT)

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        def call() -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()
        return await asyncio.to_thread(call)


@pytest.fixture
async def served(runtimes: list[AgentRuntime]) -> AsyncIterator[tuple[AgentRuntime, Agent,
                                                                      Host]]:
    agent = Agent()
    runtime = AgentRuntime(agent=agent, config=AgentRuntimeConfig(webhook_listen=False))
    runtime.register_entry_point(EntryPoint(
        "tickets", trigger_type="webhook",
        trigger_config={"path": "/hooks/tickets", "secret": SECRET}))
    runtimes.append(runtime)
    host = Host(runtime)
    await runtime.start()
    await host.start()
    try:
        yield runtime, agent, host
    finally:
        await host.stop()


async def test_mounted_webhooks_trigger_runs_next_to_the_hosts_routes(
    served: tuple[AgentRuntime, Agent, Host],
) -> None:
    runtime, agent, host = served
    assert runtime.webhook_server is None and runtime.webhook_port is None  # no own port
    assert await host.request("GET", "/health") == (200, b"host ok")

    body = b'{"ticket": 1}'
    signed = standard_headers(SECRET, body)
    status, reply = await host.request("POST", "/hooks/tickets", body, signed)
    assert status == 202, reply
    execution_id = json.loads(reply)["execution_id"]
    result = await runtime.wait_for_execution(execution_id, WAIT)
    assert result is not None and result.success
    assert agent.inputs[0]["path"] == "/hooks/tickets"
    assert agent.inputs[0]["payload"] == {"ticket": 1}

    # The same signed request again: refused, not a second run.
    status, reply = await host.request("POST", "/hooks/tickets", body,
                                       {**signed, "Idempotency-Key": "new"})
    assert status == 409 and b"replay" in reply
    # Mounted elsewhere, the route answers below the mount point.
    other = standard_headers(SECRET, body)
    status, reply = await host.request("POST", "/integrations/hooks/tickets", body, other)
    assert status == 202, reply
    await runtime.wait_for_execution(json.loads(reply)["execution_id"], WAIT)
    # Unsigned, unknown path, wrong method: the app's own answers.
    assert (await host.request("POST", "/hooks/tickets", body))[0] == 401
    assert (await host.request("POST", "/hooks/nothing", body))[0] == 404
    assert (await host.request("GET", "/hooks/tickets"))[0] == 405
    assert len(agent.inputs) == 2
    stats = runtime.get_stats()["webhook"]
    assert stats["by_status"] == {202: 2, 401: 1, 404: 1, 405: 1, 409: 1}
    assert stats["refused"] == {"replay": 1, "signature": 1}


async def test_a_stopped_runtime_answers_503_while_the_host_keeps_serving(
    served: tuple[AgentRuntime, Agent, Host],
) -> None:
    runtime, agent, host = served
    await runtime.stop()
    body = b"{}"
    status, reply = await host.request("POST", "/hooks/tickets", body,
                                       standard_headers(SECRET, body))
    assert status == 503 and b"error" in reply
    assert await host.request("GET", "/health") == (200, b"host ok")
    assert agent.inputs == []
