"""Thin async wrappers over ``ip`` for the network node: bridges, namespaces, veth pairs, processes by pid file.

Every function is idempotent (asking for what exists, or removing what is gone, is not an error) and raises
``NetworkSetupError`` naming the object and the command's own complaint otherwise.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from common import exceptions

__all__ = [
    "NetworkSetupError",
    "bridge_exists",
    "delete_link",
    "delete_netns",
    "dhcp_release",
    "ensure_bridge",
    "ensure_netns",
    "ensure_veth",
    "netns_exists",
    "pid_alive",
    "run",
]

_SYS_NET = Path("/sys/class/net")


class NetworkSetupError(exceptions.StratusError):
    code = 500


async def run(*argv: str, check: bool = True) -> tuple[int, str]:
    """Run ``argv``; returns (exit code, stdout). ``check``: raise ``NetworkSetupError`` on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
    )
    out, err = await proc.communicate()
    if check and proc.returncode != 0:
        raise NetworkSetupError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
    return proc.returncode or 0, out.decode(errors="replace")


def bridge_exists(name: str) -> bool:
    return (_SYS_NET / name / "bridge").is_dir()


def bridge_members(name: str) -> list[str]:
    path = _SYS_NET / name / "brif"
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


async def ensure_bridge(name: str, mtu: int | None = None) -> None:
    """A plain bridge, up, with no address in the root namespace (guests' traffic never reaches the host)."""
    if not bridge_exists(name):
        code, _ = await run("ip", "link", "add", "name", name, "type", "bridge", check=False)
        if code != 0 and not bridge_exists(name):
            raise NetworkSetupError(f"bridge {name!r} could not be created")
    await run("ip", "link", "set", "dev", name, *(["mtu", str(mtu)] if mtu else []), "up")
    # No IPv6 link-local address either: the bridge is a switch, not a host interface.
    await run("sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1", check=False)


async def delete_link(name: str) -> None:
    if (_SYS_NET / name).exists():
        await run("ip", "link", "del", name, check=False)


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


async def ensure_netns(name: str) -> None:
    if not netns_exists(name):
        code, _ = await run("ip", "netns", "add", name, check=False)
        if code != 0 and not netns_exists(name):
            raise NetworkSetupError(f"namespace {name!r} could not be created")
    await run("ip", "-n", name, "link", "set", "lo", "up")


async def delete_netns(name: str) -> None:
    if netns_exists(name):
        await run("ip", "netns", "del", name, check=False)


async def ensure_veth(outer: str, inner: str, netns: str, bridge: str, mtu: int | None = None) -> None:
    """A veth pair: ``outer`` in the root namespace enslaved to ``bridge``, ``inner`` inside ``netns``; both up."""
    if not (_SYS_NET / outer).exists():
        await run("ip", "link", "add", outer, *(["mtu", str(mtu)] if mtu else []), "type", "veth",
                  "peer", "name", inner, "netns", netns)  # fmt: skip
    await run("sysctl", "-qw", f"net.ipv6.conf.{outer}.disable_ipv6=1", check=False)
    await run("ip", "link", "set", "dev", outer, "master", bridge, "up")
    await run("ip", "-n", netns, "link", "set", "dev", inner, "up")


async def dhcp_release(netns: str, dev: str, ip: str, mac: str) -> None:
    """Tell the dnsmasq serving ``dev`` in ``netns`` to drop its lease of ``ip`` for ``mac`` (``dhcp_release``
    from dnsmasq-utils sends it a DHCPRELEASE). No client id is sent: dnsmasq then matches the lease by hardware
    address alone, whether or not the client gave one. Harmless when there is no such lease; raises
    ``NetworkSetupError`` when the release cannot be sent (``dhcp_release`` missing, no such interface)."""
    await run("ip", "netns", "exec", netns, "dhcp_release", dev, ip, mac)


def pid_alive(pid_file: Path, needle: str) -> int | None:
    """The pid in ``pid_file`` when that process lives and its command line contains ``needle``; else None.

    The command-line check keeps a recycled pid from being mistaken for (and signalled as) our process.
    """
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if needle in cmdline else None


async def kill_pid_file(pid_file: Path, needle: str, timeout: float = 5.0) -> None:
    """SIGTERM the process of ``pid_file`` (if it is ours and alive), wait for it to go, SIGKILL after ``timeout``."""
    pid = pid_alive(pid_file, needle)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if pid_alive(pid_file, needle) is None:
                break
            await asyncio.sleep(0.002)
        else:
            os.kill(pid, signal.SIGKILL)
    _unlink(pid_file)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
