"""``instances.list_`` filtered by OpenStack status on a real PostgreSQL: the SQL that ``views.status_states``
drives selects exactly the rows whose ``server_status`` (the API's Python mapping) is the one asked for, and the
page limit cuts after filtering (the API used to load every instance and filter in Python)."""

from __future__ import annotations

import itertools
import json

import asyncpg
import pytest

from common.db import instances
from services.api.compute.views import _STATUS, server_status, status_states

pytestmark = pytest.mark.functional

TASKS = [None, "scheduling", "spawning", "rebooting", "rebooting_hard", "powering-off", "deleting"]
STATUSES = sorted({s for by_task in _STATUS.values() for s in by_task.values()}) + ["UNKNOWN", "NONSENSE"]


async def test_status_filter_in_sql_matches_the_status_mapping(stratus_db):
    conn = await asyncpg.connect(stratus_db)
    try:
        pairs = list(itertools.product([*_STATUS, "shelved"], TASKS))
        for i, (vm_state, task_state) in enumerate(pairs):
            await conn.execute(
                "INSERT INTO instances (id, project_id, user_id, name, hostname, flavor_id, flavor, vm_state,"
                " task_state) VALUES ($1, 'p', 'u', $1, $1, '1', $2::jsonb, $3, $4)",
                f"i{i:03d}", json.dumps({}), vm_state, task_state,
            )  # fmt: skip
        expected: dict[str, set[str]] = {}
        for i, (vm_state, task_state) in enumerate(pairs):
            expected.setdefault(server_status(vm_state, task_state), set()).add(f"i{i:03d}")

        for status in STATUSES:
            rows = await instances.list_(conn, states=status_states([status.lower()]))
            want = expected.get(status, set()) if status != "UNKNOWN" else set()  # no vm_state makes UNKNOWN
            assert {r["id"] for r in rows} == want, status
        both = await instances.list_(conn, states=status_states(["REBOOT", "HARD_REBOOT"]))
        assert {r["id"] for r in both} == expected["REBOOT"] | expected["HARD_REBOOT"]
        assert len(expected["ACTIVE"]) > 2
        page = await instances.list_(conn, states=status_states(["ACTIVE"]), limit=2)
        assert len(page) == 2 and {r["id"] for r in page} <= expected["ACTIVE"]
    finally:
        await conn.close()
