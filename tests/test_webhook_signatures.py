"""Replay-safe webhook signatures (Standard Webhooks): the verifier and the replay memory on
their own, then over real HTTP on the runtime's listener; GitHub's body-only signature
still works where chosen. HTTP calls run in threads with socket timeouts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from async_helpers import WAIT

from otel_agentbus.runtime.agent_runtime import AgentRuntime
from otel_agentbus.runtime.entry_points import EntryPoint, EntryPointError
from otel_agentbus.runtime.execution import ExecutionContext
from otel_agentbus.runtime.webhook_signatures import (
    Refusal,
    ReplayGuard,
    Signed,
    generate_secret,
    secret_key,
    sign,
    sign_standard,
    standard_headers,
    verify_standard,
)

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = generate_secret()
BODY = b'{"ticket": 7}'
NOW = 1_750_000_000


def check(headers: dict[str, str], body: bytes = BODY, now: float = NOW,
          tolerance: float = 300) -> Signed | Refusal:
    return verify_standard(secret_key(SECRET), headers, body, now=now, tolerance=tolerance)


# ------------------------------------------------------------------ the verifier
def test_the_signature_is_hmac_sha256_of_id_timestamp_and_body() -> None:
    """Computed here from the spec's recipe, so a wrong recipe in the code fails."""
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg_1." + str(NOW).encode() + b"." + BODY, hashlib.sha256)
    assert sign_standard(SECRET, "msg_1", NOW, BODY) == "v1," + base64.b64encode(
        mac.digest()).decode()
    headers = standard_headers(SECRET, BODY, msg_id="msg_1", timestamp=NOW)
    assert check(headers) == Signed("msg_1", NOW)


@pytest.mark.parametrize("field", ["webhook-id", "webhook-timestamp", "body"])
def test_tampering_with_id_timestamp_or_body_is_refused(field: str) -> None:
    headers = standard_headers(SECRET, BODY, msg_id="msg_1", timestamp=NOW)
    body = BODY
    if field == "body":
        body = b'{"ticket": 8}'
    elif field == "webhook-id":
        headers[field] = "msg_2"
    else:
        headers[field] = str(NOW + 1)
    assert check(headers, body) is Refusal.BAD_SIGNATURE


@pytest.mark.parametrize("skew", [-301, 301, -10_000, 10**9])
def test_a_timestamp_outside_the_tolerance_is_refused(skew: int) -> None:
    headers = standard_headers(SECRET, BODY, msg_id="m", timestamp=NOW + skew)
    assert check(headers) is Refusal.STALE
    assert check(headers, tolerance=abs(skew) + 1) == Signed("m", NOW + skew)
    edge = standard_headers(SECRET, BODY, msg_id="m", timestamp=NOW - 300)
    assert check(edge) == Signed("m", NOW - 300)  # the window's edge is inside


def test_one_valid_signature_among_several_is_enough() -> None:
    good = sign_standard(SECRET, "m", NOW, BODY)
    other_key = sign_standard(OTHER, "m", NOW, BODY)
    headers = {"webhook-id": "m", "webhook-timestamp": str(NOW)}
    headers["webhook-signature"] = f"{other_key} v2,abc {good}"
    assert check(headers) == Signed("m", NOW)
    headers["webhook-signature"] = f"{other_key} v2,{good[3:]} v1,garbage"
    assert check(headers) is Refusal.BAD_SIGNATURE  # the right MAC under v2 is no v1


@pytest.mark.parametrize("headers, refusal", [
    ({}, Refusal.MISSING),
    ({"webhook-id": "m", "webhook-timestamp": str(NOW)}, Refusal.MISSING),
    ({"webhook-id": "m", "webhook-timestamp": "soon", "webhook-signature": "v1,x"},
     Refusal.MALFORMED),
    ({"webhook-id": "m", "webhook-timestamp": "-5", "webhook-signature": "v1,x"},
     Refusal.MALFORMED),
    ({"webhook-id": "m\n", "webhook-timestamp": str(NOW), "webhook-signature": "v1,x"},
     Refusal.MALFORMED),
    ({"webhook-id": "m", "webhook-timestamp": str(NOW), "webhook-signature": "v1,x"},
     Refusal.BAD_SIGNATURE),
])
def test_missing_or_malformed_headers(headers: dict[str, str], refusal: Refusal) -> None:
    assert check(headers) is refusal


