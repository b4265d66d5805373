"""The web view's access check: the receiver's bearer token, or a session cookie made
from it.

A browser cannot send an ``Authorization`` header on a link it follows, so the login form
exchanges the token for a cookie. The cookie holds an HMAC of the token, not the token, is
``HttpOnly`` and ``SameSite=Strict``, and ``Secure`` when the receiver speaks TLS; it stops
working when the token changes.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from starlette.requests import Request

from ..auth import bearer_matches

COOKIE_NAME: Final = "otel_agentbus_session"
_SESSION_LABEL: Final = b"otel-agentbus web session v1"


def session_value(token: str) -> str:
    return hmac.new(token.encode(), _SESSION_LABEL, hashlib.sha256).hexdigest()


class Access:
    """Who may read: everyone without a token; with one, its bearer or its cookie."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None
        self._session = None if self.token is None else session_value(self.token)

    @property
    def open(self) -> bool:
        return self.token is None

    def allows(self, request: Request) -> bool:
        if self.token is None:
            return True
        if bearer_matches(request.headers.get("authorization", ""), self.token):
            return True
        cookie = request.cookies.get(COOKIE_NAME, "")
        assert self._session is not None
        return hmac.compare_digest(cookie.encode(), self._session.encode())

    def login(self, offered: str) -> str | None:
        """The cookie value for a correct ``offered`` token, else ``None``."""
        if self.token is None or self._session is None:
            return None
        if hmac.compare_digest(offered.encode(), self.token.encode()):
            return self._session
        return None
