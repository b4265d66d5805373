"""Webhook signatures: the Standard Webhooks scheme (replay-safe) and GitHub's (body only).

Standard Webhooks (https://www.standardwebhooks.com) signs ``"{id}.{timestamp}.{body}"``
with HMAC-SHA256 under a ``whsec_<base64>`` secret and sends ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature: v1,<base64> [v1,<base64> ...]``. A
timestamp outside the tolerance window is refused, and :class:`ReplayGuard` remembers
the ids seen inside the window, so a captured request sent again is refused too.

GitHub's ``X-Hub-Signature-256: sha256=<hex>`` covers the body only: the same request
sent again carries a valid signature for ever, so it cannot stop a replay. It stays for
senders that only speak it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import math
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final, Literal

GITHUB_HEADER: Final = "x-hub-signature-256"
ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"
SECRET_PREFIX: Final = "whsec_"
DEFAULT_TOLERANCE: Final = 300.0
DEFAULT_MAX_REMEMBERED: Final = 100_000
MAX_ID_LENGTH: Final = 256
MAX_SIGNATURES: Final = 16

Scheme = Literal["standard", "github"]
SCHEMES: Final = ("standard", "github")


# ------------------------------------------------------------------ GitHub (body only)
def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """Constant-time check of an ``X-Hub-Signature-256`` header against ``body``."""
    if not header:
        return False
    expected = sign(secret, body).encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


# ------------------------------------------------------------------ Standard Webhooks
def generate_secret() -> str:
    """A new ``whsec_`` secret (32 random bytes): give it to the sender and the route."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def is_standard_secret(secret: str) -> bool:
    return secret.startswith(SECRET_PREFIX)


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; a clear error for anything else."""
    if not is_standard_secret(secret):
        raise ValueError("a Standard Webhooks secret starts with 'whsec_' followed by "
                         "base64 (make one with generate_secret())")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part of a Standard Webhooks secret after 'whsec_' is not "
                         "valid base64") from None
    if len(key) < 16:
        raise ValueError("a Standard Webhooks secret needs at least 16 bytes of key")
    return key


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``webhook-signature`` entry: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_headers(secret: str, body: bytes, *, msg_id: str | None = None,
                     timestamp: int | None = None) -> dict[str, str]:
    """The three headers a Standard Webhooks sender adds (for clients and tests)."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_standard(secret, msg_id, timestamp, body)}


class Refusal(Enum):
    """Why a Standard Webhooks request was refused (the HTTP answer follows from it)."""

    MISSING = "missing webhook-id, webhook-timestamp or webhook-signature"
    MALFORMED = "malformed webhook-id or webhook-timestamp"
    STALE = "webhook-timestamp outside the tolerance window"
    BAD_SIGNATURE = "no valid webhook-signature"
    REPLAY = "webhook-id already received (replay)"
    MEMORY_FULL = "webhook-timestamp older than the oldest remembered id (replay memory full)"


@dataclass(frozen=True, slots=True)
class Signed:
    """A request whose Standard Webhooks signature checked out."""

    msg_id: str
    timestamp: int


def verify_standard(key: bytes, headers: Mapping[str, str], body: bytes, *, now: float,
                    tolerance: float) -> Signed | Refusal:
    """Check id, timestamp (within ``tolerance`` of ``now``) and the signatures; any one
    valid ``v1`` signature is enough (senders list several while rotating secrets)."""
    msg_id = headers.get(ID_HEADER, "")
    stamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not msg_id or not stamp or not given:
        return Refusal.MISSING
    if (len(msg_id) > MAX_ID_LENGTH or not msg_id.isprintable() or not stamp.isascii()
            or not stamp.isdigit() or len(stamp) > 12):
        return Refusal.MALFORMED
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        return Refusal.STALE
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in given.split(" ")[:MAX_SIGNATURES]:
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(
                expected, value.encode("utf-8", "replace")):
            return Signed(msg_id, timestamp)
    return Refusal.BAD_SIGNATURE


class ReplayGuard:
    """The ids of accepted messages, remembered while their timestamp is in the window.

    Bounded by ``max_ids``: when full, the entry with the oldest timestamp is forgotten
    and that timestamp becomes a floor; from then on a message stamped at or below the
    floor is refused (:attr:`Refusal.MEMORY_FULL`), so forgetting an id never lets its
    replay through. A sender retries with a fresh timestamp, which passes.
    """

    def __init__(self, tolerance: float = DEFAULT_TOLERANCE,
                 max_ids: int = DEFAULT_MAX_REMEMBERED,
                 clock: Callable[[], float] = time.time) -> None:
        if tolerance <= 0 or max_ids < 1:
            raise ValueError("tolerance > 0 and max_ids >= 1 are required")
        self.tolerance = tolerance
        self.max_ids = max_ids
        self._clock = clock
        self._seen: dict[str, int] = {}
        self._by_time: list[tuple[int, str]] = []
        self._floor = -math.inf
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._seen)

    def reserve(self, signed: Signed) -> Refusal | None:
        """Remember ``signed.msg_id``; a :class:`Refusal` if it is a replay or too old.

        Synchronous, so two copies racing on one event loop cannot both pass.
        """
        self._expire(self._clock())
        if signed.msg_id in self._seen:
            return Refusal.REPLAY
        if signed.timestamp <= self._floor:
            return Refusal.MEMORY_FULL
        while len(self._seen) >= self.max_ids:
            stamp, oldest = heapq.heappop(self._by_time)
            if self._seen.get(oldest) == stamp:
                del self._seen[oldest]
                self._floor = max(self._floor, stamp)
                self.evicted += 1
        if signed.timestamp <= self._floor:
            return Refusal.MEMORY_FULL
        self._seen[signed.msg_id] = signed.timestamp
        heapq.heappush(self._by_time, (signed.timestamp, signed.msg_id))
        return None

    def release(self, signed: Signed) -> None:
        """Forget a reservation whose request was not accepted (the sender may retry)."""
        if self._seen.get(signed.msg_id) == signed.timestamp:
            del self._seen[signed.msg_id]
        if len(self._by_time) > 2 * self.max_ids:  # drop released entries' leftovers
            self._by_time = [(s, i) for s, i in self._by_time if self._seen.get(i) == s]
            heapq.heapify(self._by_time)

    def _expire(self, now: float) -> None:
        horizon = now - self.tolerance
        while self._by_time and self._by_time[0][0] < horizon:
            stamp, msg_id = heapq.heappop(self._by_time)
            if self._seen.get(msg_id) == stamp:
                del self._seen[msg_id]