@pytest.mark.parametrize("secret, problem", [
    ("plain-secret", "starts with 'whsec_'"), ("whsec_%%%", "not valid base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "at least 16 bytes")])
def test_a_bad_standard_secret_is_a_clear_error(secret: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        secret_key(secret)
    assert secret_key(generate_secret()) != secret_key(generate_secret())


# ------------------------------------------------------------------ the replay memory
class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def test_a_remembered_id_is_refused_until_its_timestamp_leaves_the_window() -> None:
    clock = Clock()
    guard = ReplayGuard(tolerance=300, clock=clock)
    assert guard.reserve(Signed("a", NOW)) is None
    assert guard.reserve(Signed("a", NOW)) is Refusal.REPLAY
    assert guard.reserve(Signed("a", NOW + 5)) is Refusal.REPLAY  # same id, new timestamp
    clock.now = NOW + 300
    assert guard.reserve(Signed("a", NOW)) is Refusal.REPLAY  # still inside the window
    clock.now = NOW + 301  # now the old timestamp itself would be refused as stale
    assert guard.reserve(Signed("b", NOW + 301)) is None
    assert len(guard) == 1  # "a" is forgotten


def test_a_full_memory_forgets_the_oldest_but_never_lets_its_replay_through() -> None:
    guard = ReplayGuard(tolerance=300, max_ids=3, clock=Clock())
    for i in range(3):
        assert guard.reserve(Signed(f"m{i}", NOW - 10 + i)) is None
    assert guard.reserve(Signed("m3", NOW)) is None
    assert len(guard) == 3 and guard.evicted == 1
    assert guard.reserve(Signed("m0", NOW - 10)) is Refusal.MEMORY_FULL  # its replay
    assert guard.reserve(Signed("x", NOW - 10)) is Refusal.MEMORY_FULL  # at the floor
    assert guard.reserve(Signed("m1", NOW - 9)) is Refusal.REPLAY
    assert guard.reserve(Signed("late", NOW + 1)) is None  # fresh timestamps still pass


def test_a_released_id_may_come_again() -> None:
    guard = ReplayGuard(clock=Clock())
    signed = Signed("a", NOW)
    assert guard.reserve(signed) is None
    guard.release(signed)
    assert guard.reserve(signed) is None
    assert guard.reserve(signed) is Refusal.REPLAY


# ------------------------------------------------------------------ over HTTP
Reply = tuple[int, dict[str, Any], dict[str, str]]


def _request(port: int, path: str, body: bytes, headers: dict[str, str]) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return (response.status, json.loads(data) if data else {},
                {k.lower(): v for k, v in response.getheaders()})
    finally:
        conn.close()


async def post(runtime: AgentRuntime, body: bytes, headers: dict[str, str],
               path: str = "/hooks/tickets") -> Reply:
    port = runtime.webhook_port
    assert port is not None
    return await asyncio.to_thread(_request, port, path, body,
                                   {"Content-Type": "application/json", **headers})


class Agent:
    def __init__(self) -> None:
        self.inputs: list[Any] = []

    async def __call__(self, ctx: ExecutionContext, input: Any) -> Any:
        self.inputs.append(input)
        return {"ok": True}


@pytest.fixture
def start(runtimes: list[AgentRuntime]) -> Callable[..., Any]:
    async def build(agent: Agent, **trigger_config: Any) -> AgentRuntime:
        runtime = AgentRuntime(agent=agent)
        runtime.register_entry_point(EntryPoint(
            "hook", trigger_type="webhook", max_concurrent=1, max_queued=0,
            trigger_config={"path": "/hooks/tickets", **trigger_config}))
        runtimes.append(runtime)
        await runtime.start()
        return runtime
    return build


def triggered(runtime: AgentRuntime) -> int:
    return int(runtime.get_stats()["totals"]["triggered"])


async def test_a_captured_request_sent_again_is_refused_even_with_a_new_idempotency_key(
    start: Callable[..., Any],
) -> None:
    agent = Agent()
    runtime = await start(agent, secret=SECRET)
    signed = standard_headers(SECRET, BODY)
    status, reply, _ = await post(runtime, BODY, {**signed, "Idempotency-Key": "k1"})
    assert status == 202 and reply["replayed"] is False
    await runtime.wait_for_execution(reply["execution_id"], WAIT)
    for key in ("k2", "k1", None):
        headers = {**signed, **({"Idempotency-Key": key} if key else {})}
        status, reply, _ = await post(runtime, BODY, headers)
        assert status == 409 and "replay" in reply["error"] and "execution_id" not in reply
    assert triggered(runtime) == 1 and len(agent.inputs) == 1
    stats = runtime.get_stats()["webhook"]
    assert stats["refused"] == {"replay": 3} and stats["by_status"] == {202: 1, 409: 3}
    # The id reaches the agent (it is no secret); the signature does not.
    assert agent.inputs[0]["headers"]["webhook-id"] == signed["webhook-id"]
    assert "webhook-signature" not in agent.inputs[0]["headers"]


async def test_refusals_over_http(start: Callable[..., Any]) -> None:
    agent = Agent()
    runtime = await start(agent, secret=SECRET)
    now = int(time.time())
    stale = standard_headers(SECRET, BODY, timestamp=now - 600)
    future = standard_headers(SECRET, BODY, timestamp=now + 600)
    tampered_id = {**standard_headers(SECRET, BODY), "webhook-id": "msg_other"}
    tampered_time = standard_headers(SECRET, BODY, timestamp=now)
    tampered_time["webhook-timestamp"] = str(now - 1)
    wrong_key = standard_headers(OTHER, BODY)
    github_only = {"X-Hub-Signature-256": sign(SECRET, BODY)}
    cases = [(stale, BODY), (future, BODY), (tampered_id, BODY), (tampered_time, BODY),
             (standard_headers(SECRET, BODY), b'{"ticket": 8}'), (wrong_key, BODY),
             (github_only, BODY), ({}, BODY)]
    for headers, body in cases:
        status, reply, _ = await post(runtime, body, headers)
        assert status == 401 and "execution_id" not in reply, (headers, reply)
    assert triggered(runtime) == 0 and agent.inputs == []
    assert runtime.get_stats()["webhook"]["refused"] == {"signature": 6, "stale": 2}
    # Several signatures, one of them valid (a sender rotating its secret): accepted.
    rotating = standard_headers(SECRET, BODY, timestamp=now)
    rotating["webhook-signature"] = " ".join([
        sign_standard(OTHER, rotating["webhook-id"], now, BODY),
        rotating["webhook-signature"]])
    status, reply, _ = await post(runtime, BODY, rotating)
    assert status == 202
    await runtime.wait_for_execution(reply["execution_id"], WAIT)
    assert triggered(runtime) == 1


async def test_the_tolerance_is_configurable(start: Callable[..., Any]) -> None:
    runtime = await start(Agent(), secret=SECRET, tolerance=3600)
    headers = standard_headers(SECRET, BODY, timestamp=int(time.time()) - 1800)
    status, reply, _ = await post(runtime, BODY, headers)
    assert status == 202
    await runtime.wait_for_execution(reply["execution_id"], WAIT)
    too_old = standard_headers(SECRET, BODY, timestamp=int(time.time()) - 3700)
    assert (await post(runtime, BODY, too_old))[0] == 401


async def test_a_request_refused_for_capacity_may_be_retried_with_its_id(
    start: Callable[..., Any],
) -> None:
    """A 429 (queue full) forgets the id: the sender's retry is not taken for a replay."""
    release = asyncio.Event()

    class Blocking(Agent):
        async def __call__(self, ctx: ExecutionContext, input: Any) -> Any:
            await asyncio.wait_for(release.wait(), WAIT)
            return await super().__call__(ctx, input)

    runtime = await start(Blocking(), secret=SECRET)
    first = await post(runtime, BODY, standard_headers(SECRET, BODY))
    assert first[0] == 202
    retry = standard_headers(SECRET, BODY)
    assert (await post(runtime, BODY, retry))[0] == 429
    release.set()
    await runtime.wait_for_execution(first[1]["execution_id"], WAIT)
    status, reply, _ = await post(runtime, BODY, retry)
    assert status == 202, reply
    await runtime.wait_for_execution(reply["execution_id"], WAIT)
    assert (await post(runtime, BODY, retry))[0] == 409


@pytest.mark.parametrize("trigger_config", [{"secret": "plain-secret"},
                                            {"secret": SECRET, "signature": "github"}])
async def test_github_mode_still_works_and_cannot_stop_a_replay(
    start: Callable[..., Any], trigger_config: dict[str, Any],
) -> None:
    agent = Agent()
    runtime = await start(agent, **trigger_config)
    secret = trigger_config["secret"]
    headers = {"X-Hub-Signature-256": sign(secret, BODY)}
    first = await post(runtime, BODY, {**headers, "Idempotency-Key": "a"})
    assert first[0] == 202
    await runtime.wait_for_execution(first[1]["execution_id"], WAIT)
    assert (await post(runtime, BODY, {"X-Hub-Signature-256": sign("x", BODY)}))[0] == 401
    # The documented weakness: the same request with a new key is a new run.
    second = await post(runtime, BODY, {**headers, "Idempotency-Key": "b"})
    assert second[0] == 202 and second[1]["execution_id"] != first[1]["execution_id"]
    await runtime.wait_for_execution(second[1]["execution_id"], WAIT)
    assert triggered(runtime) == 2
    # Standard Webhooks headers are not what this route checks.
    assert (await post(runtime, BODY, standard_headers(SECRET, BODY)))[0] == 401


def test_a_plain_secret_logs_that_it_cannot_stop_a_replay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    for config, warned in (({"secret": "plain"}, True),
                           ({"secret": "plain", "signature": "github"}, False),
                           ({"secret": SECRET}, False)):
        runtime = AgentRuntime(agent=Agent())
        runtime.register_entry_point(EntryPoint("hook", trigger_type="webhook",
                                                trigger_config=config))
        caplog.clear()
        with caplog.at_level("WARNING", logger="otel_agentbus.runtime.webhooks"):
            runtime.webhook_app()
        assert any("cannot stop a replay" in r.getMessage() for r in caplog.records) is warned


@pytest.mark.parametrize("config, problem", [
    ({"secret": "plain", "signature": "standard"}, "whsec_"),
    ({"secret": SECRET, "signature": "stripe"}, "signature must be one of"),
    ({"signature": "standard"}, "needs a secret"),
    ({"secret": SECRET, "tolerance": 0}, "tolerance must be"),
    ({"secret": SECRET, "tolerance": "5m"}, "tolerance must be"),
])
def test_bad_signature_config_is_a_clear_error(config: dict[str, Any], problem: str) -> None:
    runtime = AgentRuntime(agent=Agent())
    with pytest.raises(EntryPointError, match=problem):
        runtime.register_entry_point(EntryPoint("hook", trigger_type="webhook",
                                                trigger_config=config))
