"""The conductor gives back a deleted instance's claim on a real PostgreSQL, and the scheduler in its process sees
the room at once, without waiting for its periodic usage reload (a build placed right after a delete must not
see the freed host as full)."""

from __future__ import annotations

import json

import asyncpg
import pytest

from common.config import new_conf
from common.context import RequestContext
from common.db import compute_nodes
from common.db.pool import Database
from services.scheduler.conductor import ConductorManager
from services.scheduler.host_state import HostView

pytestmark = pytest.mark.functional


async def test_a_deleted_instance_frees_its_room_in_the_view_of_the_conductors_process(stratus_db):
    conn = await asyncpg.connect(stratus_db)
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    try:
        await compute_nodes.upsert_from_report(
            conn, {"host": "h0", "vcpus": 4, "memory_mb": 4096, "local_gb": 40, "ram_allocation_ratio": 1.0,
                   "reserved_host_memory_mb": 0},
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO instances (id, project_id, user_id, name, hostname, flavor_id, flavor, vm_state,"
            " task_state) VALUES ('i-1', 'p', 'u', 's', 's', 'f', '{}', 'building', 'scheduling')"
        )
        claimed = await compute_nodes.claim(conn, instance_id="i-1", host="h0", vcpus=2, memory_mb=3072, disk_gb=10)
        assert claimed is not None
        view = HostView(service_down_time=60)
        view.bootstrap([dict(r) for r in await compute_nodes.list_nodes(conn)])
        assert view.hosts["h0"].free_memory_mb == 1024
    finally:
        await conn.close()

    conf = new_conf()
    conf([], project="stratus", default_config_files=[])
    conf.set_override("connection", stratus_db, "database")
    db = await Database.connect(conf)
    try:
        # No scheduler API: instance_deleted casts nothing.
        conductor = ConductorManager(conf, db, scheduler=None, view=view)  # type: ignore[arg-type]
        await conductor.instance_deleted(RequestContext.admin(), instance_id="i-1", host="h0")
        h0 = view.hosts["h0"]
        assert (h0.vcpus_used, h0.memory_mb_used, h0.local_gb_used) == (0, 0, 0)
        assert h0.free_memory_mb == 4096
        # Deleted twice (a redelivery): nothing left to release, the view stays as it is.
        await conductor.instance_deleted(RequestContext.admin(), instance_id="i-1", host="h0")
        assert h0.free_memory_mb == 4096
    finally:
        await db.close()
