"""The webhook listener under hostile connections, over raw sockets on loopback: a burst of
clients hanging up mid-request while signed requests keep being served, a connection cap
that refuses fast while open clients stay served, and a head timeout that data trickled
byte by byte does not extend.

The runtime runs on an event loop in its own thread, as a server would; the clients are
plain blocking sockets. Figures (printed with ``-s``) are in docs/webhooks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import statistics
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from otel_agentbus.runtime.agent_runtime import AgentRuntime, AgentRuntimeConfig
from otel_agentbus.runtime.entry_points import EntryPoint
from otel_agentbus.runtime.execution import ExecutionContext
from otel_agentbus.runtime.webhook_signatures import generate_secret, standard_headers

pytestmark = pytest.mark.timeout(240)

SECRET = generate_secret()
WAIT = 20.0
T = TypeVar("T")


class Served:
    """An AgentRuntime with one Standard Webhooks route, on a loop in its own thread."""

    def __init__(self, config: AgentRuntimeConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def agent(ctx: ExecutionContext, input: Any) -> Any:
            return {"ok": True}

        self.runtime = AgentRuntime(agent=agent, config=config)
        self.runtime.register_entry_point(EntryPoint(
            "hook", trigger_type="webhook", max_concurrent=50, max_queued=10_000,
            trigger_config={"path": "/hooks/signed", "secret": SECRET}))
        self.call(self.runtime.start())
        assert self.runtime.webhook_port is not None
        self.port = self.runtime.webhook_port

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stats(self) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            return dict(self.runtime.get_stats())
        return self.call(read())

    def wait_for(self, predicate: Any, timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats) or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    def close(self) -> None:
        self.call(self.runtime.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def make_served() -> Iterator[Any]:
    made: list[Served] = []

    def make(**config: Any) -> Served:
        served = Served(AgentRuntimeConfig(**config))
        made.append(served)
        return served
    yield make
    for served in made:
        served.close()


def signed_request(n: int) -> bytes:
    body = json.dumps({"n": n}).encode()
    headers = standard_headers(SECRET, body)
    head = (f"POST /hooks/signed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
    return head.encode() + body


def exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int | None:
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


def send_signed(port: int, n: int) -> tuple[int | None, float]:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        answer = exchange(sock, signed_request(n))
    return status_of(answer), time.perf_counter() - started


# ------------------------------------------------------------------ disconnect burst
BURST = 1000
HALF_HEAD = b"POST /hooks/signed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"
HALF_BODY = (b"POST /hooks/signed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 500\r\n"
             b"webhook-id: msg_x\r\n\r\n" + b"{" * 100)


def test_a_burst_of_hang_ups_is_counted_quietly_while_signed_requests_are_served(
    make_served: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG, logger="otel_agentbus.runtime.webhooks")
    served = make_served(webhook_max_connections=BURST * 2, webhook_read_timeout=30.0)
    assert send_signed(served.port, -1)[0] == 202  # warm

    done = threading.Event()
    latencies: list[float] = []
    statuses: list[int | None] = []

    def legitimate() -> None:
        n = 0
        while not done.is_set() or n < 20:
            status, seconds = send_signed(served.port, n)
            statuses.append(status)
            latencies.append(seconds)
            n += 1

    client = threading.Thread(target=legitimate)
    client.start()
    started = time.perf_counter()
    hanging = []
    for i in range(BURST):  # every client sends part of a request...
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=WAIT)
        sock.sendall(HALF_HEAD if i % 2 else HALF_BODY)
        hanging.append(sock)
    for sock in hanging:  # ...then they all hang up at once
        sock.close()
    burst_seconds = time.perf_counter() - started
    done.set()
    client.join(WAIT * 3)
    assert not client.is_alive()

    stats = served.wait_for(lambda s: s["webhook"]["disconnects"] >= BURST)
    drained_seconds = time.perf_counter() - started
    time.sleep(0.3)  # anything counted twice would show now
    stats = served.stats()
    webhook = stats["webhook"]
    with capfd.disabled():
        print(f"\nburst of {BURST} hang-ups in {burst_seconds:.2f}s; {len(latencies)} signed "
              f"requests meanwhile: median {statistics.median(latencies) * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms; all counted after {drained_seconds:.2f}s")
    assert statuses and set(statuses) == {202}, statuses
    assert webhook["accepted"] == len(statuses) + 1
    assert stats["totals"]["triggered"] == len(statuses) + 1
    assert webhook["disconnects"] == BURST  # each hang-up counted once
    assert max(latencies) < 5.0, max(latencies)  # served, not stalled behind the burst
    lines = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(lines) == BURST and {r.levelno for r in lines} == {logging.DEBUG}
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud[:5]]
    assert "Traceback" not in capfd.readouterr().err


# ------------------------------------------------------------------ connection cap
def test_past_the_connection_cap_new_clients_get_503_at_once_and_open_ones_are_served(
    make_served: Any,
) -> None:
    cap = 8
    served = make_served(webhook_max_connections=cap, webhook_read_timeout=4.0)
    idle = [socket.create_connection(("127.0.0.1", served.port), timeout=WAIT)
            for _ in range(cap)]
    try:
        stats = served.wait_for(lambda s: s["webhook"]["connections"]["open"] == cap)
        assert stats["webhook"]["connections"]["open"] == cap
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", served.port), timeout=WAIT) as extra:
            answer = extra.recv(65536)  # answered before sending anything
        refused_in = time.perf_counter() - started
        assert status_of(answer) == 503 and b"retry-after: 1" in answer.lower()
        assert refused_in < 2.0, refused_in
        # A client holding one of the open connections is still served.
        assert status_of(exchange(idle[0], signed_request(1))) == 202
        # The rest never sent a request: closed without an answer at the head timeout.
        for sock in idle[1:]:
            assert sock.recv(65536) == b""
    finally:
        for sock in idle:
            sock.close()
    stats = served.wait_for(lambda s: s["webhook"]["connections"]["open"] == 0)
    connections = stats["webhook"]["connections"]
    assert connections == {"open": 0, "refused": 1, "header_timeouts": cap - 1}
    assert send_signed(served.port, 2)[0] == 202  # room again
    assert stats["webhook"]["by_status"] == {202: 1, 503: 1}


def test_a_head_trickled_byte_by_byte_is_cut_off_at_the_read_timeout(
    make_served: Any,
) -> None:
    served = make_served(webhook_read_timeout=1.0)
    request = signed_request(1)
    started = time.perf_counter()
    sent = 0
    with socket.create_connection(("127.0.0.1", served.port), timeout=WAIT) as sock:
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.05)
        except OSError:  # closed by the server under our feet
            pass
        rest = b""
        with contextlib.suppress(OSError):
            rest = sock.recv(65536)
    elapsed = time.perf_counter() - started
    assert rest == b"" and sent < len(request) // 2, (sent, rest)
    assert elapsed < 1.0 + 3.0, elapsed
    stats = served.wait_for(lambda s: s["webhook"]["connections"]["header_timeouts"] == 1)
    assert stats["webhook"]["connections"]["header_timeouts"] == 1
    assert stats["totals"]["triggered"] == 0
    assert send_signed(served.port, 2)[0] == 202
