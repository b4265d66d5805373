"""The webhook server fed hypothesis-generated garbage over real HTTP (raw sockets): broken
request lines and headers, wrong methods and paths, missing, lying or absurd
Content-Length, bodies that are not JSON or are over the limit, bad signatures, bad
tokens, and replays of signed requests.

Each request gets a clear 4xx (or 202 when it really was acceptable), never a 500; only a
202 triggers a run, and exactly one (a replayed ``Idempotency-Key`` gets the first
execution's id and triggers nothing); a signed route accepts only a correct signature of
the exact body; after each request a valid one is still accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from otel_agentbus.runtime.agent_runtime import AgentRuntime, AgentRuntimeConfig
from otel_agentbus.runtime.entry_points import EntryPoint
from otel_agentbus.runtime.execution import ExecutionContext
from otel_agentbus.runtime.webhooks import sign

pytestmark = pytest.mark.timeout(240)

SECRET = "webhook-secret-42"
TOKEN = "webhook-token-42"
MAX_BODY = 4096
READ_TIMEOUT = 0.5
ALLOWED = {202, 400, 401, 404, 405, 408, 411, 413, 429, 431}
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
T = TypeVar("T")


class Served:
    """An AgentRuntime with three webhook routes, on an event loop in its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def agent(ctx: ExecutionContext, input: Any) -> Any:
            return {"ok": True}

        self.runtime = AgentRuntime(agent=agent, config=AgentRuntimeConfig(
            webhook_max_body_bytes=MAX_BODY, webhook_read_timeout=READ_TIMEOUT))
        for name, extra in (("signed", {"secret": SECRET}), ("token", {"token": TOKEN}),
                            ("open", {})):
            self.runtime.register_entry_point(EntryPoint(
                name, trigger_type="webhook", max_concurrent=50, max_queued=1000,
                trigger_config={"path": f"/hooks/{name}", **extra}))
        self.call(self.runtime.start())
        assert self.runtime.webhook_port is not None
        self.port = self.runtime.webhook_port

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def triggered(self) -> int:
        async def read() -> int:
            return int(self.runtime.get_stats()["totals"]["triggered"])
        return self.call(read())

    def by_status(self) -> dict[int, int]:
        async def read() -> dict[int, int]:
            return dict(self.runtime.get_stats()["webhook"]["by_status"])
        return self.call(read())

    def close(self) -> None:
        self.call(self.runtime.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    server = Served()
    try:
        yield server
    finally:
        server.close()


def exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read the answer until the server closes (it answers a request
    whose head or body never completes after its read timeout, or just closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(OSError):  # answered (413/431) and closed before the end
            sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


def final_status(answer: bytes) -> tuple[int | None, dict[str, Any]]:
    codes = STATUS.findall(answer)
    codes = [c for c in codes if c != b"100"]
    if not codes:
        return None, {}
    body = answer.split(b"\r\n\r\n")[-1]
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {}
    return int(codes[-1]), parsed


def request(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
            ) -> bytes:
    """A raw HTTP/1.1 request; with Host, which HTTP/1.1 requires (without it: 400)."""
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
    head += b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
    return head + b"\r\n" + body


def valid(served: Served, n: int) -> None:
    body = json.dumps({"valid": n}).encode()
    answer = exchange(served.port, request(b"POST", b"/hooks/signed", [
        (b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(body)),
        (b"X-Hub-Signature-256", sign(SECRET, body).encode())], body))
    assert final_status(answer)[0] == 202, answer[:200]


HEADER_BYTES = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
BODIES = st.one_of(
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10
                 ).map(lambda doc: json.dumps(doc).encode()),
    st.binary(max_size=200),
    st.builds(lambda n: b'"' + b"x" * n + b'"', st.integers(MAX_BODY - 5, MAX_BODY + 50)),
    st.sampled_from([b"", b"{", b'{"a": NaN}', b"[" * 5000, b'"\\ud800"', b"\xff\xfe"]),
)


@st.composite
def garbage_requests(draw: st.DrawFn) -> tuple[bytes, str, str, str]:
    """A raw request; also which route, signature and token kind it carries."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300)), "raw", "none", "none"
    method = b"POST" if draw(st.integers(0, 5)) else draw(st.sampled_from(
        [b"GET", b"PUT", b"post", b"P\x00ST", b"", b"POST POST"]))
    route = draw(st.sampled_from(["signed", "token", "open"]) if draw(st.integers(0, 5))
                 else st.sampled_from(["", "hooks", "hooks/open/..", "x\x00"]))
    path = f"/hooks/{route}".encode() if route in ("signed", "token", "open") else (
        b"/" + route.encode())
    if draw(st.booleans()):
        path += b"?" + draw(HEADER_BYTES).replace(b" ", b"")
    body = draw(BODIES)
    names = st.sampled_from([b"Content-Type", b"Transfer-Encoding", b"Expect",
                             b"Idempotency-Key", b"traceparent", b"X-Request-Id",
                             b"Content-Length", b"Authorization", b"Host", b"X-Api-Key"])
    headers: list[tuple[bytes, bytes]] = draw(st.lists(st.tuples(
        names if draw(st.integers(0, 4)) else HEADER_BYTES, HEADER_BYTES), max_size=4))
    length = draw(st.sampled_from(["exact", "exact", "missing", "short", "long", "garbage",
                                   "huge"]))
    if length == "exact":
        headers.append((b"Content-Length", b"%d" % len(body)))
    elif length == "short":
        headers.append((b"Content-Length", b"%d" % max(0, len(body) - 1)))
    elif length == "long":
        headers.append((b"Content-Length", b"%d" % (len(body) + 5)))
    elif length == "garbage":
        headers.append((b"Content-Length", draw(HEADER_BYTES)))
    elif length == "huge":
        headers.append((b"Content-Length", b"9" * draw(st.integers(8, 40))))
    signature = draw(st.sampled_from(["none", "valid", "garbage", "other-body", "other-key"]))
    if signature == "valid":
        headers.append((b"X-Hub-Signature-256", sign(SECRET, body).encode()))
    elif signature == "garbage":
        headers.append((b"X-Hub-Signature-256", draw(HEADER_BYTES)))
    elif signature == "other-body":
        headers.append((b"X-Hub-Signature-256", sign(SECRET, body + b" ").encode()))
    elif signature == "other-key":
        headers.append((b"X-Hub-Signature-256", sign("not-the-secret", body).encode()))
    token = draw(st.sampled_from(["none", "valid", "wrong", "basic"]))
    if token != "none":
        headers.append((b"Authorization", {
            "valid": b"Bearer " + TOKEN.encode(), "wrong": b"Bearer nope",
            "basic": b"Basic " + TOKEN.encode()}[token]))
    return request(method, path, headers, body), route, signature, token


@SETTINGS
@given(case=garbage_requests(), n=st.integers(0, 10**9))
def test_webhook_garbage(served: Served, case: tuple[bytes, str, str, str], n: int) -> None:
    data, route, signature, token = case
    before = served.triggered()
    answer = exchange(served.port, data)
    status, body = final_status(answer)
    event(f"HTTP {status}")
    event(f"{route} HTTP {status}")
    if status is None:  # no complete request head: nothing to answer, connection closed
        assert b"\r\n\r\n" not in data or not data.split(b"\r\n", 1)[0], answer[:200]
    else:
        assert status in ALLOWED, (status, answer[:300])
    triggered = served.triggered() - before
    if status == 202:
        assert triggered == (0 if body.get("replayed") else 1)
        if route == "signed":
            assert signature == "valid"  # only a correct signature of the exact body
        if route == "token":
            assert token == "valid"
    else:
        assert triggered == 0
    valid(served, n)  # still serving


@SETTINGS
@given(signature=st.one_of(HEADER_BYTES, st.builds(lambda h: b"sha256=" + h, HEADER_BYTES),
                           st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
                           .map(lambda h: b"sha256=" + h.encode())),
       body=BODIES)
def test_bad_signatures_trigger_nothing(served: Served, signature: bytes, body: bytes) -> None:
    if signature.strip() == sign(SECRET, body).encode():
        return
    before = served.triggered()
    answer = exchange(served.port, request(b"POST", b"/hooks/signed", [
        (b"Content-Length", b"%d" % len(body)), (b"X-Hub-Signature-256", signature)], body))
    status, _ = final_status(answer)
    # A control character in a header value is not valid HTTP (RFC 9110 section 5.5): the
    # parser may answer 400 for it; a well-formed value must reach the signature check.
    malformed = any((b < 0x20 and b != 0x09) or b == 0x7F for b in signature)
    assert status in ((400, 401, 413) if malformed else (401, 413)), answer[:200]
    assert served.triggered() == before


@SETTINGS
@given(bodies=st.lists(st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
                       min_size=2, max_size=4),
       key=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                   max_size=40))
def test_replays_run_once(served: Served, bodies: list[dict[str, int]], key: str) -> None:
    """A signed request replayed (again and again, or with another body under the same
    Idempotency-Key) gets the first execution's id and triggers nothing."""
    key = f"{key}-{id(bodies)}-{served.triggered()}"  # fresh per example
    before = served.triggered()
    ids = []
    for payload in [bodies[0], *bodies]:
        raw = json.dumps(payload).encode()
        answer = exchange(served.port, request(b"POST", b"/hooks/signed", [
            (b"Content-Length", b"%d" % len(raw)), (b"Idempotency-Key", key.encode()),
            (b"X-Hub-Signature-256", sign(SECRET, raw).encode())], raw))
        status, reply = final_status(answer)
        assert status == 202, answer[:200]
        ids.append((reply["execution_id"], reply["replayed"]))
    assert {i for i, _ in ids} == {ids[0][0]}
    assert [r for _, r in ids] == [False] + [True] * len(bodies)
    assert served.triggered() == before + 1


def test_no_server_errors_at_all(served: Served) -> None:
    """Across everything above: not one 500."""
    assert 500 not in served.by_status()
