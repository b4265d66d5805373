"""Bearer-token check shared by the OTLP/gRPC and OTLP/HTTP endpoints."""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <token>``: one check, so both
    transports accept exactly the same credentials (compared in constant time)."""
    scheme, _, credentials = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    )
