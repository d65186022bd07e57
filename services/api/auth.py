"""Signed tokens: API nodes verify them with the shared key and keep no session state."""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from common import exceptions

__all__ = ["TokenSigner", "TokenPayload"]


@dataclass(frozen=True)
class TokenPayload:
    user_id: str
    user_name: str
    project_id: str | None
    project_name: str | None
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float
    audit_id: str


class TokenSigner:
    def __init__(self, secret: str, ttl: int) -> None:
        self._secret = secret
        self.ttl = ttl
        # Verified tokens (a signature check is most of an authenticated request's own cost): a token's payload
        # never changes, and expiry is checked on every use. Only valid tokens are kept.
        self._verified = functools.lru_cache(maxsize=4096)(self._decode)

    def issue(
        self, *, user_id: str, user_name: str, project_id: str | None, project_name: str | None, roles: list[str]
    ) -> tuple[str, TokenPayload]:
        now = time.time()
        payload = TokenPayload(
            user_id, user_name, project_id, project_name, tuple(roles), now, now + self.ttl, uuid.uuid4().hex[:22]
        )
        claims: dict[str, Any] = {
            "sub": user_id,
            "un": user_name,
            "pid": project_id,
            "pn": project_name,
            "roles": list(roles),
            "iat": int(now),
            "exp": int(payload.expires_at),
            "aud": "stratus",
            "jti": payload.audit_id,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256"), payload

    def verify(self, token: str) -> TokenPayload:
        """The token's payload; ``Unauthorized`` if it is forged, malformed or expired."""
        payload = self._verified(token)
        if payload.expires_at <= time.time():
            raise exceptions.Unauthorized("The token has expired.")
        return payload

    def _decode(self, token: str) -> TokenPayload:
        try:
            c = jwt.decode(token, self._secret, algorithms=["HS256"], audience="stratus")
        except jwt.ExpiredSignatureError:
            raise exceptions.Unauthorized("The token has expired.") from None
        except jwt.InvalidTokenError:
            raise exceptions.Unauthorized("The request you have made requires authentication.") from None
        return TokenPayload(
            c["sub"], c["un"], c.get("pid"), c.get("pn"), tuple(c.get("roles", ())), c["iat"], c["exp"], c["jti"]
        )
