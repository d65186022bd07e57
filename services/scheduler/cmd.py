"""``stratus-scheduler``: hosts the ``scheduler`` and ``conductor`` topics and listens to ``capacity`` reports."""

from __future__ import annotations

import asyncio
import logging

from oslo_config import cfg

from common import service
from common.context import RequestContext
from common.db import compute_nodes
from common.db.pool import Database
from common.rpc import Transport
from services.compute.rpcapi import ComputeAPI
from services.scheduler.conductor import ConductorManager
from services.scheduler.host_state import HostView
from services.scheduler.leader import ReportPersisterLock
from services.scheduler.manager import SchedulerManager
from services.scheduler.rpcapi import CAPACITY_EXCHANGE, ConductorAPI, SchedulerAPI

NAME = "stratus-scheduler"
LOG = logging.getLogger(__name__)


async def setup(conf: cfg.ConfigOpts, transport: Transport, svc: service.Service) -> None:
    db = await Database.connect(conf)
    svc.on_close(db.close)
    client = transport.client()
    scheduler_api = SchedulerAPI(client)
    view = HostView(conf.scheduler.service_down_time, conf.scheduler.build_failure_window)
    manager = SchedulerManager(conf, db, view, ComputeAPI(client), scheduler_api)
    await manager.start()
    await transport.serve_fanout(CAPACITY_EXCHANGE, manager)
    await transport.serve(ConductorAPI.TOPIC, ConductorManager(conf, db, scheduler_api, view))
    await transport.serve(SchedulerAPI.TOPIC, manager)

    async def heartbeat() -> None:
        while True:
            await db.run(
                lambda c: compute_nodes.upsert_service(
                    c, host=conf.host, binary=NAME, topic=SchedulerAPI.TOPIC, broker_node=transport.broker_node
                )
            )
            await asyncio.sleep(conf.compute.report_interval)

    RequestContext.admin().bind()
    svc.spawn(heartbeat(), "heartbeat")

    async def reload_aggregates() -> None:
        while True:
            await asyncio.sleep(conf.scheduler.aggregate_refresh_interval)
            try:
                await manager.refresh_aggregates(RequestContext.admin())
            except Exception as e:  # the database is away: keep the last view, retry next round
                LOG.warning("could not reload aggregates: %s", e)

    async def resync_usage() -> None:
        while True:
            await asyncio.sleep(conf.scheduler.usage_refresh_interval)
            try:
                await manager.resync_usage()
            except Exception as e:
                LOG.warning("could not reload host usage: %s", e)

    persister_lock = ReportPersisterLock(conf.database.connection)
    svc.on_close(persister_lock.close)

    async def persist_reports() -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                manager.persists_reports = await persister_lock.held()
                await manager.persist_reports()
            except Exception as e:
                LOG.warning("could not persist capacity reports (retrying): %s", e)

    svc.spawn(reload_aggregates(), "aggregate-refresher")
    svc.spawn(persist_reports(), "report-persister")
    svc.spawn(resync_usage(), "usage-resync")


def main() -> None:
    service.main(NAME, setup)


if __name__ == "__main__":
    main()
