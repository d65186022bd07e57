"""Config drives: the instance's metadata on an ISO 9660 volume labelled ``config-2`` (OpenStack's layout).

For guests on networks without a metadata service. The documents are the ones the metadata server serves
(``common.metadata``), built from what the compute has: the build message and the ports just allocated.
The image is made by ``genisoimage`` (Debian package genisoimage; ``xorriso -as mkisofs`` when only that is
installed) as an asyncio subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.metadata import ec2_metadata, instance_documents, ports_from_allocation
from services.compute.exceptions import DiskError

__all__ = ["FILE_NAME", "LABEL", "drive_files", "make_iso", "required"]

LABEL = "config-2"
FILE_NAME = "disk.config"  # in the instance directory, next to "disk"
OPENSTACK_VERSIONS = ("latest", "2012-08-10")
_TIMEOUT = 30.0


def required(instance: Mapping[str, Any], force: bool) -> bool:
    """Whether the guest gets a drive: asked for at boot, or forced by the host's ``[compute] force_config_drive``."""
    return bool(instance.get("config_drive")) or force


def drive_files(
    instance: Mapping[str, Any], ports: Sequence[Mapping[str, Any]], default_domain: str
) -> dict[str, bytes]:
    """The files of the drive (path in the volume → content) for ``instance`` (the wire dict) and its ports
    (``request_spec["ports"]``). Pure."""
    first = ports[0] if ports else {}
    entries = ports_from_allocation(ports)
    inst = {
        **instance,
        "dns_name": first.get("dns_name") or instance.get("hostname"),
        "ports": entries,
        "address": entries[0]["ip"] if entries else "",
        "mac_address": first.get("mac_address") or "",
    }
    domain = (first.get("dns_domain") or default_domain).rstrip(".")
    docs = instance_documents(inst, domain)
    files: dict[str, bytes] = {}
    for version in OPENSTACK_VERSIONS:
        base = f"openstack/{version}"
        files[f"{base}/meta_data.json"] = json.dumps(docs["meta_data"]).encode()
        files[f"{base}/network_data.json"] = json.dumps(docs["network_data"]).encode()
        files[f"{base}/vendor_data.json"] = b"{}"
        if docs["user_data"] is not None:
            files[f"{base}/user_data"] = docs["user_data"]
    files["ec2/latest/meta-data.json"] = json.dumps(ec2_metadata(inst, docs)).encode()
    if docs["user_data"] is not None:
        files["ec2/latest/user-data"] = docs["user_data"]
    return files


def _command(out: Path, src: Path) -> list[str]:
    tool = shutil.which("genisoimage") or shutil.which("mkisofs")
    # Nova's options: Rock Ridge and Joliet names (lower case, several dots), volume label config-2.
    options = ["-o", str(out), "-ldots", "-allow-lowercase", "-allow-multidot", "-l", "-publisher", "Stratus",
               "-quiet", "-J", "-r", "-V", LABEL, str(src)]  # fmt: skip
    if tool:
        return [tool, *options]
    xorriso = shutil.which("xorriso")
    if xorriso:
        return [xorriso, "-as", "mkisofs", *options]
    raise DiskError("no ISO 9660 tool: install genisoimage (devstack/tools/install-prereqs.sh)")


def _stage(src: Path, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


async def make_iso(out: Path, files: Mapping[str, bytes], timeout: float = _TIMEOUT) -> None:
    """Write the ISO 9660 image of ``files`` to ``out`` (atomically: a failed build leaves nothing at ``out``).

    Idempotent: an existing ``out`` is replaced. Raises ``DiskError`` naming the tool's complaint.
    """
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="stratus-configdrive-") as tmp:
        src = Path(tmp)
        await asyncio.to_thread(_stage, src, files)
        cmd = _command(tmp_out, src)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as e:
            raise DiskError(f"{cmd[0]} could not run: {e}") from e
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            tmp_out.unlink(missing_ok=True)
            raise DiskError(f"{Path(cmd[0]).name} took longer than {timeout:.0f}s making the config drive") from None
        if proc.returncode != 0:
            tmp_out.unlink(missing_ok=True)
            raise DiskError(
                f"{Path(cmd[0]).name} failed making the config drive: {stderr.decode(errors='replace').strip()}"
            )
    await asyncio.to_thread(os.replace, tmp_out, out)
