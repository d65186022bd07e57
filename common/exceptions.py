"""Errors that cross boundaries: HTTP (``code`` is the status) and RPC (sent by class name, rebuilt here).

Only classes defined in this module are rebuilt on the caller side of an RPC call; anything else arrives as
``RemoteError`` carrying the remote class name and message.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "QuotaExceeded",
    "RemoteError",
    "RpcTimeout",
    "ServiceUnavailable",
    "StratusError",
    "Unauthorized",
    "by_name",
]


class StratusError(Exception):
    code = 500
    title = "computeFault"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__


class BadRequest(StratusError):
    code = 400
    title = "badRequest"


class Unauthorized(StratusError):
    code = 401
    title = "unauthorized"


class Forbidden(StratusError):
    code = 403
    title = "forbidden"


class NotFound(StratusError):
    code = 404
    title = "itemNotFound"


class Conflict(StratusError):
    code = 409
    title = "conflictingRequest"


class QuotaExceeded(StratusError):
    code = 403
    title = "forbidden"


class ServiceUnavailable(StratusError):
    code = 503
    title = "serviceUnavailable"


class RpcTimeout(StratusError):
    code = 504
    title = "gatewayTimeout"


class RemoteError(StratusError):
    """A non-whitelisted exception raised by the remote side of a call."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type


class IpAddressExhausted(Conflict):
    pass


class ClaimFailed(Conflict):
    pass


class BuildFailed(StratusError):
    pass


_BY_NAME: dict[str, type[StratusError]] = {
    cls.__name__: cls
    for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, StratusError) and cls is not RemoteError
}


def by_name(name: str) -> type[StratusError] | None:
    """The whitelisted exception class called ``name``, if there is one."""
    return _BY_NAME.get(name)
