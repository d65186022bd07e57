"""Request context: who asks, and the request id that ties HTTP, RPC, logs and instance actions together."""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass, field
from typing import Any

from common import exceptions

__all__ = ["NEEDS_PROJECT", "RequestContext", "current", "generate_request_id"]

NEEDS_PROJECT = (
    "This request needs a project-scoped token: an unscoped token may only list the user's projects, inspect "
    "itself and get a scoped token."
)

_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("stratus_ctx", default=None)


def generate_request_id() -> str:
    return f"req-{uuid.uuid4()}"


@dataclass(frozen=True)
class RequestContext:
    """Immutable per-request identity. ``bind()`` makes it the one log lines of this task carry."""

    request_id: str = field(default_factory=generate_request_id)
    user_id: str | None = None
    project_id: str | None = None
    roles: tuple[str, ...] = ()
    user_name: str | None = None
    project_name: str | None = None

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def project(self) -> str:
        """The caller's project. ``Forbidden`` without one: code that acts for a project cannot run on an
        unscoped token (fail closed), whatever route it was reached by."""
        if not self.project_id:
            raise exceptions.Forbidden(NEEDS_PROJECT)
        return self.project_id

    @property
    def scope(self) -> str | None:
        """The project whose resources the caller sees: None for an admin (every project), else ``project``
        (so ``Forbidden`` without one). Never None for a caller that is not an admin."""
        return None if self.is_admin else self.project

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "user_id": self.user_id,
            "project_id": self.project_id,
            "roles": list(self.roles),
            "user_name": self.user_name,
            "project_name": self.project_name,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestContext:
        return cls(
            request_id=data.get("request_id") or generate_request_id(),
            user_id=data.get("user_id"),
            project_id=data.get("project_id"),
            roles=tuple(data.get("roles") or ()),
            user_name=data.get("user_name"),
            project_name=data.get("project_name"),
        )

    @classmethod
    def admin(cls, request_id: str | None = None) -> RequestContext:
        """A context for a service acting on its own behalf (periodic tasks, bootstrap)."""
        return cls(request_id=request_id or generate_request_id(), roles=("admin",))

    def bind(self) -> contextvars.Token:
        return _current.set(self)


def current() -> RequestContext | None:
    return _current.get()
