"""Errors the compute host raises to itself. Builds are casts, so these never cross RPC as classes: their
message becomes the ``reason`` of ``build_failed`` or the ``details`` of an action event. A call that must
tell its caller "no such instance here" raises ``common.exceptions.NotFound`` instead, which RPC rebuilds."""

from __future__ import annotations

from common.exceptions import StratusError

__all__ = [
    "BridgeUnavailable",
    "ComputeError",
    "DiskError",
    "ImageDownloadFailed",
    "ImageRejected",
    "RequestFault",
    "VirtError",
]


class ComputeError(StratusError):
    """Base of the compute host's own failures; the message says what failed and on which object."""


class RequestFault(ComputeError):
    """The build failed because of what the request asked for (its image, its flavor), not because of this host:
    another host would fail the same way, so the build is not rescheduled and the host is not blamed."""


class ImageRejected(RequestFault):
    """The image's data is not what may be given to QEMU (wrong format, a backing or data file, a checksum or size
    that does not match): the message names the image and the reason."""


class ImageDownloadFailed(ComputeError):
    """An image could not be put in the host cache: the message names the image id, the URL and why."""


class DiskError(ComputeError):
    """An instance disk could not be made (qemu-img failed, the flavor's disk is smaller than the image...)."""


class BridgeUnavailable(ComputeError):
    """A port's bridge is missing on this host and could not (or may not) be created."""


class VirtError(ComputeError):
    """The hypervisor refused an operation; the message carries libvirt's own words."""
