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


_REQUIRED = ["sub", "iat", "exp", "aud", "jti"]
_NOT_A_TOKEN = "The request you have made requires authentication."


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
            # To the microsecond: a revocation at time t refuses tokens issued before t, and a token issued
            # just after it, within the same second, must not be taken for one of them.
            "iat": round(now, 6),
            "exp": int(payload.expires_at),
            "aud": "stratus",
            "jti": payload.audit_id,
        }
        return jwt.encode(claims, self._secret, algorithm="HS256"), payload

    def verify(self, token: str) -> TokenPayload:
        """The token's payload; ``Unauthorized`` if it is forged, malformed (not ASCII, claims missing or of the
        wrong type) or expired."""
        if not token.isascii():
            raise exceptions.Unauthorized(_NOT_A_TOKEN)
        payload = self._verified(token)
        if payload.expires_at <= time.time():
            raise exceptions.Unauthorized("The token has expired.")
        return payload

    def _decode(self, token: str) -> TokenPayload:
        try:
            c = jwt.decode(
                token, self._secret, algorithms=["HS256"], audience="stratus", options={"require": _REQUIRED}
            )
        except jwt.ExpiredSignatureError:
            raise exceptions.Unauthorized("The token has expired.") from None
        except jwt.InvalidTokenError:
            raise exceptions.Unauthorized(_NOT_A_TOKEN) from None
        # A token signed with our key was made by us, but check its shape anyway: a key that leaked into a test
        # or an older release's token must give a 401, never a KeyError or TypeError deep in a handler.
        roles = c.get("roles", [])
        if not (
            all(isinstance(c.get(k), str) for k in ("sub", "un", "jti"))
            and all(isinstance(c.get(k), str | None) for k in ("pid", "pn"))
            and isinstance(roles, list)
            and all(isinstance(r, str) for r in roles)
            and all(isinstance(c[k], int | float) and not isinstance(c[k], bool) for k in ("iat", "exp"))
        ):
            raise exceptions.Unauthorized(_NOT_A_TOKEN)
        return TokenPayload(c["sub"], c["un"], c.get("pid"), c.get("pn"), tuple(roles), c["iat"], c["exp"], c["jti"])
