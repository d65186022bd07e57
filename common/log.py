"""Logging: every line says which request, host and service it belongs to."""

from __future__ import annotations

import logging
import sys

from oslo_config import cfg

from common import context

__all__ = ["setup"]

FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s [%(request_id)s %(host)s %(service)s] %(message)s"


class _ContextFilter(logging.Filter):
    def __init__(self, host: str, service: str) -> None:
        super().__init__()
        self.host = host
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = context.current()
        record.request_id = ctx.request_id if ctx else "-"
        record.host = self.host
        record.service = self.service
        return True


def setup(conf: cfg.ConfigOpts, service: str) -> None:
    """Configure the root logger once per process (stderr, or ``log_file``)."""
    handler: logging.Handler = (
        logging.FileHandler(conf.log_file) if conf.log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.addFilter(_ContextFilter(conf.host, service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if conf.debug else logging.INFO)
    for noisy in ("aio_pika", "aiormq", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
