"""The host side of guest ports: the Linux bridge a port's tap device joins.

libvirt creates the tap device and plugs it into the bridge when the domain starts; the bridge itself must
exist. It normally belongs to the network service; on a host that is network node and compute at once the
compute may create it (``[compute] create_bridges``): a plain bridge, no address, up.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from services.compute.exceptions import BridgeUnavailable

__all__ = ["bridge_exists", "ensure_bridge"]

_SYS_NET = Path("/sys/class/net")
# What the kernel accepts as an interface name: at most 15 bytes, no '/', ':' or whitespace.
_VALID_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")


def bridge_exists(name: str) -> bool:
    return (_SYS_NET / name / "bridge").is_dir()


async def _ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise BridgeUnavailable(f"ip {' '.join(args)}: {stderr.decode(errors='replace').strip()}")


async def ensure_bridge(name: str, mtu: int | None = None) -> None:
    """Make sure bridge ``name`` exists and is up. Idempotent; safe against a concurrent creator.

    Raises ``BridgeUnavailable`` naming the bridge when it cannot be made.
    """
    if not _VALID_NAME.match(name):
        raise BridgeUnavailable(f"bridge {name!r}: not a valid interface name")
    if not bridge_exists(name):
        try:
            await _ip("link", "add", "name", name, "type", "bridge")
        except BridgeUnavailable as e:
            if not bridge_exists(name):  # someone else may have made it meanwhile
                raise BridgeUnavailable(f"bridge {name!r} could not be created: {e.message}") from e
    args = ["link", "set", "dev", name, *(["mtu", str(mtu)] if mtu else []), "up"]
    try:
        await _ip(*args)
    except BridgeUnavailable as e:
        raise BridgeUnavailable(f"bridge {name!r} could not be set up: {e.message}") from e
