"""Where a compute host keeps its files, derived once from the configuration."""

from __future__ import annotations

from pathlib import Path

from oslo_config import cfg

__all__ = ["image_cache_path", "instances_path", "virt_type_cache_file"]


def instances_path(conf: cfg.ConfigOpts) -> Path:
    """Per-instance directories (``<uuid>/disk``, ``<uuid>/console.log``)."""
    return Path(conf.compute.instances_path or Path(conf.state_path) / "instances")


def image_cache_path(conf: cfg.ConfigOpts) -> Path:
    """Verified images, one file per image id, used as qcow2 backing files."""
    return Path(conf.compute.image_cache_path or Path(conf.state_path) / "images")


def virt_type_cache_file(conf: cfg.ConfigOpts) -> Path:
    """The cached result of the ``virt_type=auto`` probe."""
    return Path(conf.state_path) / "compute" / "virt_type.json"
